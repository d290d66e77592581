"""Word error rate over a corpus with jiwer, after Whisper-style normalisation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..extras import require
from .normalize import normalize_english


@dataclass(frozen=True)
class WERResult:
    """Corpus WER (`errors / reference words`) and its counts."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def word_error_rate(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    normalize: Callable[[str], str] | None = normalize_english,
) -> WERResult:
    """Corpus WER of `hypotheses` against `references` (one pair per utterance), normalised by `normalize` (Whisper's
    English normaliser by default; None compares the raw words).

    A reference that normalises to nothing counts its hypothesis's words as insertions. Raises `ValueError` when the
    lists differ in length or hold no reference word at all.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references but {len(hypotheses)} hypotheses")
    jiwer = require("jiwer", extra="audio", purpose="WER")
    norm = normalize or (lambda s: s)
    refs = [" ".join(norm(r).split()) for r in references]
    hyps = [" ".join(norm(h).split()) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    extra = sum(len(h.split()) for r, h in zip(refs, hyps) if not r)
    if not pairs:
        raise ValueError("no reference word to score (every reference is empty after normalisation)")
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    words = out.hits + out.substitutions + out.deletions
    insertions = out.insertions + extra
    return WERResult(
        wer=(out.substitutions + out.deletions + insertions) / words,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=insertions,
        hits=out.hits,
        reference_words=words,
    )
