"""Run the test stages one after another and end with one line that sums them all.

    python tools/stages.py lint lint-imports docs unit sim-smoke proofs

Each argument is a stage: a make target (`make STAGE` runs it alone too), run as
`make --no-print-directory STAGE` with its output streamed as it comes. What a stage counts is
read from what it prints:

* pytest's closing line (`1234 passed, 5 skipped in 301.2s`, errors counted as failed);
* plain `N passed, M failed` lines (`smr sim`, `proofs/run.py`), all of them, added up;
* a stage that prints neither (ruff, import-linter, mkdocs) counts as 1 passed or 1 failed by
  its exit status; a stage that counted no failure but exited non-zero counts one more failed.

Every stage runs even after one failed (a lint error should not hide the unit tests' verdict);
`--stop-on-failure` stops at the first. The last line printed is the total,
`N passed, M failed`, and the exit status is 1 when anything failed, so CI can read either.

To add a stage: write a make target for it and add its name to `TEST_STAGES` in the Makefile.
If it prints a closing line in one of the forms above, its counts are summed; if not, its exit
status counts.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

# `12 passed, 0 failed`, alone on a line; one word and a colon may stand before it, and
# `, N skipped` may follow (the form CI reads in any language)
PLAIN = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$")
# pytest's closing line: `3 failed, 1200 passed, 2 skipped, 1 error in 12.34s (0:00:12)`,
# with or without the `=====` that surround it when it is not run with -q
PYTEST = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s\b.*$")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


@dataclass
class Count:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    counted: bool = False  # the stage printed a count

    def add(self, other: Count) -> None:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped


def parse(output: str) -> Count:
    """The counts a stage printed: every plain line, plus pytest's last closing line."""
    count = Count()
    pytest_line: str | None = None
    for raw in output.splitlines():
        line = raw.rsplit("\r", 1)[-1].strip()  # a progress bar's last state
        m = PLAIN.match(line)
        if m:
            count.passed += int(m[1])
            count.failed += int(m[2])
            count.skipped += int(m[3] or 0)
            count.counted = True
            continue
        if PYTEST.match(line):
            pytest_line = line
    if pytest_line is not None:
        count.counted = True
        for n, what in PYTEST_COUNT.findall(pytest_line):
            if what in ("passed", "xfailed"):
                count.passed += int(n)
            elif what == "skipped":
                count.skipped += int(n)
            else:  # failed, error(s), xpassed (an unexpected pass under strict xfail)
                count.failed += int(n)
    return count


def run_stage(make: str, stage: str) -> tuple[int, str]:
    """Run `make STAGE`, copying its output to ours as it comes; its exit status and output."""
    process = subprocess.Popen(
        [make, "--no-print-directory", stage],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    chunks: list[bytes] = []
    out = sys.stdout.buffer
    # chunks, not lines: pytest's progress dots show as they come
    while chunk := os.read(process.stdout.fileno(), 65536):
        chunks.append(chunk)
        out.write(chunk)
        out.flush()
    return process.wait(), b"".join(chunks).decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", help="make targets, run in this order")
    parser.add_argument(
        "--stop-on-failure", action="store_true", help="skip the stages after a failed one"
    )
    args = parser.parse_args(argv)
    make = os.environ.get("MAKE", "make")
    total = Count()
    rows: list[tuple[str, Count, int, float]] = []
    for stage in args.stages:
        print(f"\n=== stage {stage}: make {stage}", flush=True)
        started = time.monotonic()
        status, output = run_stage(make, stage)
        count = parse(output)
        if not count.counted:
            count.passed, count.failed = (1, 0) if status == 0 else (0, 1)
        elif status != 0 and count.failed == 0:
            count.failed = 1  # it counted no failure but failed all the same (a crash, a setup)
        elapsed_s = time.monotonic() - started
        rows.append((stage, count, status, elapsed_s))
        total.add(count)
        print(
            f"=== stage {stage}: {count.passed} passed, {count.failed} failed"
            f"{f', {count.skipped} skipped' if count.skipped else ''}"
            f" (exit {status}, {elapsed_s:.0f} s)",
            flush=True,
        )
        if args.stop_on_failure and count.failed:
            break
    print("\n=== stages")
    for stage, count, status, elapsed_s in rows:
        verdict = "ok" if count.failed == 0 else "FAILED"
        print(
            f"  {verdict:<7}{stage:<14}{count.passed:>7} passed {count.failed:>4} failed"
            f"{count.skipped:>4} skipped {elapsed_s:>6.0f} s  exit {status}"
        )
    skipped = [s for s in args.stages if s not in {r[0] for r in rows}]
    if skipped:
        print(f"  not run after the failure: {', '.join(skipped)}")
    print(f"{total.passed} passed, {total.failed} failed", flush=True)
    return 1 if total.failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
