"""The bench client process: `python -m smr.bench.client SPEC_JSON` measures one workload
against one running system and prints its figures as one JSON line. SPEC_JSON has `target`
(see `adapters.open_submitter`), `payload_bytes`, `window`, `duration_s`, `warmup_s` and
optionally `count_max` and `stamp` (payloads carry their submission time, for a watcher);
a target with `"submit": "many"` refills the window through `submit_many`. It
runs apart from the system's processes so client work never shares their interpreter."""

from __future__ import annotations

import json
import sys

from smr.bench.adapters import open_pipelined, open_submitter
from smr.bench.harness import drive, samples_max


def run(spec: dict) -> dict:
    target = spec["target"]
    submit, many = None, None
    if target.get("submit") == "many" and not target.get("reads"):
        many, close = open_pipelined(target)
    else:
        submit, close = open_submitter(target)
    try:
        return drive(
            submit,
            int(spec["payload_bytes"]),
            int(spec["window"]),
            float(spec["duration_s"]),
            float(spec.get("warmup_s", 0.5)),
            int(spec.get("count_max", samples_max)),
            stamp=bool(spec.get("stamp", False)),
            submit_many=many,
        )
    finally:
        close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m smr.bench.client SPEC_JSON", file=sys.stderr)
        return 2
    print(json.dumps(run(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
