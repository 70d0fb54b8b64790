#!/bin/sh
# Instructions per table operation, reference against native, counted by callgrind: each
# operation runs N times in one process, less a run with the same setup and no operation.
#   sh native/callgrind_table.sh [N]       (from the repository root, with the venv built)
set -e
N=${1:-2000}
PY=.venv/bin/python
count() {  # impl op n -> instructions executed by the whole process
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" native/bench_table.py \
        --impl "$1" --only "$2" -n "$3" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
}
base_py=$(count py get 0)
base_native=$(count native get 0)
printf '%-34s %10s %10s %6s\n' operation "python Ir" "native Ir" ratio
for op in get set vset "push(7 counters)" "push_bytes(10 slots)" "apply_write(counters, strict)" \
          "apply_write(10 slots, strict)" "_check()"; do
    py=$(( ($(count py "$op" "$N") - base_py) / N ))
    nat=$(( ($(count native "$op" "$N") - base_native) / N ))
    printf '%-34s %10d %10d %6s\n' "$op" "$py" "$nat" "$(echo "scale=1; $py / $nat" | bc)"
done
# `smr bench core`'s replay (apply each recorded write, evaluate the predicates, make the Ready)
# of M messages on each table, less the recording alone
M=${2:-20000}
replay() {  # table engine
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" native/bench_table.py \
        --replay "$1" --engine "${2:-python}" --messages "$M" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
}
base=$(replay none)
py=$(( ($(replay py) - base) / M ))
nat=$(( ($(replay native) - base) / M ))
printf '%-34s %10d %10d %6s\n' "bench core replay, per message" "$py" "$nat" "$(echo "scale=2; $py / $nat" | bc)"
# and with the streams' receive side native too (smr._native.Pending), on either table
for table in py native; do
    both=$(( ($(replay "$table" native) - base) / M ))
    printf '%-34s %10d %10d %6s\n' "  + native receive side ($table table)" "$py" "$both" \
        "$(echo "scale=2; $py / $both" | bc)"
done
