"""The core's wire vocabulary (smr.core.codec): one registry of frame kinds, one word codec, and
every decoder of a peer's control message accepts its input or raises PeerProtocolError, never
anything else (h11's one fuzz property)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.core import codec
from smr.core.codec import WordReader, decode_members, encode_members, pack_words
from smr.core.errors import PeerProtocolError
from smr.core.restart import Acceptor, Recovered, RestartDecision
from smr.core.views import Proposal


def test_every_frame_kind_has_one_number_and_a_name():
    kinds = {v for k, v in vars(codec).items() if k.startswith("FRAME_") and isinstance(v, int)}
    assert kinds == set(codec.FRAME_KINDS)
    assert len(set(codec.FRAME_KINDS.values())) == len(codec.FRAME_KINDS)
    assert codec.frame_name(codec.FRAME_STATE) == "state"
    assert codec.frame_name(99) == "unknown-99"


def test_words_round_trip_with_lists():
    data = pack_words([7, 3, 1, 2, 3, 0])
    w = WordReader(data, "test message")
    assert w.one() == 7 and w.seq() == (1, 2, 3) and w.seq() == () and w.left == 0
    assert decode_members(encode_members((4, 5))) == (4, 5)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01" * 7, "a test message of 7 bytes"),
        (pack_words([5, 1]), "a truncated test message"),
        (pack_words([-1]), "a truncated test message"),
    ],
)
def test_malformed_word_messages_are_peer_errors(data, match):
    with pytest.raises(PeerProtocolError, match=match):
        w = WordReader(data, "test message")
        w.seq()
        w.seq()


def test_a_message_over_words_max_is_refused_before_it_is_read():
    with pytest.raises(PeerProtocolError, match="bytes"):
        WordReader(bytes(8 * 11), "test message", words_max=10)


def test_padding_is_ignored_only_where_asked():
    data = pack_words([1, 9]) + b"\x00\x00\x00"
    assert WordReader(data, "slot", padded=True).take(2) == (1, 9)
    with pytest.raises(PeerProtocolError):
        WordReader(data, "slot")


DECODERS = [Proposal.decode, Recovered.decode, RestartDecision.decode, Acceptor.decode]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), which=st.integers(0, len(DECODERS) - 1))
def test_a_decoder_accepts_or_raises_peer_protocol_error(data, which):
    with contextlib.suppress(PeerProtocolError):
        DECODERS[which](data)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.integers(-3, 40), max_size=60), which=st.integers(0, len(DECODERS) - 1))
def test_word_shaped_garbage_is_accepted_or_a_peer_error(words, which):
    # small integers make plausible length prefixes: the decoders' list logic gets exercised
    with contextlib.suppress(PeerProtocolError):
        DECODERS[which](pack_words(words))


def test_decoders_fed_byte_by_byte_and_with_trailing_bytes():
    p = Proposal(3, (1, 2, 3), (3,), ((1, 2),), ((1, (3,)),))
    data = p.encode()
    assert Proposal.decode(data) == p
    assert Proposal.decode(data + bytes(16)) == p  # a slot's zero padding
    for cut in range(len(data)):
        with contextlib.suppress(PeerProtocolError):
            Proposal.decode(data[:cut])
