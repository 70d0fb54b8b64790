"""A member's contact card: the addresses it gives the group when it joins.

This module owns the bytes of a card. The core carries each member's card opaquely in the view's
roster (`smr.core.views.Roster`, at most `CARD_BYTES_MAX` = 128 bytes a card), logged with the view
at every member and handed to joiners and restarts, so a member that is in no configuration file
is still known, by address, to every member of every later view, and to the clients that ask one
(`Node.status`). The node gives its card to its replica (`Replica(..., card=)`) and, on each view,
adds the cards' addresses to its transport and its address book.

A card is one format byte (`CARD_FORMAT`), then a MessagePack array `[host, port, client_port,
metrics_port or nil]`. A host of at most `HOST_BYTES_MAX` bytes (UTF-8) always fits; the
configuration refuses a longer one. Decoding refuses anything else, a format it does not know
included, with a `CardError` that names the member: a peer's bad card is reported and skipped,
never trusted (the member it describes stays reachable by the configuration, if listed there).
"""

from __future__ import annotations

import msgspec

from smr.core.views import CARD_BYTES_MAX
from smr.runtime.config import HOST_BYTES_MAX, MemberConfig

CARD_FORMAT = 1

# the largest encoding beside the host: the format byte, an array header, a str8 header and
# three uint16 ports
assert 1 + 1 + 2 + HOST_BYTES_MAX + 3 * 3 <= CARD_BYTES_MAX, "a card of the longest host fits"

_Card = tuple[str, int, int, int | None]
_decoder = msgspec.msgpack.Decoder(_Card)


class CardError(ValueError):
    """A contact card that is not one this module wrote; the message names the member."""


def encode_card(member: MemberConfig) -> bytes:
    """The card of `member` (its host and ports; the id travels beside it in the roster)."""
    card = bytes((CARD_FORMAT,)) + msgspec.msgpack.encode(
        (member.host, member.port, member.client_port, member.metrics_port)
    )
    assert len(card) <= CARD_BYTES_MAX, "the configuration bounds a host's length"
    return card


def decode_card(member: int, data: bytes) -> MemberConfig:
    """The addresses in member `member`'s card; `CardError` if `data` is not a card."""
    if len(data) > CARD_BYTES_MAX:
        raise CardError(
            f"member {member}'s contact card is {len(data)} bytes, more than {CARD_BYTES_MAX}"
        )
    if not data:
        raise CardError(f"member {member} gave no contact card (an empty one)")
    if data[0] != CARD_FORMAT:
        raise CardError(
            f"member {member}'s contact card is of format {data[0]}, not {CARD_FORMAT} (a newer "
            "smr-toolkit wrote it: upgrade this one)"
        )
    try:
        host, port, client_port, metrics_port = _decoder.decode(data[1:])
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise CardError(f"member {member}'s contact card is not readable: {e}") from None
    ports = (port, client_port) if metrics_port is None else (port, client_port, metrics_port)
    if not host or not all(0 < p < 65536 for p in ports):
        raise CardError(
            f"member {member}'s contact card names no usable address: {host!r} ports {ports}"
        )
    return MemberConfig(member, host, port, client_port, metrics_port)
