"""ModalitySpans with left padding, and the left-padding check."""

from __future__ import annotations

import pytest
import torch

from omnipress.spans import SCOPES, ModalitySpans, Span, left_padding


def test_padding_is_neither_text_nor_media_in_any_scope():
    spans = ModalitySpans(12, [Span("image", 4, 7), Span("audio", 9, 11)], padding=3)
    valid = torch.tensor([False] * 3 + [True] * 9)
    assert torch.equal(spans.valid_mask(), valid)
    for scope in SCOPES:
        assert not spans.mask(scope)[:3].any(), scope
    assert torch.equal(spans.mask("all"), valid)
    assert spans.mask("vision").nonzero().flatten().tolist() == [4, 5, 6]
    assert spans.summary() == {"text": 4, "image": 3, "audio": 2}  # 12 - 3 padding - 5 media
    assert spans.num_valid == 9


def test_left_padded_moves_the_spans_and_adds_padding():
    single = ModalitySpans(6, [Span("video", 1, 3, frame=0), Span("video", 3, 5, frame=1)])
    row = single.left_padded(4)
    assert row == ModalitySpans(10, [Span("video", 5, 7, frame=0), Span("video", 7, 9, frame=1)], padding=4)
    assert row.summary() == single.summary()
    assert single.left_padded(0) == single
    assert row.left_padded(1).padding == 5


def test_invalid_padding_is_refused():
    with pytest.raises(ValueError, match="inside the 3 left-padding columns"):
        ModalitySpans(8, [Span("image", 2, 4)], padding=3)
    with pytest.raises(ValueError, match="padding must be in"):
        ModalitySpans(4, [], padding=5)


def test_left_padding_lengths_and_errors():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert left_padding(mask, 3, 4) == [2, 0, 4]
    assert left_padding(None, 2, 5) == [0, 0]
    assert left_padding(torch.tensor([0, 1, 1]), 1, 3) == [1]
    with pytest.raises(ValueError, match=r"rows \[0, 2\].*left padding only"):
        left_padding(torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 1]]), 3, 3)
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        left_padding(torch.ones(2, 5), 2, 4)
