"""Each example state machine against a plain in-memory model, driven only through the public
path replicas use (`encode_command` / `apply`, `encode_query` / `run_query`, results through
`encode_result` / `decode_result`), with snapshots restored into fresh replicas along the way."""

from collections import deque

import crc32c
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smr.api import Entry
from smr.statemachines import Bank, BlobLog, Counter, KVStore, Queue
from smr.statemachines.bank import INSUFFICIENT_FUNDS, OK, UNKNOWN_ACCOUNT

NAMES = ["a", "b", "c"]
KEYS = st.sampled_from(NAMES)
VALUES = st.binary(max_size=6)
SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None)


class _Driven(RuleBasedStateMachine):
    cls: type = object

    def __init__(self):
        super().__init__()
        self.sm = self.cls()
        self.sm.check_queries = True  # every query below also proves it changed nothing
        self.epoch, self.seq = 1, 0

    @property
    def version(self) -> int:
        return (self.epoch << 32) | self.seq

    def do(self, op, *args):
        """Apply a command as a replica does and return its result as the caller sees it."""
        self.seq += 1
        entry = Entry(self.version, 1_000 * self.version)
        result = self.sm.apply(self.cls.encode_command(op, *args), entry)
        return self.cls.decode_result(self.cls.encode_result(result), op)

    def ask(self, op, *args):
        result = self.sm.run_query(self.cls.encode_query(op, *args))
        return self.cls.decode_result(self.cls.encode_result(result), op)

    @rule()
    def new_epoch(self):
        self.epoch, self.seq = self.epoch + 1, 0

    @rule()
    def snapshot_round_trip(self):
        # A member restored from a snapshot (state transfer) continues as the live one would.
        data = self.sm.snapshot()
        copy = self.cls()
        copy.restore(data)
        assert copy.snapshot() == data
        assert copy.digest() == self.sm.digest()
        copy.check_queries = True
        self.sm = copy


class KVMachine(_Driven):
    class cls(KVStore):  # a small history, so trimming happens within a run
        history_max = 3

    def __init__(self):
        super().__init__()
        self.model = {}
        self.changes = {key: [] for key in NAMES}  # every change ever: (version, value)
        self.at = []  # (version, copy of the model after that version)
        self.trimmed_to = 0

    def after(self, key=None):
        if key is not None:
            self.changes[key].append((self.version, self.model.get(key)))
        self.at.append((self.version, dict(self.model)))

    @rule(key=KEYS, value=VALUES)
    def put(self, key, value):
        assert self.do("put", key, value) == self.model.get(key)
        self.model[key] = value
        self.after(key)

    @rule(key=KEYS)
    def delete(self, key):
        present = key in self.model
        assert self.do("delete", key) == present
        self.model.pop(key, None)
        self.after(key if present else None)

    @rule(key=KEYS, expected=st.none() | VALUES, value=VALUES)
    def cas(self, key, expected, value):
        ok = self.model.get(key) == expected
        assert self.do("compare_and_set", key, expected, value) == ok
        if ok:
            self.model[key] = value
        self.after(key if ok else None)

    @rule(key=KEYS, suffix=VALUES)
    def append(self, key, suffix):
        self.model[key] = self.model.get(key, b"") + suffix
        assert self.do("append", key, suffix) == len(self.model[key])
        self.after(key)

    @precondition(lambda self: self.at)
    @rule(data=st.data())
    def trim_history(self, data):
        version, _ = data.draw(st.sampled_from(self.at))
        self.do("trim_history", version)
        self.trimmed_to = max(self.trimmed_to, version)
        self.after()

    @precondition(lambda self: self.at)
    @rule(key=KEYS, data=st.data())
    def get_at_version(self, key, data):
        version, state = data.draw(st.sampled_from(self.at))
        try:
            value = self.ask("get_at_version", key, version)
        except LookupError:
            # Refused only where the history was trimmed: before the trim point, or before
            # the oldest of the key's last `history_max` changes.
            changes = self.changes[key]
            h = self.cls.history_max
            kept_from = changes[-h][0] if len(changes) > h else 0
            assert version < max(self.trimmed_to, kept_from)
        else:
            assert value == state.get(key)

    @invariant()
    def same_as_model(self):
        for key in NAMES:
            assert self.ask("get", key) == self.model.get(key)
            # The present is never trimmed away.
            assert self.ask("get_at_version", key, self.version) == self.model.get(key)
        assert self.ask("keys") == sorted(self.model)
        assert self.ask("size") == len(self.model)
        assert all(len(h) <= self.cls.history_max for h in self.sm.history.values())


class CounterMachine(_Driven):
    cls = Counter
    model = 0

    @rule(delta=st.integers(-100, 100))
    def add(self, delta):
        self.model += delta
        assert self.do("add", delta) == self.model

    @rule()
    def reset(self):
        assert self.do("reset") == self.model
        self.model = 0

    @invariant()
    def same(self):
        assert self.ask("value") == self.model
        assert self.ask("get") == self.model


class BankMachine(_Driven):
    cls = Bank

    def __init__(self):
        super().__init__()
        self.model = {}
        self.deposited = self.withdrawn = 0

    @rule(name=KEYS)
    def open_account(self, name):
        expected = "account exists" if name in self.model else OK
        assert self.do("open_account", name) == expected
        self.model.setdefault(name, 0)

    @rule(name=KEYS, amount=st.integers(-5, 50))
    def deposit(self, name, amount):
        result = self.do("deposit", name, amount)
        if name not in self.model:
            assert result == UNKNOWN_ACCOUNT
        elif amount <= 0:
            assert result == "amount must be positive"
        else:
            assert result == OK
            self.model[name] += amount
            self.deposited += amount

    @rule(name=KEYS, amount=st.integers(1, 50))
    def withdraw(self, name, amount):
        result = self.do("withdraw", name, amount)
        if name not in self.model:
            assert result == UNKNOWN_ACCOUNT
        elif self.model[name] < amount:
            assert result == INSUFFICIENT_FUNDS
        else:
            assert result == OK
            self.model[name] -= amount
            self.withdrawn += amount

    @rule(a=KEYS, b=KEYS, amount=st.integers(1, 50))
    def transfer(self, a, b, amount):
        result = self.do("transfer", a, b, amount)
        if a not in self.model or b not in self.model:
            assert result == UNKNOWN_ACCOUNT
        elif self.model[a] < amount:
            assert result == INSUFFICIENT_FUNDS
        else:
            assert result == OK
            self.model[a] -= amount
            self.model[b] += amount

    @invariant()
    def conserved(self):
        assert self.sm.check_conservation()
        assert self.ask("total") == sum(self.model.values()) == self.deposited - self.withdrawn
        for name in NAMES:
            assert self.ask("balance", name) == self.model.get(name)


class QueueMachine(_Driven):
    class cls(Queue):  # small, so runs reach the bound
        items_max = 4

    def __init__(self):
        super().__init__()
        self.model = deque()

    @rule(item=VALUES)
    def enqueue(self, item):
        if len(self.model) == self.cls.items_max:
            assert self.do("enqueue", item) == 0
            return
        self.model.append(item)
        assert self.do("enqueue", item) == len(self.model)

    @rule()
    def dequeue(self):
        expected = self.model.popleft() if self.model else None
        assert self.do("dequeue") == expected

    @invariant()
    def same(self):
        assert self.ask("size") == len(self.model)
        assert self.ask("peek") == (self.model[0] if self.model else None)


class BlobMachine(_Driven):
    cls = BlobLog

    def __init__(self):
        super().__init__()
        self.model = []  # every payload, which BlobLog itself never keeps

    @rule(data=st.binary(max_size=64))
    def append(self, data):
        self.model.append(data)
        assert self.do("append", data) == len(self.model)

    @invariant()
    def same(self):
        # The chained checksum equals one CRC-32C over the concatenation in append order.
        whole = b"".join(self.model)
        assert self.ask("stats") == (len(self.model), len(whole), crc32c.crc32c(whole))


def test_blob_log_summary_depends_on_order_and_stays_small():
    forward, backward = BlobLog(), BlobLog()
    payloads = [b"a" * 100, b"b" * (1 << 20)]
    entry = Entry(1, 1)
    for data in payloads:
        forward.apply(BlobLog.encode_command("append", data), entry)
    for data in reversed(payloads):
        backward.apply(BlobLog.encode_command("append", data), entry)
    assert forward.count == backward.count == 2
    assert forward.total_bytes == backward.total_bytes == 100 + (1 << 20)
    assert forward.digest() != backward.digest()  # same multiset, different order
    assert len(forward.snapshot()) < 32  # a 1 MiB append leaves only the summary behind


TestKV = KVMachine.TestCase
TestCounter = CounterMachine.TestCase
TestBank = BankMachine.TestCase
TestQueue = QueueMachine.TestCase
TestBlob = BlobMachine.TestCase
for case in (TestKV, TestCounter, TestBank, TestQueue, TestBlob):
    case.settings = SETTINGS


def _apply_all(machine, commands):
    for version, (op, *args) in enumerate(commands, start=1):
        machine.apply(type(machine).encode_command(op, *args), Entry(version, version))
    return machine


def test_snapshots_do_not_depend_on_insertion_order():
    one = _apply_all(Bank(), [("open_account", "x"), ("open_account", "y")])
    other = _apply_all(Bank(), [("open_account", "y"), ("open_account", "x")])
    assert list(one.accounts) != list(other.accounts)
    assert one.snapshot() == other.snapshot()
    kv = _apply_all(KVStore(), [("put", "y", b"1"), ("put", "x", b"2"), ("delete", "y")])
    restored = KVStore()
    restored.restore(kv.snapshot())
    assert restored.digest() == kv.digest()


def test_bank_conservation_catches_money_from_nowhere():
    bank = _apply_all(Bank(), [("open_account", "x"), ("deposit", "x", 10)])
    assert bank.check_conservation()
    bank.accounts["x"] += 1  # what a buggy command would do
    assert not bank.check_conservation()


def test_kv_history_reads_and_trimming():
    kv = _apply_all(
        KVStore(), [("put", "k", b"1"), ("put", "k", b"2"), ("delete", "k"), ("put", "j", b"j")]
    )
    at = [kv.run_query(KVStore.encode_query("get_at_version", "k", v)) for v in range(5)]
    assert at == [None, b"1", b"2", None, None]
    assert kv.apply(KVStore.encode_command("trim_history", 2), Entry(5, 5)) == 1
    assert kv.run_query(KVStore.encode_query("get_at_version", "k", 2)) == b"2"
    with pytest.raises(LookupError, match="before version 0x2 was trimmed"):
        kv.run_query(KVStore.encode_query("get_at_version", "k", 1))
    # Once the key's last change (a delete) is before the trim point, its history goes.
    kv.apply(KVStore.encode_command("trim_history", 4), Entry(6, 6))
    assert "k" not in kv.history
    assert kv.run_query(KVStore.encode_query("get_at_version", "k", 4)) is None
    assert kv.run_query(KVStore.encode_query("get_at_version", "j", 4)) == b"j"
