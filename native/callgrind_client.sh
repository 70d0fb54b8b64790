#!/bin/sh
# Instructions per command of the threaded client (smr.client) against a stand-in member that
# answers at once (smr.bench.client_ir), counted by callgrind in the client process only: N
# commands less N0, divided by N - N0, for a submit per command and for submit_many.
#   sh native/callgrind_client.sh [N] [N0]      (from the repository root, with the venv built)
set -e
N=${1:-20000}
N0=${2:-2000}
PY=.venv/bin/python
count() {  # submit commands -> instructions executed by the client process
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" -m smr.bench.client_ir client \
        --submit "$1" --commands "$2" 2>&1 | sed -n 's/.*Collected *: *//p' | tr -d ,
}
printf '%-12s %14s\n' submit "Ir per command"
for submit in one many; do
    printf '%-12s %14d\n' "$submit" $(( ($(count "$submit" "$N") - $(count "$submit" "$N0")) / (N - N0) ))
done
