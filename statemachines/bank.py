"""`Bank`: accounts and transfers. Money is conserved: the sum of balances always equals what was
deposited minus what was withdrawn (`check_conservation`). Refused operations return a reason
instead of raising, so every replica applies them identically."""

from __future__ import annotations

import msgspec

from smr.api import StateMachine, command, query

OK = "ok"


class Bank(StateMachine):
    def __init__(self) -> None:
        self.accounts: dict[str, int] = {}
        self.deposited = 0
        self.withdrawn = 0

    @command
    def open_account(self, name: str) -> str:
        if name in self.accounts:
            return "account exists"
        self.accounts[name] = 0
        return OK

    @command
    def deposit(self, name: str, amount: int) -> str:
        if name not in self.accounts:
            return "unknown account"
        if amount <= 0:
            return "amount must be positive"
        self.accounts[name] += amount
        self.deposited += amount
        return OK

    @command
    def withdraw(self, name: str, amount: int) -> str:
        if name not in self.accounts:
            return "unknown account"
        if amount <= 0:
            return "amount must be positive"
        if self.accounts[name] < amount:
            return "insufficient funds"
        self.accounts[name] -= amount
        self.withdrawn += amount
        return OK

    @command
    def transfer(self, source: str, target: str, amount: int) -> str:
        if source not in self.accounts or target not in self.accounts:
            return "unknown account"
        if amount <= 0:
            return "amount must be positive"
        if self.accounts[source] < amount:
            return "insufficient funds"
        self.accounts[source] -= amount
        self.accounts[target] += amount
        return OK

    @query
    def balance(self, name: str) -> int | None:
        return self.accounts.get(name)

    @query
    def total(self) -> int:
        return sum(self.accounts.values())

    def check_conservation(self) -> bool:
        return sum(self.accounts.values()) == self.deposited - self.withdrawn and all(
            b >= 0 for b in self.accounts.values()
        )

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(
            (sorted(self.accounts.items()), self.deposited, self.withdrawn)
        )

    def restore(self, data: bytes) -> None:
        accounts, self.deposited, self.withdrawn = msgspec.msgpack.decode(data)
        self.accounts = {k: v for k, v in accounts}
