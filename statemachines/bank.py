"""`Bank`: accounts and transfers. Money is conserved: the sum of balances always equals what was
deposited minus what was withdrawn (`check_conservation`). Refused operations return a reason
instead of raising, so every replica applies them identically."""

from __future__ import annotations

import msgspec

from smr.api import StateMachine, command, query

OK = "ok"
UNKNOWN_ACCOUNT = "unknown account"
ACCOUNT_EXISTS = "account exists"
NOT_POSITIVE = "amount must be positive"
INSUFFICIENT_FUNDS = "insufficient funds"

# The snapshot: sorted (name, balance) pairs, total deposited, total withdrawn.
_decode_state = msgspec.msgpack.Decoder(tuple[list[tuple[str, int]], int, int]).decode


class Bank(StateMachine):
    """Accounts by name with integer balances. Every command returns `OK` or the reason it
    was refused (and then changed nothing)."""

    def __init__(self) -> None:
        self.accounts: dict[str, int] = {}
        self.deposited = 0
        self.withdrawn = 0

    @command
    def open_account(self, name: str) -> str:
        """Open `name` with a zero balance."""
        if name in self.accounts:
            return ACCOUNT_EXISTS
        self.accounts[name] = 0
        return OK

    @command
    def deposit(self, name: str, amount: int) -> str:
        if name not in self.accounts:
            return UNKNOWN_ACCOUNT
        if amount <= 0:
            return NOT_POSITIVE
        self.accounts[name] += amount
        self.deposited += amount
        return OK

    @command
    def withdraw(self, name: str, amount: int) -> str:
        if name not in self.accounts:
            return UNKNOWN_ACCOUNT
        if amount <= 0:
            return NOT_POSITIVE
        if self.accounts[name] < amount:
            return INSUFFICIENT_FUNDS
        self.accounts[name] -= amount
        self.withdrawn += amount
        return OK

    @command
    def transfer(self, source: str, target: str, amount: int) -> str:
        """Move `amount` from `source` to `target` (the same account is allowed: a no-op)."""
        if source not in self.accounts or target not in self.accounts:
            return UNKNOWN_ACCOUNT
        if amount <= 0:
            return NOT_POSITIVE
        if self.accounts[source] < amount:
            return INSUFFICIENT_FUNDS
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
        """The invariant: balances sum to deposits minus withdrawals, and none is negative."""
        return sum(self.accounts.values()) == self.deposited - self.withdrawn and all(
            b >= 0 for b in self.accounts.values()
        )

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(
            (sorted(self.accounts.items()), self.deposited, self.withdrawn)
        )

    def restore(self, data: bytes) -> None:
        accounts, self.deposited, self.withdrawn = _decode_state(data)
        self.accounts = dict(accounts)
