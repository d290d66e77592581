"""Encoder accessors (the right modules, and the blocks are what the encoder runs) and the hook on the features
where they enter the language model (forward and generate)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from omnipress.adapters import get_adapter
from omnipress.testing import ALL_FAMILIES, tiny_batch_inputs, tiny_inputs, tiny_model

VISION_ENCODERS = {
    "qwen2_vl": "Qwen2VisionTransformerPretrainedModel",
    "qwen2_5_vl": "Qwen2_5_VisionTransformerPretrainedModel",
    "qwen3_vl": "Qwen3VLVisionModel",
    "llava": "CLIPVisionModel",
    "llava_onevision": "SiglipVisionModel",
    "qwen2_5_omni": "Qwen2_5OmniVisionEncoder",
}
VISION_BLOCKS = {
    "qwen2_vl": "Qwen2VLVisionBlock",
    "qwen2_5_vl": "Qwen2_5_VLVisionBlock",
    "qwen3_vl": "Qwen3VLVisionBlock",
    "llava": "CLIPEncoderLayer",
    "llava_onevision": "SiglipEncoderLayer",
    "qwen2_5_omni": "Qwen2_5OmniVisionBlock",
}
AUDIO_ENCODERS = {
    "qwen2_audio": ("Qwen2AudioEncoder", "Qwen2AudioEncoderLayer"),
    "qwen2_5_omni": ("Qwen2_5OmniAudioEncoder", "Qwen2_5OmniAudioEncoderLayer"),
    "whisper": ("WhisperEncoder", "WhisperEncoderLayer"),
}
#: media per family for the feature tests (every modality of the family present)
MEDIA = {
    "qwen2_vl": dict(video_frames=2),
    "qwen2_5_vl": dict(video_frames=2),
    "qwen3_vl": dict(video_frames=2),
    "llava": {},
    "llava_onevision": dict(video_frames=2),
    "qwen2_audio": {},
    "qwen2_5_omni": dict(video_frames=2, audio=True),
    "whisper": {},
}


def _count_calls(modules: list[nn.Module]) -> tuple[list[int], list]:
    counts = [0] * len(modules)
    handles = []
    for i, module in enumerate(modules):

        def hook(_m, _a, _o, i=i):
            counts[i] += 1

        handles.append(module.register_forward_hook(hook))
    return counts, handles


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_encoders_and_their_blocks(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    owned = {id(m) for m in model.modules()}
    if family in VISION_ENCODERS:
        encoder, blocks = adapter.vision_encoder, adapter.vision_blocks
        assert type(encoder).__name__ == VISION_ENCODERS[family]
        assert isinstance(blocks, nn.ModuleList) and len(blocks) >= 2
        assert {type(b).__name__ for b in blocks} == {VISION_BLOCKS[family]}
        assert id(encoder) in owned and {id(b) for b in blocks} <= {id(m) for m in encoder.modules()}
    else:
        with pytest.raises(ValueError, match=f"{family} .*has no vision encoder"):
            adapter.vision_encoder  # noqa: B018
        with pytest.raises(ValueError, match=f"{family} .*has no vision encoder"):
            adapter.vision_blocks  # noqa: B018
    if family in AUDIO_ENCODERS:
        encoder_name, block_name = AUDIO_ENCODERS[family]
        encoder, blocks = adapter.audio_encoder, adapter.audio_blocks
        assert type(encoder).__name__ == encoder_name
        assert isinstance(blocks, nn.ModuleList) and len(blocks) == 2
        assert {type(b).__name__ for b in blocks} == {block_name}
        assert id(encoder) in owned and {id(b) for b in blocks} <= {id(m) for m in encoder.modules()}
    else:
        with pytest.raises(ValueError, match=f"{family} .*has no audio encoder"):
            adapter.audio_encoder  # noqa: B018
        with pytest.raises(ValueError, match=f"{family} .*has no audio encoder"):
            adapter.audio_blocks  # noqa: B018


@pytest.mark.parametrize("family", list(dict.fromkeys([*VISION_ENCODERS, *AUDIO_ENCODERS])))
def test_every_block_runs_once_per_encoder_call_on_real_media(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    media = {"audio": True} if family in AUDIO_ENCODERS else {}
    inputs = tiny_inputs(family, model, **media)  # one image and/or one clip: one call of each encoder
    encoders = []
    if family in VISION_ENCODERS:
        encoders.append((adapter.vision_encoder, adapter.vision_blocks))
    if family in AUDIO_ENCODERS:
        encoders.append((adapter.audio_encoder, adapter.audio_blocks))
    for encoder, blocks in encoders:
        counts, handles = _count_calls([encoder, *blocks])
        _run(model, inputs)
        for handle in handles:
            handle.remove()
        assert counts == [1] * (1 + len(blocks)), (family, type(encoder).__name__)


def _zero_output(_module, _args, output):
    if isinstance(output, torch.Tensor):
        return torch.zeros_like(output)
    output.last_hidden_state = torch.zeros_like(output.last_hidden_state)
    return output


@pytest.mark.parametrize("family", list(MEDIA))
def test_a_hook_returning_none_changes_nothing_and_sees_the_scattered_features(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = tiny_inputs(family, model, **MEDIA[family])
    baseline = _run(model, inputs)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        adapter.register_feature_hook(m, lambda features, m=m: seen.__setitem__(m, features.clone()))
        for m in adapter.modalities
    ]
    assert torch.equal(_run(model, inputs), baseline)  # bit-identical
    for handle in handles:
        handle.remove()
    assert set(seen) == set(adapter.modalities)
    if family == "whisper":
        assert seen["audio"].shape == (1, 1500, model.config.d_model)
        return
    spans = adapter.spans(**inputs)
    hidden = adapter.text_config.hidden_size
    for modality, features in seen.items():
        assert features.shape == (spans.count(modality), hidden), modality
        assert features.abs().sum() > 0


@pytest.mark.parametrize("family", list(MEDIA))
def test_zeroed_features_equal_features_zeroed_at_their_modules_in_forward_and_generate(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    if family == "llava_onevision":
        with torch.no_grad():
            model.model.image_newline.zero_()  # the packing adds learned newline rows to the projector outputs
    inputs = tiny_inputs(family, model, **MEDIA[family])
    generate = dict(max_new_tokens=2, min_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    generate.update(output_logits=True)
    if family == "whisper":
        generate["language"] = "en"  # no language detection: the encoder runs once
    generator = adapter.generation_model

    def run_both():
        with torch.no_grad():
            return _run(model, inputs), generator.generate(**inputs, **generate)

    baseline, baseline_gen = run_both()
    calls: list[str] = []

    def zeros(features, modality):
        calls.append(modality)
        return torch.zeros_like(features)

    handles = [adapter.register_feature_hook(m, lambda f, m=m: zeros(f, m)) for m in adapter.modalities]
    hooked, hooked_gen = run_both()
    for handle in handles:
        handle.remove()
    assert sorted(calls) == sorted(list(adapter.modalities) * 2)  # once in the forward, once in generate's prefill

    modules = {id(m): m for m in adapter.feature_modules().values()}
    assert set(adapter.feature_modules()) == set(adapter.modalities)
    handles = [m.register_forward_hook(_zero_output) for m in modules.values()]
    reference, reference_gen = run_both()
    for handle in handles:
        handle.remove()

    assert torch.equal(hooked, reference)
    assert not torch.allclose(hooked, baseline)
    assert torch.equal(hooked_gen.sequences, reference_gen.sequences)
    assert torch.equal(hooked_gen.logits[0], reference_gen.logits[0])
    assert not torch.allclose(hooked_gen.logits[0], baseline_gen.logits[0])
    assert torch.equal(_run(model, inputs), baseline)  # removed


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
def test_each_modality_hook_gets_its_own_encoder_features(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = tiny_inputs(family, model, video_frames=2)
    seen = {}
    with (
        adapter.register_feature_hook("image", lambda f: seen.__setitem__("image", f.clone())),
        adapter.register_feature_hook("video", lambda f: seen.__setitem__("video", f.clone())),
    ):
        _run(model, inputs)
    inner = model.model
    with torch.no_grad():
        if family == "qwen2_vl":
            image = inner.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
            video = inner.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
        else:
            image = inner.get_image_features(
                inputs["pixel_values"], inputs["image_sizes"], batch_num_images=inputs["batch_num_images"]
            ).pooler_output
            video = inner.get_video_features(inputs["pixel_values_videos"]).pooler_output
    torch.testing.assert_close(seen["image"], torch.cat(list(image)), rtol=0, atol=1e-6)
    torch.testing.assert_close(seen["video"], torch.cat(list(video)), rtol=0, atol=1e-6)


def test_batch_features_come_row_by_row():
    model = tiny_model("qwen2_vl")
    adapter = get_adapter(model)
    prompts = [dict(question="First?"), dict(image=False), dict(question="Third, longer?", image_size=(140, 280))]
    per_prompt = []
    for prompt in prompts[::2]:
        with adapter.register_feature_hook("image", lambda f: per_prompt.append(f.clone())):
            _run(model, tiny_inputs("qwen2_vl", model, **prompt))
    batched = []
    with adapter.register_feature_hook("image", lambda f: batched.append(f.clone())):
        _run(model, tiny_batch_inputs("qwen2_vl", model, prompts))
    torch.testing.assert_close(batched[0], torch.cat(per_prompt), rtol=0, atol=1e-5)


def test_feature_hook_errors():
    with pytest.raises(ValueError, match="qwen3 has no image features; it accepts: text only"):
        get_adapter(tiny_model("qwen3")).register_feature_hook("image", lambda f: None)
    adapter = get_adapter(tiny_model("llava"))
    with pytest.raises(ValueError, match="llava has no video features; it accepts: image"):
        adapter.register_feature_hook("video", lambda f: None)
    assert get_adapter(tiny_model("llama")).feature_modules() == {}
    inputs = tiny_inputs("llava", adapter.model)
    with (
        adapter.register_feature_hook("image", lambda f: f[:1]),
        pytest.raises(ValueError, match=r"must return None or a tensor of shape \(576, 64\)"),
    ):
        _run(adapter.model, inputs)
