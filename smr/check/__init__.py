"""`smr.check`: is a client history linearizable?

This package owns checking what clients saw against a sequential specification, for the tests
and for anyone keeping a failing history: the history model and its recorder (`History`,
`Operation`), the models (`Model` and those of a register and of the example state machines),
the search (`check`, Wing and Gong's with Lowe's memoisation, per-key partitioned), and the
picture of a violation (`render_html`). It depends on the standard library only, so it can
judge the histories of any system, and nothing in the protocol depends on it.

```python
from smr.check import History, check

history = History()
h = history.invoke("client-1", "put", "a", b"1")
h.ok(None)
result = check(history, "kv")
assert result.ok, result.summary()
```
"""

from smr.check.history import FAIL, OK, UNKNOWN, Handle, History, HistoryError, Operation
from smr.check.models import (
    ANY,
    MODELS,
    BankModel,
    CounterModel,
    KVModel,
    Model,
    ModelError,
    QueueModel,
    RegisterModel,
    model_named,
)
from smr.check.render import render_html
from smr.check.search import CheckResult, PartitionResult, check

__all__ = [
    "ANY",
    "FAIL",
    "MODELS",
    "OK",
    "UNKNOWN",
    "BankModel",
    "CheckResult",
    "CounterModel",
    "Handle",
    "History",
    "HistoryError",
    "KVModel",
    "Model",
    "ModelError",
    "Operation",
    "PartitionResult",
    "QueueModel",
    "RegisterModel",
    "check",
    "model_named",
    "render_html",
]
