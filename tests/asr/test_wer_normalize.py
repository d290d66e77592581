"""WER with Whisper-style normalisation, against a brute-force edit distance."""

from __future__ import annotations

import random

import pytest

from omnipress.asr import normalize_english, word_error_rate


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (dynamic programming, the reference)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def test_normaliser_follows_whisper_english_rules():
    assert normalize_english("It's easy to tell the depth of a well.") == "it is easy to tell the depth of a well"
    assert normalize_english("Front, center.") == "front center"
    assert normalize_english("The girl sold fifty bonds.") == "the girl sold 50 bonds"
    assert normalize_english("Mr. Smith said: hmm, OK!") == "mister smith said ok"
    with pytest.raises(TypeError):
        normalize_english(None)


def test_corpus_wer_equals_brute_force_edit_distance():
    rng = random.Random(0)
    vocab = ["the", "birch", "canoe", "slid", "on", "smooth", "planks", "glue", "sheet", "dark", "blue"]
    refs, hyps, errors, words = [], [], 0, 0
    for _ in range(30):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 9))]
        hyp = [w for w in ref if rng.random() > 0.2]
        hyp = [rng.choice(vocab) if rng.random() < 0.2 else w for w in hyp]
        hyp += [rng.choice(vocab) for _ in range(rng.randint(0, 2))]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
        errors += edit_distance(ref, hyp)
        words += len(ref)
    result = word_error_rate(refs, hyps, normalize=None)
    assert result.errors == errors and result.reference_words == words
    assert result.wer == pytest.approx(errors / words)


def test_normalisation_ignores_case_punctuation_and_number_spelling():
    result = word_error_rate(["The girl sold fifty bonds."], ["the girl sold 50 bonds"])
    assert result.wer == 0.0 and result.hits == 5
    raw = word_error_rate(["The girl sold fifty bonds."], ["the girl sold 50 bonds"], normalize=None)
    assert raw.wer > 0


def test_empty_reference_counts_insertions_and_bad_input_is_refused():
    result = word_error_rate(["a b", "?"], ["a b", "hello there"])
    assert result.insertions == 2 and result.wer == pytest.approx(2 / 2)
    with pytest.raises(ValueError, match="2 references but 1"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference word"):
        word_error_rate(["?"], ["x"])
