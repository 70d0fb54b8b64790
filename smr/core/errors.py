"""Error types of the protocol core, by blame (as h11 does).

`PeerProtocolError`: a peer sent something the protocol forbids (a write outside its row, a
counter moved backwards, a malformed frame). It never leaves the replica: the input is dropped,
the peer suspected and a `PeerMisbehaved` event says so (`smr.core.replica`). `UsageError`: the
application called the core wrongly (unknown shard, a payload too large, submitting while not a
sender). Our own bugs are `AssertionError`s.
"""


class SmrError(Exception):
    """Base of every error the toolkit raises on purpose."""


class PeerProtocolError(SmrError):
    """A peer broke the protocol. `peer` names it where the raiser knows (a slot read from a
    sender's row); the replica's input methods know the source of what they decode."""

    def __init__(self, message: str, peer: int | None = None):
        super().__init__(message)
        self.peer = peer


class UsageError(SmrError):
    """The caller used the core wrongly; the message says how to fix it."""


class LayoutError(UsageError):
    """A group layout the current view cannot provision, or an inconsistent layout."""


class WindowFullError(SmrError):
    """A submit could not enter the send window before its timeout."""
