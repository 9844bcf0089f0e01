"""A1111 prompt syntax: the examples from A1111's own docstrings, plus edge cases and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.processing.prompt_parser import BREAK, PromptSchedule, WeightedText, parse_attention


def pairs(text: str) -> list[tuple[str, float]]:
    return [w.as_pair() for w in parse_attention(text)]


# --------------------------------------------------------------------------------------------------
# Attention (A1111 parse_prompt_attention docstring)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
        ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
])
def test_a1111_attention_examples(text, expected):
    assert pairs(text) == expected


def test_attention_basics():
    assert pairs("((word))") == [("word", 1.1 * 1.1)]
    assert pairs("[word]") == [("word", 1 / 1.1)]
    assert pairs("[[word]]") == [("word", 1 / 1.1 / 1.1)]
    assert pairs("(word:1.5)") == [("word", 1.5)]
    assert pairs("(word : 0.25 )") == [("word ", 0.25)]
    assert pairs("a \\\\ b") == [("a \\ b", 1.0)]
    assert pairs("") == [("", 1.0)]


def test_unbalanced_and_stray():
    assert pairs("a) b]") == [("a) b]", 1.0)]
    assert pairs("[unbalanced") == [("unbalanced", 1 / 1.1)]
    assert pairs("x:1.2) y") == [("x:1.2) y", 1.0)]  # a weight with nothing open is text
    assert pairs("a:b") == [("a:b", 1.0)]
    # A1111 raises on a malformed number; we keep it as text.
    assert pairs("(x:1.2.3)") == [("x:1.2.3", 1.1)]


def test_break():
    assert parse_attention("a BREAK b") == [WeightedText("a", 1.0), BREAK, WeightedText("b", 1.0)]
    assert BREAK.as_pair() == ("BREAK", -1.0) and BREAK.is_break
    # BREAK still breaks inside brackets, and is never merged or weighted.
    assert parse_attention("(a BREAK b)") == [WeightedText("a", 1.1), BREAK, WeightedText("b", 1.1)]
    assert [w.is_break for w in parse_attention("a BREAK BREAK b")] == [False, True, True, False]
    # Only the whole word.
    assert pairs("BREAKFAST") == [("BREAKFAST", 1.0)]
    # Text that merely looks like the marker is not one.
    assert not any(w.is_break for w in parse_attention("(BR:-1)(EAK:-1)"))


# --------------------------------------------------------------------------------------------------
# Scheduling (A1111 get_learned_conditioning_prompt_schedules docstring, 10 steps)
# --------------------------------------------------------------------------------------------------

ALT = "(b:1.1)"


@pytest.mark.parametrize("prompt, expected", [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("a [{b|d{:.5] c", [[5, "a  c"], [10, "a {b|d{ c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[i, "a" if i % 2 else ALT] for i in range(1, 11)]),
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
])
def test_a1111_schedule_examples(prompt, expected):
    assert PromptSchedule.parse(prompt, 10).as_lists() == expected


def test_a1111_schedule_hires_examples():
    assert PromptSchedule.parse("a [b:.5] c", 10, hires_steps=10).as_lists() == [[10, "a b c"]]
    assert PromptSchedule.parse("a [b:1.5] c", 10, hires_steps=10).as_lists() == [
        [5, "a  c"], [10, "a b c"]]


def test_a1111_comment_example():
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    assert PromptSchedule.parse(prompt, 100).as_lists() == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


def test_text_at_uses_zero_based_steps():
    s = PromptSchedule.parse("a [b:c:10] d", 20)
    assert s.as_lists() == [[10, "a b d"], [20, "a c d"]]
    assert s.boundaries == (10, 20)
    assert [s.text_at(i) for i in (0, 9, 10, 19)] == ["a b d", "a b d", "a c d", "a c d"]
    assert s.text_at(-5) == "a b d" and s.text_at(500) == "a c d"  # clamped
    assert not s.is_static and PromptSchedule.parse("plain", 20).is_static


def test_alternation_every_step_from_step_zero():
    s = PromptSchedule.parse("[cat|dog|cow] x", 6)
    assert [s.text_at(i) for i in range(6)] == ["cat x", "dog x", "cow x"] * 2
    nested = PromptSchedule.parse("[a|[b|c]]", 4)
    assert [nested.text_at(i) for i in range(4)] == ["a", "c", "a", "c"]


def test_when_rules():
    g = lambda p, **kw: PromptSchedule.parse(p, 10, **kw).as_lists()  # noqa: E731
    assert g("[a:b:1.5]") == [[10, "a"]]  # decimal point: a fraction (clamped)
    assert g("[a:b:1.5]", old_scheduling=True) == [[1, "a"], [10, "b"]]
    assert g("[a:b:0]") == [[10, "b"]]
    assert g("[a:b:-3]") == [[10, "b"]]
    assert g("[a:b:99]") == [[10, "a"]]
    assert g("[a:b:1e999]") == [[10, "a"]]
    assert g("[a:b:7]", hires_steps=10) == [[10, "b"]]  # integer counts from the base steps
    assert g("[a:b:15]", hires_steps=10) == [[5, "a"], [10, "b"]]


def test_emphasis_survives_scheduling():
    s = PromptSchedule.parse("(a [b:c:5]:1.2), [d]", 10)
    assert s.texts == ("(a b:1.2), [d]", "(a c:1.2), [d]")


@pytest.mark.parametrize("prompt", [
    "a [b:c] d",  # not a number
    "[a:b:c:5]",  # too many parts
    "a | b", "(a|b)", "[a|b", "a\\", "[:]", "[:5", ")(][", "[[[[[[[[[[", "((((a:1)", "\\[a:b:5\\]",
])
def test_garbled_is_literal(prompt):
    s = PromptSchedule.parse(prompt, 10)
    assert s.as_lists() == [[10, prompt]]


def test_escaped_brackets_are_not_syntax():
    assert PromptSchedule.parse("\\[a|b\\]", 4).is_static


def test_deep_and_long_input_is_fast_and_literal():
    deep = "[" * 5000 + "a:b:3" + "]" * 5000
    assert PromptSchedule.parse(deep, 10).texts == (deep,)
    wide = "[a:b:3] " * 2000
    s = PromptSchedule.parse(wide, 10)
    assert s.texts == ("a " * 2000, "b " * 2000)


prompt_text = st.lists(st.sampled_from(list("ab :|()[]\\.0123456789-") + [" BREAK "]),
                       max_size=40).map("".join)


@settings(max_examples=150, deadline=None)
@given(prompt_text, st.integers(min_value=1, max_value=12))
def test_never_raises(prompt, steps):
    s = PromptSchedule.parse(prompt, steps)
    assert s.boundaries[-1] == steps
    assert list(s.boundaries) == sorted(set(s.boundaries))
    for step in range(steps):
        for w in parse_attention(s.text_at(step)):
            assert isinstance(w.weight, float)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(exclude_characters="()[]:|\\"), max_size=30))
def test_plain_text_is_identity(text):
    assert PromptSchedule.parse(text, 5).as_lists() == [[5, text]]
    if "BREAK" not in text:
        assert pairs(text) == [(text, 1.0)]
