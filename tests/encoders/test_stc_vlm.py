"""STC-Cacher on whole VLMs under `generate`, on real video, alone and composed with a KV press."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.testing import data_dir, tiny_model, tiny_processor

VIDEO_FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module")
def frames():
    path = data_dir() / "video" / "tree.avi"
    return [frame for _, frame in op.read_video(path, fps=2.0, max_frames=4)]


def _generate(model, family, media, **kwargs):
    return op.generate(
        model, tiny_processor(family, model), text="What happens?", max_new_tokens=6, do_sample=False, **media, **kwargs
    )


@pytest.mark.parametrize("family", [*VIDEO_FAMILIES, "llava"])
def test_generate_under_the_cacher(family, frames):
    model = tiny_model(family)
    media = {"images": frames[:2]} if family == "llava" else {"video": frames}
    dense = _generate(model, family, media)
    full = op.STCCacher(update_ratio=1.0, interval=2)
    with full(model):
        same = _generate(model, family, media)
    assert torch.equal(same.token_ids, dense.token_ids)
    # LLaVA-OV and CLIP: a frame per image; Qwen: a frame per temporal patch group of two video frames
    expected_frames = 4 if family == "llava_onevision" else 2
    assert full.stats.frames == expected_frames and full.stats.refresh_frames == expected_frames // 2

    cacher = op.STCCacher(update_ratio=0.25, interval=2)
    with cacher(model):
        _generate(model, family, media)
    assert 0.25 < cacher.stats.recomputed_fraction < 1.0
    # the features the LLM receives really come from the cached encoder
    with cacher(model), torch.no_grad():
        cacher.reset()
        vision = op.adapters.get_adapter(model).vision_encoder
        calls = []
        handle = vision.register_forward_hook(lambda m, a, o: calls.append(o))
        try:
            _generate(model, family, media)
        finally:
            handle.remove()
    with torch.no_grad():
        handle = vision.register_forward_hook(lambda m, a, o: calls.append(o))
        try:
            _generate(model, family, media)
        finally:
            handle.remove()
    assert not torch.allclose(calls[0].last_hidden_state, calls[1].last_hidden_state, atol=1e-4)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_composes_with_a_kv_press(family, frames):
    model = tiny_model(family)
    media = {"video": frames}
    press = op.SnapKV(budget=48, window=8)
    with press(model):
        pressed = _generate(model, family, media)
    reference_report = press.report
    # the cacher at update_ratio=1 changes nothing: the press sees the same prompt and keeps the same entries
    cacher = op.STCCacher(update_ratio=1.0)
    with cacher(model), press(model):
        both = _generate(model, family, media)
    assert torch.equal(both.token_ids, pressed.token_ids)
    assert press.report.tokens_after == reference_report.tokens_after
    # any order, composed, with the real ratio
    cacher = op.STCCacher(update_ratio=0.25, interval=2)
    with op.compose(press, cacher)(model):
        out = _generate(model, family, media)
    assert cacher.stats.frames > 0 and cacher.stats.recomputed_fraction < 1.0
    assert press.report.tokens_after < press.report.tokens_before
    assert out.token_ids.numel() > 0
    # the model is untouched afterwards
    assert torch.equal(
        _generate(model, family, media).token_ids, _generate(tiny_model(family), family, media).token_ids
    )
