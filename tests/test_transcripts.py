"""Golden transcripts of view-change, join and state-transfer scenarios: every table change,
delivery and event, in order.

Each file in tests/transcripts/ is a script (lines starting with `> `, comments with `#`) with the
driver's output under each command. The test runs the commands and compares. After an intended
change of behaviour, regenerate with `SMR_REWRITE=1 pytest tests/test_transcripts.py` and read
the diff: it is the protocol's behaviour, line by line.
"""

import os
from pathlib import Path

import pytest

from smr.sim import transcript
from smr.sim.transcript import run_script

HERE = Path(__file__).parent / "transcripts"
FILES = sorted(HERE.glob("*.txt"))


def commands(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if line.startswith("> "):
            out.append(line[2:])
        elif line.startswith("#") or not line.strip():
            out.append(line)
    return out


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_transcript(path):
    text = path.read_text()
    produced = "\n".join(run_script(commands(text))) + "\n"
    if os.environ.get("SMR_REWRITE"):
        path.write_text(produced)
    assert produced == text


def test_there_are_transcripts():
    assert len(FILES) >= 13


def test_every_command_is_documented():
    doc = transcript.__doc__ or ""
    names = [n[4:].replace("_", "-") for n in dir(transcript.Transcript) if n.startswith("cmd_")]
    assert names
    for name in names:
        assert f"    {name} " in doc or f"/ {name} " in doc, f"{name} is not in the docstring"


def test_a_manual_member_waits_for_process_ready():
    t = transcript.Transcript()
    t.run("group 3 ordered")
    t.run("tick 5")
    t.run("stabilize")
    t.run("manual 3")
    t.run("submit 1 a")
    t.run("stabilize")
    assert t.replicas[3].has_ready()  # its inputs were taken, its Ready was not
    out = t.run("process-ready 3")
    assert out[0] == "3: Ready" and any("delivers a" in line for line in out)
    t.run("auto 3")
    assert not t.replicas[3].has_ready()


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="open: a leaving member is never a holder of state"
)
def test_a_leaving_only_holder_does_not_block_every_view():
    # leaving_only_holder_blocks.txt: 3 crashes while 4, the only other member of shard 1, leaves
    lines = commands((HERE / "leaving_only_holder_blocks.txt").read_text())
    out = run_script([*lines, "tick 25", "stabilize", "tick 25", "stabilize"])
    assert not any("view blocked" in line for line in out)
    assert any(line.startswith("1: installs view 2") for line in out)


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="open: without an install grace one crash stops all"
)
def test_a_joiner_ahead_of_the_survivors_does_not_halt_the_group():
    # leader_crash_after_admitting_a_joiner.txt without the runtime's install grace
    text = (HERE / "leader_crash_after_admitting_a_joiner.txt").read_text()
    lines = [c for c in commands(text) if not c.startswith(("config ", "submit 3 c"))]
    out = run_script(lines)
    assert not any("halts" in line for line in out)
