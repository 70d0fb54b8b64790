"""tools/stages.py, the runner behind `make test`: what it reads from each stage's output."""

import importlib.util
import pathlib
import sys

_path = pathlib.Path(__file__).resolve().parent.parent / "tools" / "stages.py"
_spec = importlib.util.spec_from_file_location("stages", _path)
assert _spec is not None and _spec.loader is not None
stages = importlib.util.module_from_spec(_spec)
sys.modules["stages"] = stages  # dataclasses look their module up
_spec.loader.exec_module(stages)


def test_pytest_closing_line():
    c = stages.parse("....F.\n1 failed, 1200 passed, 3 skipped, 2 errors, 4 warnings in 12.34s\n")
    assert (c.passed, c.failed, c.skipped, c.counted) == (1200, 3, 3, True)


def test_pytest_closing_line_with_rules_and_duration():
    c = stages.parse("===== 7 passed, 1 xfailed in 301.20s (0:05:01) =====\n")
    assert (c.passed, c.failed) == (8, 0)


def test_plain_lines_add_up():
    out = "seed 1: ok\n500 passed, 0 failed\nnoise\n20 passed, 2 failed\nsim: 1 passed, 0 failed\n"
    c = stages.parse(out)
    assert (c.passed, c.failed, c.counted) == (521, 2, True)


def test_plain_line_with_skipped_and_progress_bar():
    c = stages.parse("run 1/3\rrun 3/3\r4 passed, 1 failed, 2 skipped\n")
    assert (c.passed, c.failed, c.skipped) == (4, 1, 2)


def test_no_count():
    c = stages.parse("All checks passed!\nContracts: 2 kept, 0 broken.\n")
    assert not c.counted


def test_a_sentence_is_not_a_count():
    assert not stages.parse("we saw 3 passed, 0 failed yesterday\n").counted
