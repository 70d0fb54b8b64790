"""Each example state machine against a plain in-memory model, driven only through the public
path replicas use (`encode_command` / `apply`, `encode_query` / `run_query`), with snapshots
restored into fresh replicas along the way."""

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from smr.api import Entry
from smr.statemachines import Bank, Counter, KVStore, Queue

KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.binary(max_size=6)
SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None)


class _Driven(RuleBasedStateMachine):
    cls = None

    def __init__(self):
        super().__init__()
        self.sm = self.cls()
        self.sm.check_queries = True
        self.version = 0

    def do(self, op, *args):
        self.version += 1
        return self.sm.apply(self.cls.encode_command(op, *args), Entry(self.version, self.version))

    def ask(self, op, *args):
        return self.sm.run_query(self.cls.encode_query(op, *args))

    @rule()
    def snapshot_round_trip(self):
        copy = self.cls()
        copy.restore(self.sm.snapshot())
        assert copy.digest() == self.sm.digest()
        copy.check_queries = True
        self.sm = copy


class KVMachine(_Driven):
    cls = KVStore

    def __init__(self):
        super().__init__()
        self.model = {}
        self.at = []  # (version, dict copy)

    def after(self):
        self.at.append((self.version, dict(self.model)))

    @rule(key=KEYS, value=VALUES)
    def put(self, key, value):
        assert self.do("put", key, value) == self.model.get(key)
        self.model[key] = value
        self.after()

    @rule(key=KEYS)
    def delete(self, key):
        assert self.do("delete", key) == (key in self.model)
        self.model.pop(key, None)
        self.after()

    @rule(key=KEYS, expected=st.none() | VALUES, value=VALUES)
    def cas(self, key, expected, value):
        ok = self.model.get(key) == expected
        assert self.do("compare_and_set", key, expected, value) == ok
        if ok:
            self.model[key] = value
        self.after()

    @rule(key=KEYS, suffix=VALUES)
    def append(self, key, suffix):
        self.model[key] = self.model.get(key, b"") + suffix
        assert self.do("append", key, suffix) == len(self.model[key])
        self.after()

    @rule(key=KEYS, data=st.data())
    def get_at_version(self, key, data):
        if not self.at:
            return
        version, snapshot = data.draw(st.sampled_from(self.at))
        assert self.ask("get_at_version", key, version) == snapshot.get(key)

    @invariant()
    def same_as_model(self):
        for key in ["a", "b", "c"]:
            assert self.ask("get", key) == self.model.get(key)
        assert self.ask("keys") == sorted(self.model)


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
        assert self.ask("get") == self.model


class BankMachine(_Driven):
    cls = Bank

    def __init__(self):
        super().__init__()
        self.model = {}

    @rule(name=KEYS)
    def open_account(self, name):
        expected = "account exists" if name in self.model else "ok"
        assert self.do("open_account", name) == expected
        self.model.setdefault(name, 0)

    @rule(name=KEYS, amount=st.integers(-5, 50))
    def deposit(self, name, amount):
        result = self.do("deposit", name, amount)
        if name in self.model and amount > 0:
            assert result == "ok"
            self.model[name] += amount
        else:
            assert result != "ok"

    @rule(name=KEYS, amount=st.integers(1, 50))
    def withdraw(self, name, amount):
        result = self.do("withdraw", name, amount)
        if name in self.model and self.model[name] >= amount:
            assert result == "ok"
            self.model[name] -= amount
        else:
            assert result != "ok"

    @rule(a=KEYS, b=KEYS, amount=st.integers(1, 50))
    def transfer(self, a, b, amount):
        result = self.do("transfer", a, b, amount)
        if a in self.model and b in self.model and self.model[a] >= amount:
            assert result == "ok"
            self.model[a] -= amount
            self.model[b] += amount
        else:
            assert result != "ok"

    @invariant()
    def conserved(self):
        assert self.sm.check_conservation()
        assert self.ask("total") == sum(self.model.values())
        for name in ["a", "b", "c"]:
            assert self.ask("balance", name) == self.model.get(name)


class QueueMachine(_Driven):
    cls = Queue

    def __init__(self):
        super().__init__()
        self.model = deque()

    @rule(item=VALUES)
    def enqueue(self, item):
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


TestKV = KVMachine.TestCase
TestCounter = CounterMachine.TestCase
TestBank = BankMachine.TestCase
TestQueue = QueueMachine.TestCase
for case in (TestKV, TestCounter, TestBank, TestQueue):
    case.settings = SETTINGS
