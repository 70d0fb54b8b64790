#!/bin/sh
# Instructions per command of the three members (smr.runtime.node.Node on the simulator's
# network and disk, smr.bench.member_ir): 100 B BlobLog appends with every replica's result, N
# commands less N0, divided by N - N0, in ordered and durable mode. No sockets, no client library.
#   sh native/callgrind_member.sh [N] [N0]      (from the repository root, with the venv built)
set -e
N=${1:-20000}
N0=${2:-2000}
PY=.venv/bin/python
count() {  # mode commands -> instructions executed by the process
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" -m smr.bench.member_ir \
        --mode "$1" --commands "$2" 2>&1 | sed -n 's/.*Collected *: *//p' | tr -d ,
}
printf '%-12s %14s\n' mode "Ir per command"
for mode in ordered durable; do
    printf '%-12s %14d\n' "$mode" $(( ($(count "$mode" "$N") - $(count "$mode" "$N0")) / (N - N0) ))
done
