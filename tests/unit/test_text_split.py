"""``channel_adapters.text.split_text``, shared by the VK, MAX, Viber and
WhatsApp adapters: parts within the limit, nothing lost but the whitespace
at a cut, cuts at the best place the second half of a part offers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from channel_adapters.text import split_text


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=400), st.integers(1, 60))
def test_parts_are_within_the_limit_and_keep_every_word(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())
    assert all(p == p.strip() for p in parts)


def test_the_cut_prefers_a_paragraph_then_a_line_then_a_space() -> None:
    assert split_text("aaaa bbbb\ncccc\n\ndddd eeee", 20) == ["aaaa bbbb\ncccc", "dddd eeee"]
    assert split_text("aaaa bbbb\ncccc dddd", 16) == ["aaaa bbbb", "cccc dddd"]
    assert split_text("aaaa bbbb cccc", 10) == ["aaaa bbbb", "cccc"]
    # no place in the second half: hard at the limit
    assert split_text("a bbbbbbbbbbbbbbbb", 8) == ["a bbbbbb", "bbbbbbbb", "bb"]
    assert split_text("   ", 5) == [] and split_text("short", 5) == ["short"]
