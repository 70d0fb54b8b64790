"""Golden transcripts of view-change scenarios: every table change, delivery and event, in order.

Each file in tests/transcripts/ is a script (lines starting with `> `, comments with `#`) with the
driver's output under each command. The test runs the commands and compares. After an intended
change of behaviour, regenerate with `SMR_REWRITE=1 pytest tests/test_transcripts.py` and read
the diff: it is the protocol's behaviour, line by line.
"""

import os
from pathlib import Path

import pytest

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
    assert len(FILES) >= 5
