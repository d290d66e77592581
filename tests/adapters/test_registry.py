"""get_adapter: every family resolves, where the decoder lives, token ids come from the config, clear errors."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from omnipress.adapters import ADAPTERS, UnsupportedModelError, get_adapter, supported_models
from omnipress.adapters.common import FamilyAdapter
from omnipress.testing import ALL_FAMILIES, FAMILIES, tiny_config, tiny_model, token_id

EXPECTED_MODALITIES = {
    "llama": (),
    "qwen2": (),
    "qwen3": (),
    "qwen2_vl": ("image", "video"),
    "qwen2_5_vl": ("image", "video"),
    "qwen3_vl": ("image", "video"),
    "llava": ("image",),
    "llava_onevision": ("image", "video"),
    "qwen2_audio": ("audio",),
    "qwen2_5_omni": ("image", "video", "audio"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_resolves_to_its_adapter(family):
    model = tiny_model(family, num_hidden_layers=3)
    adapter = get_adapter(model)
    assert isinstance(adapter, FamilyAdapter)
    assert adapter.family == family
    assert adapter.modalities == EXPECTED_MODALITIES[family]
    assert adapter.num_layers == 3
    layers = adapter.decoder_layers
    assert [a.layer_idx for a in adapter.attention_modules] == [0, 1, 2]
    assert all(a is layer.self_attn for a, layer in zip(adapter.attention_modules, layers))
    # the decoder is a module of the model itself, not a copy
    assert any(m is adapter.language_model for m in model.modules())
    assert (adapter.num_attention_heads, adapter.num_key_value_heads, adapter.head_dim) == (4, 2, 16)


@pytest.mark.parametrize(
    "family, expected",
    [
        ("qwen2_vl", {"image": "<|image_pad|>", "video": "<|video_pad|>"}),
        ("qwen3_vl", {"image": "<|image_pad|>", "video": "<|video_pad|>"}),
        ("llava", {"image": "<image>"}),
        ("llava_onevision", {"image": "<image>", "video": "<video>"}),
        ("qwen2_audio", {"audio": "<|AUDIO|>"}),
        ("qwen2_5_omni", {"image": "<|image_pad|>", "video": "<|video_pad|>", "audio": "<|AUDIO|>"}),
        ("llama", {}),
    ],
)
def test_modality_token_ids_come_from_the_config(family, expected):
    model = tiny_model(family)
    adapter = get_adapter(model)
    assert adapter.modality_token_ids == {m: token_id(t) for m, t in expected.items()}
    if expected:
        # change the id in the config: the adapter follows (nothing is hard-coded)
        modality = next(iter(expected))
        attr = {"image": "image_token_id", "video": "video_token_id", "audio": "audio_token_id"}[modality]
        setattr(adapter.config, attr, 7)
        assert adapter.modality_token_ids[modality] == 7


def test_bare_models_are_supported():
    for family, cls in [("qwen2_vl", T.Qwen2VLModel), ("llava", T.LlavaModel), ("qwen2_audio", T.Qwen2AudioModel)]:
        bare = cls(tiny_config(family)).eval()
        adapter = get_adapter(bare)
        assert adapter.family == family
        assert adapter.language_model is bare.language_model
    text = T.Qwen3Model(tiny_config("qwen3"))
    assert get_adapter(text).language_model is text


def test_full_qwen2_5_omni_is_handled_through_its_thinker():
    config = T.Qwen2_5OmniConfig(thinker_config=tiny_config("qwen2_5_omni").to_dict(), enable_audio_output=False)
    full = T.Qwen2_5OmniForConditionalGeneration(config).eval()
    adapter = get_adapter(full)
    assert adapter.family == "qwen2_5_omni"
    assert adapter.generation_model is full.thinker
    assert adapter.language_model is full.thinker.model.language_model
    assert adapter.rope_owner is full.thinker.model
    assert adapter.modality_token_ids["audio"] == token_id("<|AUDIO|>")


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)), id="gpt2"),
        pytest.param(
            lambda: T.BertModel(
                T.BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
            ),
            id="bert",
        ),
    ],
)
def test_unsupported_model_lists_every_family_and_class(model):
    instance = model()
    with pytest.raises(UnsupportedModelError) as info:
        get_adapter(instance)
    message = str(info.value)
    assert type(instance).__name__ in message
    for family, classes in supported_models().items():
        assert family in message
        for name in classes:
            assert name in message
    assert isinstance(info.value, ValueError)


def test_registry_covers_the_testing_families_once():
    """Every tiny model family has one adapter; the others are bare vision towers (encoder methods only)."""
    with_lm = [a.family for a in ADAPTERS if a.has_language_model]
    assert sorted(with_lm) == sorted(ALL_FAMILIES)
    assert sorted(a.family for a in ADAPTERS if not a.has_language_model) == [
        "clip_vision",
        "qwen_vision",
        "siglip_vision",
    ]
    classes = [c for a in ADAPTERS for c in a.model_classes]
    assert len(classes) == len(set(classes))


def test_unsupported_modality_is_a_clear_error():
    adapter = get_adapter(tiny_model("llava"))
    with pytest.raises(ValueError, match=r"does not accept video.*accepts: image"):
        adapter.check_modalities(["image", "video"])
    with pytest.raises(ValueError, match="text only"):
        get_adapter(tiny_model("qwen2")).check_modalities(["audio"])


def test_continuation_positions_of_1d_rope_families():
    adapter = get_adapter(tiny_model("llama"))
    pos = adapter.continuation_position_ids(10, 3, batch_size=2)
    assert torch.equal(pos, torch.tensor([[10, 11, 12], [10, 11, 12]]))
