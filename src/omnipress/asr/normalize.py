"""Whisper-style English text normalisation for WER (lower case, no punctuation, spelled-out numbers as digits).

transformers ships OpenAI Whisper's `EnglishTextNormalizer` (contractions, titles, numbers, currency, symbols);
`normalize_english` applies it. Its British -> American spelling table comes with the hub's `normalizer.json`, which
is not available offline, so spellings are left as they are (both sides of a WER are normalised alike).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _normalizer() -> Any:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalize_english(text: str) -> str:
    """`"It's easy to tell the depth of a well."` -> `"it is easy to tell the depth of a well"` (Whisper's English
    normaliser: lower case, contractions expanded, punctuation and filler words removed, numbers as digits)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return str(_normalizer()(text))
