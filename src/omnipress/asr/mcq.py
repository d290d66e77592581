"""Multiple-choice audio QA scoring with MMAU-style answer parsing.

LALMs answer in free text ("The answer is (B) a dog barking.", "B", "It's a dog barking"). `parse_choice` maps a
response to one of the options, in this order:

1. an explicit option letter: a lone letter, `(B)`, `B.`/`B)`/`B:` at the start, `answer is B`, `answer: (B)`,
   `option B`;
2. an option's text contained in the response (normalised: lower case, punctuation stripped); the longest contained
   option wins, and two different options of the same length contained are ambiguous;
3. word overlap: the option sharing the largest share (> 1/2) of its words with the response, if unique.

An unparsable or ambiguous response scores as wrong (MMAU counts it so).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

LETTERS = string.ascii_uppercase
_PUNCT = re.compile(r"[^\w\s]")


def _norm(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _letter_patterns(n: int) -> list[re.Pattern[str]]:
    upper = f"[{LETTERS[:n]}]"  # inside a sentence only capitals are letters ("the answer is a dog" is not A)
    either = f"[{LETTERS[:n]}{LETTERS[:n].lower()}]"
    return [
        re.compile(rf"^\s*\(?({either})\)?\s*[.]?\s*$"),  # "B", "(b)", "B."
        re.compile(rf"^\s*\(({either})\)"),  # "(B) a dog"
        re.compile(rf"^\s*({upper})\s*[.:)]"),  # "B. a dog", "B) ...", "B: ..."
        re.compile(rf"(?i:answer)\s*(?i:is|:)?\s*(?i:option\s*)?\(?({upper})\)?(?![\w])"),
        re.compile(rf"\b(?i:option)\s*\(?({upper})\)?(?![\w])"),
    ]


def parse_choice(response: str, choices: Sequence[str]) -> int | None:
    """Index of the option `response` picks among `choices` (A = 0), or None when it picks none or is ambiguous."""
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"need 2 to {len(LETTERS)} choices, got {len(choices)}")
    for pattern in _letter_patterns(len(choices)):
        match = pattern.search(response)
        if match:
            return LETTERS.index(match.group(1).upper())
    said = f" {_norm(response)} "
    options = [_norm(c) for c in choices]
    contained = [(len(o), i) for i, o in enumerate(options) if o and f" {o} " in said]
    if contained:
        longest = max(length for length, _ in contained)
        winners = {options[i] for length, i in contained if length == longest}
        if len(winners) == 1:
            return next(i for length, i in contained if length == longest)
        return None
    words = set(said.split())
    shares = [len(set(o.split()) & words) / len(set(o.split())) if o else 0.0 for o in options]
    best = max(shares)
    if best > 0.5 and shares.count(best) == 1:
        return shares.index(best)
    return None


def answer_index(answer: str | int, choices: Sequence[str]) -> int:
    """The gold option as an index: an int, a letter (`"B"`), or the option's text."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise ValueError(f"answer index {answer} is out of range for {len(choices)} choices")
        return answer
    if isinstance(answer, str):
        text = answer.strip()
        if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
            return LETTERS.index(text.upper())
        normalised = [_norm(c) for c in choices]
        if _norm(text) in normalised:
            return normalised.index(_norm(text))
    raise ValueError(f"answer {answer!r} is neither an index, a letter nor one of the choices {list(choices)}")


@dataclass(frozen=True)
class MCQResult:
    """Accuracy over the questions; unparsed responses count as wrong."""

    accuracy: float
    correct: int
    total: int
    unparsed: int


def score_mcq(responses: Sequence[str], choices: Sequence[Sequence[str]], answers: Sequence[str | int]) -> MCQResult:
    """Score free-text `responses` against `answers`, one `choices` list per question."""
    if not (len(responses) == len(choices) == len(answers)):
        raise ValueError(f"got {len(responses)} responses, {len(choices)} choice lists and {len(answers)} answers")
    if not responses:
        raise ValueError("no question to score")
    correct = unparsed = 0
    for response, options, answer in zip(responses, choices, answers):
        picked = parse_choice(response, options)
        unparsed += picked is None
        correct += picked is not None and picked == answer_index(answer, options)
    return MCQResult(accuracy=correct / len(responses), correct=correct, total=len(responses), unparsed=unparsed)


def format_mcq_prompt(question: str, choices: Sequence[str]) -> str:
    """The question with lettered options and the answer instruction, as AudioMarathon/MMAU prompts do."""
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"need 2 to {len(LETTERS)} choices, got {len(choices)}")
    lines = [question.strip(), *[f"({LETTERS[i]}) {c}" for i, c in enumerate(choices)]]
    return "\n".join(lines) + "\nAnswer with the option's letter from the given choices directly."
