"""The core's wire vocabulary: the data-plane frame header, the registry of every frame kind, and
the one codec of little-endian int64 words that the control messages are made of.

This module owns what a data-plane frame looks like and how a word-coded message is read. Every
frame starts with `FRAME` (kind, shard index, a number, the epoch it belongs to); the kinds are
registered once here, with who owns them, so no two protocols can take the same number. The
control messages (view proposals, restart summaries and decisions, join requests, offers and
acceptances) are sequences of int64 words with length-prefixed lists; `WordReader` reads them,
and every way a peer can make one malformed (a length that is not a whole number of words, a
list longer than what is left, more words than `words_max`) is a `PeerProtocolError`, never an
`IndexError` or a `ValueError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from smr.core.errors import PeerProtocolError

FRAME = struct.Struct("<BHqI")  # kind, shard index, number, epoch
WORD = struct.Struct("<q")
WORD_BYTES = 8
WORDS_MAX = 1 << 16  # words in one control message: bounds what a peer can make us decode

# Frame kinds, by owner. The multicast's (smr.core.multicast):
FRAME_LARGE = 1  # body: a large message's payload; number: its index
FRAME_REPLY = 2  # body: a member's result; number: the version it answers
FRAME_BLOCK = 6  # body: BLOCK_HEADER, then one block of a large message; number: its index
FRAME_REPLIES = 7  # body: REPLY_ITEMs, each a version and a result; number: how many
# joins and state transfer (smr.core.transfer):
FRAME_JOIN_REQUEST = 3  # body: the joiner's card (number: its bytes), then its offer (may be empty)
FRAME_JOIN_OK = 4  # body: the members of the view the joiner enters, what it awaits, provides
FRAME_STATE = 5  # body: a shard's snapshot; shard: its index; number: its version
FRAME_JOIN_REFUSED = 8  # body: why (UTF-8); the joiner's id was removed from the group for good
# the restart after a total failure (smr.core.restart):
FRAME_RESTART_PREPARE = 16
FRAME_RESTART_PROMISE = 17  # body: the sender's summary
FRAME_RESTART_ACCEPT = 18  # body: the decision
FRAME_RESTART_ACCEPTED = 19
FRAME_RESTART_COMMIT = 20  # body: the decision
FRAME_RESTART_NEWER = 21  # body: the members of the view the sender is active in

FRAME_KINDS: dict[int, str] = {
    FRAME_LARGE: "large",
    FRAME_REPLY: "reply",
    FRAME_JOIN_REQUEST: "join-request",
    FRAME_JOIN_OK: "join-ok",
    FRAME_STATE: "state",
    FRAME_JOIN_REFUSED: "join-refused",
    FRAME_BLOCK: "block",
    FRAME_REPLIES: "replies",
    FRAME_RESTART_PREPARE: "restart-prepare",
    FRAME_RESTART_PROMISE: "restart-promise",
    FRAME_RESTART_ACCEPT: "restart-accept",
    FRAME_RESTART_ACCEPTED: "restart-accepted",
    FRAME_RESTART_COMMIT: "restart-commit",
    FRAME_RESTART_NEWER: "restart-newer",
}
RESTART_FRAMES = frozenset(range(FRAME_RESTART_PREPARE, FRAME_RESTART_NEWER + 1))
assert FRAME_KINDS.keys() >= RESTART_FRAMES


def frame_name(kind: int) -> str:
    """A frame kind's name, for logs and transcripts."""
    return FRAME_KINDS.get(kind, f"unknown-{kind}")


def pack_words(words: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(words)}q", *words)


def encode_members(members: Sequence[int]) -> bytes:
    """A length-prefixed list of member ids."""
    return pack_words((len(members), *members))


def decode_members(data: bytes) -> tuple[int, ...]:
    """A whole message that is one non-empty length-prefixed list."""
    if len(data) < WORD_BYTES or len(data) % WORD_BYTES:
        raise PeerProtocolError("a malformed member list")
    words = memoryview(data).cast("q")
    if words[0] != len(words) - 1 or words[0] < 1:
        raise PeerProtocolError("a malformed member list")
    return tuple(words[1:])


class WordReader:
    """Reads a word-coded message front to back. `what` names the message in errors. With
    `padded`, a trailing partial word is ignored (messages kept in fixed-size byte slots are
    padded with zeros); otherwise the length must be a whole number of words."""

    __slots__ = ("i", "what", "words")

    def __init__(self, data: bytes, what: str, *, words_max: int = WORDS_MAX, padded: bool = False):
        if padded:
            data = data[: len(data) - len(data) % WORD_BYTES]
        elif len(data) % WORD_BYTES:
            raise PeerProtocolError(f"a {what} of {len(data)} bytes")
        if len(data) > WORD_BYTES * words_max:
            raise PeerProtocolError(f"a {what} of {len(data)} bytes")
        self.what = what
        self.words = memoryview(bytes(data)).cast("q")
        self.i = 0

    def take(self, n: int = 1) -> tuple[int, ...]:
        if n < 0 or self.i + n > len(self.words):
            raise PeerProtocolError(f"a truncated {self.what}")
        out = tuple(self.words[self.i : self.i + n])
        self.i += n
        return out

    def one(self) -> int:
        return self.take(1)[0]

    def seq(self) -> tuple[int, ...]:
        """A length-prefixed list."""
        return self.take(self.one())

    def blob(self) -> bytes:
        """A length-prefixed list of words, as the bytes they were packed from."""
        return pack_words(self.seq())

    @property
    def left(self) -> int:
        return len(self.words) - self.i
