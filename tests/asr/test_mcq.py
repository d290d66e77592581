"""Multiple-choice answer parsing (MMAU-style) and scoring."""

from __future__ import annotations

import pytest

from omnipress.asr import answer_index, format_mcq_prompt, parse_choice, score_mcq

CHOICES = ["a dog barking", "a cat", "rain on a roof", "dog"]


@pytest.mark.parametrize(
    ("response", "want"),
    [
        ("B", 1),
        ("b.", 1),
        ("(C) rain", 2),
        ("A. the dog", 0),
        ("The answer is (B).", 1),
        ("answer: D", 3),
        ("Option C", 2),
        ("I think it is rain on a roof.", 2),  # the option's text
        ("The answer is a cat", 1),  # "a" is an article, not option A
        ("It sounds like a dog barking outside", 0),  # the longest contained option wins over "dog"
        ("rain on the roof", 2),  # word overlap
        ("I cannot tell", None),
    ],
)
def test_parse_choice(response, want):
    assert parse_choice(response, CHOICES) == want


def test_ambiguous_text_and_bad_choices():
    assert parse_choice("red or tan", ["red", "tan"]) is None  # two options, equally long
    with pytest.raises(ValueError, match="2 to 26"):
        parse_choice("A", ["only"])
    with pytest.raises(TypeError):
        parse_choice(None, CHOICES)


def test_scoring_counts_unparsed_as_wrong():
    result = score_mcq(["B", "no idea", "rain on a roof", "A"], [CHOICES] * 4, ["B", 0, "rain on a roof", 3])
    assert (result.correct, result.total, result.unparsed) == (2, 4, 1) and result.accuracy == 0.5
    assert answer_index("c", CHOICES) == 2 and answer_index(3, CHOICES) == 3
    with pytest.raises(ValueError, match="neither"):
        answer_index("E", CHOICES)
    with pytest.raises(ValueError, match="responses"):
        score_mcq(["A"], [CHOICES, CHOICES], ["A"])


def test_prompt_lists_lettered_options():
    prompt = format_mcq_prompt("What do you hear?", CHOICES)
    assert "(A) a dog barking" in prompt and "(D) dog" in prompt and prompt.startswith("What do you hear?")
