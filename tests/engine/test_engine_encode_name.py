"""``encode_name`` is a safe, injective, reversible file-name encoding (for all strings)."""

from __future__ import annotations

import re

from engine_helpers import MAX_LITERAL, documented_name
from hypothesis import example, given
from hypothesis import strategies as st

from kroniko_ops.index import decode_name, encode_name

# Every code point, lone surrogates included, with the characters the encoding treats specially
# drawn often.
any_text = st.text(st.characters(blacklist_categories=()) | st.sampled_from("./%=~:_-\x00 aZ9"), max_size=80)
long_text = st.text(st.sampled_from("ab.%/é🎉"), min_size=50, max_size=400)
SAFE = re.compile(r"\A[A-Za-z0-9_:.%=~-]+\Z")


@given(st.one_of(any_text, long_text))
@example("")
@example(".")
@example("..")
@example("x" * MAX_LITERAL)
@example("x" * (MAX_LITERAL + 1))
@example("%" * 60)
@example("\ud800")
def test_encoding_is_safe_bounded_and_documented(name: str) -> None:
    enc = encode_name(name)
    assert enc == documented_name(name)
    assert enc and SAFE.match(enc), enc
    assert "/" not in enc and "\x00" not in enc
    assert enc not in (".", "..") and not enc.startswith(".")
    assert len(enc) <= MAX_LITERAL
    if enc.startswith("~"):
        assert len(enc) == 65


@given(st.one_of(any_text, long_text))
@example("")
@example("=")
@example("~")
@example("%2E")
@example("\ud800\udc00")
def test_encoding_is_reversible(name: str) -> None:
    enc = encode_name(name)
    if enc.startswith("~"):
        # Hashed names are reversed through the .name file beside them, not by decoding.
        assert decode_name(enc) is None
    else:
        assert decode_name(enc) == name


@given(any_text, any_text)
@example("a.b", "a%2Eb")
@example("", "=")
@example(".", "%2E")
@example("~", "%7E")
@example("x" * 181, "~" + "x" * 64)
def test_encoding_is_injective(a: str, b: str) -> None:
    if a != b:
        assert encode_name(a) != encode_name(b)


@given(st.text(st.sampled_from("%0123456789ABCDEFabcdef.=~:_-xé/\x00"), max_size=20))
@example("%2e")
@example("%2E")
@example("a%2Eb")
@example("%C3")
@example("%ZZ")
@example("%")
@example(".a")
def test_decoding_accepts_only_canonical_encodings(candidate: str) -> None:
    name = decode_name(candidate)
    if name is not None:
        assert encode_name(name) == candidate


def test_literal_names_never_look_hashed_or_empty() -> None:
    assert encode_name("~" + "a" * 64) != "~" + "a" * 64
    assert encode_name("=") != "="
    assert encode_name("~abc").startswith("%7E")
