"""spans_from_placeholders and the input-building helpers, against straightforward references."""

from __future__ import annotations

import random

import pytest
import torch

from omnipress.adapters.common import audio_token_count, expand_placeholders
from omnipress.adapters.qwen_audio import chunk_lengths
from omnipress.spans import ModalitySpans, Span, spans_from_placeholders
from omnipress.testing import tiny_model


def reference_spans(mask, groups_per_item, modality):
    """Brute force: walk the sequence, hand out placeholder tokens group by group, close a span on any gap."""
    flat = [(item, index, size) for item, groups in enumerate(groups_per_item) for index, size in enumerate(groups)]
    owner = []
    for item, index, size in flat:
        owner += [(item, index)] * size
    spans, k, current = [], 0, None
    for pos, is_placeholder in enumerate(mask.tolist()):
        if not is_placeholder:
            current = None
            continue
        item, index = owner[k]
        k += 1
        if current is not None and current["key"] == (item, index) and current["end"] == pos:
            current["end"] = pos + 1
        else:
            current = {"key": (item, index), "start": pos, "end": pos + 1}
            spans.append(current)
    frame = modality == "video"
    return [Span(modality, s["start"], s["end"], s["key"][0], s["key"][1] if frame else None) for s in spans]


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_on_random_layouts(seed):
    rng = random.Random(seed)
    modality = rng.choice(["image", "video", "audio"])
    groups = [[rng.randint(1, 6) for _ in range(rng.randint(1, 4) if modality == "video" else 1)] for _ in range(3)]
    # lay the groups out with text between them (and, for audio, text inside a group: interleaving)
    mask = []
    for item_groups in groups:
        mask += [False] * rng.randint(0, 3)
        for size in item_groups:
            for k in range(size):
                if modality == "audio" and k and rng.random() < 0.2:
                    mask += [False] * rng.randint(1, 2)
                mask.append(True)
            mask += [False] * (rng.randint(1, 2) if modality == "video" else 0)
    mask = torch.tensor(mask)
    got = spans_from_placeholders(mask, groups, modality, allow_split=modality == "audio")
    assert got == reference_spans(mask, groups, modality)
    assert sum(s.length for s in got) == int(mask.sum())
    ModalitySpans(len(mask), got)  # valid, non-overlapping


def test_adjacent_items_are_split_by_their_counts():
    mask = torch.tensor([0, 1, 1, 1, 1, 1, 0], dtype=torch.bool)
    got = spans_from_placeholders(mask, [[2], [3]], "image")
    assert got == [Span("image", 1, 3, 0), Span("image", 3, 6, 1)]


def test_count_mismatch_and_split_groups_raise():
    mask = torch.tensor([0, 1, 1, 0, 1], dtype=torch.bool)
    with pytest.raises(ValueError, match=r"3 image placeholder tokens but image_grid_thw require 4"):
        spans_from_placeholders(mask, [[4]], "image", source="image_grid_thw")
    with pytest.raises(ValueError, match="contiguous"):
        spans_from_placeholders(mask, [[3]], "image")
    assert len(spans_from_placeholders(mask, [[3]], "audio", allow_split=True)) == 2
    with pytest.raises(ValueError, match="1-D"):
        spans_from_placeholders(mask[None], [[3]], "audio")


def test_expand_placeholders():
    ids = [1, 9, 2, 9, 3]
    assert expand_placeholders(ids, 9, [[9, 9], [9]], modality="image") == [1, 9, 9, 2, 9, 3]
    with pytest.raises(ValueError, match=r"2 image placeholder.*1 image input"):
        expand_placeholders(ids, 9, [[9]], modality="image")
    # a start/end pair written around the placeholder is dropped when the replacement brings its own
    wrapped = [1, 5, 9, 6, 2]
    assert expand_placeholders(wrapped, 9, [[7, 5, 9, 6]], modality="video", unwrap=(5, 6)) == [1, 7, 5, 9, 6, 2]


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni"])
def test_audio_token_count_matches_the_audio_towers(family):
    model = tiny_model(family)
    tower = model.model.audio_tower
    lengths = torch.tensor([1, 2, 3, 4, 5, 99, 100, 101, 730, 2999, 3000])
    _, expected = tower._get_feat_extract_output_lengths(lengths)
    assert [audio_token_count(int(n)) for n in lengths] == expected.tolist()
    assert audio_token_count(3000) == 750  # 25 tokens per second, 30 s window


def test_chunk_lengths_follow_the_processor_rule():
    assert chunk_lengths(list(range(120)), 50) == [50, 50, 20]
    assert chunk_lengths([0, 0, 25, 25, 50, 50, 75, 75], 50) == [4, 4]
    # a jump over several chunks closes only one chunk per token (processor / get_rope_index behaviour)
    assert chunk_lengths([0, 200, 201], 50) == [1, 1, 1]
