"""Bare vision towers as models of their own: the adapters, and what the session does (and refuses) on them."""

from __future__ import annotations

import pytest

import omnipress as op
from omnipress.adapters import CLIPVisionAdapter, QwenVisionAdapter, SiglipVisionAdapter, get_adapter
from omnipress.testing import tiny_model

CASES = [
    ("llava_onevision", "vision_tower", SiglipVisionAdapter, "siglip_vision"),
    ("llava", "vision_tower", CLIPVisionAdapter, "clip_vision"),
    ("qwen2_vl", "visual", QwenVisionAdapter, "qwen_vision"),
    ("qwen2_5_vl", "visual", QwenVisionAdapter, "qwen_vision"),
    ("qwen3_vl", "visual", QwenVisionAdapter, "qwen_vision"),
]


@pytest.mark.parametrize("family, attr, adapter_class, name", CASES)
def test_bare_towers_get_their_adapter(family, attr, adapter_class, name):
    vlm = tiny_model(family)
    tower = getattr(vlm.model, attr)
    adapter = get_adapter(tower)
    assert type(adapter) is adapter_class and adapter.family == name
    assert adapter.vision_encoder is tower
    assert adapter.vision_blocks is get_adapter(vlm).vision_blocks  # the same blocks as seen from the VLM
    assert adapter.has_language_model is False and adapter.attention_modules == [] and adapter.feature_modules() == {}
    for attribute in ("language_model", "decoder_layers", "text_config"):
        with pytest.raises(ValueError, match="bare vision tower without a language model"):
            getattr(adapter, attribute)


def test_language_model_methods_are_refused_on_a_bare_tower():
    tower = tiny_model("llava_onevision").model.vision_tower
    with pytest.raises(ValueError, match="only encoder-stage methods"), op.SnapKV(budget=64)(tower):
        pass
    assert op.ModelSession.active_on(tower) is None
    with op.STCCacher()(tower):  # an encoder method installs nothing on a language model
        assert op.ModelSession.active_on(tower) is not None
    assert op.ModelSession.active_on(tower) is None
