"""The native extension for the differential tests, or a test failure that says how to build it
(shared by tests/test_native_table.py and tests/test_native_pending.py)."""

from __future__ import annotations

from typing import Any

import pytest

try:
    from smr import _native
except ImportError as e:  # reported by every test that asks for it, never skipped
    _native = None
    _IMPORT_ERROR: ImportError | None = e
else:
    _IMPORT_ERROR = None


def native() -> Any:
    if _native is None:
        pytest.fail(
            f"the extension smr._native did not build or import ({_IMPORT_ERROR}); "
            "`make .venv/.installed-stamp` (or `pip install -e .`) builds it from native/"
        )
    return _native
