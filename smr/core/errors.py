"""Error types of the protocol core, by blame (as h11 does).

`PeerProtocolError`: a peer sent something the protocol forbids (a write outside its row, a
counter moved backwards, a malformed frame); the caller may drop the peer. `UsageError`: the
application called the core wrongly (unknown shard, a payload too large, submitting while not a
sender). Our own bugs are `AssertionError`s.
"""


class SmrError(Exception):
    """Base of every error the toolkit raises on purpose."""


class PeerProtocolError(SmrError):
    """A peer broke the protocol."""


class UsageError(SmrError):
    """The caller used the core wrongly; the message says how to fix it."""


class LayoutError(UsageError):
    """A group layout the current view cannot provision, or an inconsistent layout."""


class WindowFullError(SmrError):
    """A submit could not enter the send window before its timeout."""
