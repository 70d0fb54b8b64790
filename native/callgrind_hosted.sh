#!/bin/sh
# Instructions per command applied by a hosted shard (smr.runtime.hosted.Hosted.apply: the
# client envelope, the session table, the state machine's decode, apply and result), for 100 B
# BlobLog appends of one client, counted by callgrind: N applies less N0, divided by N - N0.
#   sh native/callgrind_hosted.sh [N] [N0]      (from the repository root, with the venv built)
set -e
N=${1:-20000}
N0=${2:-2000}
PY=.venv/bin/python
count() {  # applies -> instructions executed by the process
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" -c "
from smr.runtime.hosted import Hosted, wrap
from smr.statemachines import BlobLog
payloads = [wrap(3, i + 1, BlobLog.encode_command('append', b'x' * 100)) for i in range($N)]
h = Hosted(BlobLog())
for i in range($1):
    h.apply(payloads[i], i + 1, 7)
" 2>&1 | sed -n 's/.*Collected *: *//p' | tr -d ,
}
echo "Hosted.apply, Ir per command: $(( ($(count "$N") - $(count "$N0")) / (N - N0) ))"
