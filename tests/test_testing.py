"""omnipress.testing: tiny models of every family run forward and generate on real media."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import transformers as T

from omnipress.adapters import get_adapter
from omnipress.testing import (
    ALL_FAMILIES,
    ENCODER_DECODER_FAMILIES,
    FAMILIES,
    SPECIAL_TOKENS,
    MediaUnavailableError,
    local_tokenizer,
    real_image,
    real_speech,
    real_video_frames,
    tiny_batch_inputs,
    tiny_config,
    tiny_inputs,
    tiny_model,
    tiny_processor,
    token_id,
)

RICH_MEDIA = {
    "qwen2_vl": dict(video_frames=4),
    "qwen2_5_vl": dict(video_frames=4),
    "qwen3_vl": dict(video_frames=4),
    "llava_onevision": dict(video_frames=2),
    "qwen2_5_omni": dict(video_frames=2, audio=True),
}
EXPECTED_SPANS = {
    "llama": set(),
    "qwen2": set(),
    "qwen3": set(),
    "qwen2_vl": {"image", "video"},
    "qwen2_5_vl": {"image", "video"},
    "qwen3_vl": {"image", "video"},
    "llava": {"image"},
    "llava_onevision": {"image", "video"},
    "qwen2_audio": {"audio"},
    "qwen2_5_omni": {"image", "video", "audio"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_runs_forward_and_generate_on_real_media(family):
    start = time.perf_counter()
    model = tiny_model(family)
    assert not model.training
    inputs = tiny_inputs(family, model, **RICH_MEDIA.get(family, {}))
    with torch.no_grad():
        logits = model(**inputs).logits
        out = get_adapter(model).generation_model.generate(**inputs, max_new_tokens=3, min_new_tokens=3)
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)
    spans = get_adapter(model).spans(**inputs)
    assert set(spans.summary()) - {"text"} == EXPECTED_SPANS[family]
    assert time.perf_counter() - start < 10


def test_overrides_seed_and_attention():
    model = tiny_model("qwen2_vl", num_hidden_layers=4, attn_implementation="eager", seed=3)
    assert len(model.model.language_model.layers) == 4
    assert model.config.text_config._attn_implementation == "eager"
    again = tiny_model("qwen2_vl", num_hidden_layers=4, attn_implementation="eager", seed=3)
    other = tiny_model("qwen2_vl", num_hidden_layers=4, seed=4)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(model.parameters(), other.parameters()))
    # eager attention returns attention maps
    inputs = tiny_inputs("qwen2_vl", model)
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    assert len(attentions) == 4 and attentions[0].shape[-1] == inputs["input_ids"].shape[1]


def test_wider_models_keep_mrope_consistent():
    config = tiny_config("qwen3_vl", hidden_size=128, num_attention_heads=4, num_key_value_heads=2)
    assert sum(config.text_config.rope_parameters["mrope_section"]) == 32 // 2 == config.text_config.head_dim // 2
    model = tiny_model("qwen3_vl", hidden_size=128)
    inputs = tiny_inputs("qwen3_vl", model, video_frames=2)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2)


def test_unknown_family():
    with pytest.raises(ValueError, match=r"unknown family 'gpt2'.*qwen2_vl.*whisper"):
        tiny_model("gpt2")


def test_family_tuples():
    assert ALL_FAMILIES == FAMILIES + ENCODER_DECODER_FAMILIES == (*FAMILIES, "whisper")
    assert not set(FAMILIES) & set(ENCODER_DECODER_FAMILIES)


def test_tiny_whisper_runs_forward_and_generate_on_real_speech():
    model = tiny_model("whisper", attn_implementation="eager", seed=1)
    assert not model.training and model.config._attn_implementation == "eager"
    inputs = tiny_inputs("whisper", model)
    assert set(inputs) == {"input_features", "attention_mask", "decoder_input_ids"}
    assert 0 < int(inputs["attention_mask"].sum()) < 3000  # a few seconds of speech, then padding
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(input_features=inputs["input_features"], max_new_tokens=3, min_new_tokens=3)
    assert logits.shape == (*inputs["decoder_input_ids"].shape, model.config.vocab_size)
    assert out.shape == (1, 3)
    with pytest.raises(ValueError, match="does not accept video"):
        tiny_inputs("whisper", model, video_frames=2)


def test_tiny_batch_inputs_left_pads_prompts_with_different_media():
    model = tiny_model("qwen2_vl")
    prompts = [dict(question="Hi?"), dict(image=False, video_frames=2, question="What moves in the video?")]
    batch = tiny_batch_inputs("qwen2_vl", model, prompts)
    singles = [tiny_inputs("qwen2_vl", model, **p) for p in prompts]
    lengths = [s["input_ids"].shape[1] for s in singles]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(-1).tolist() == lengths and batch["attention_mask"][:, -1].all()
    for row, single in enumerate(singles):
        assert torch.equal(batch["input_ids"][row, -lengths[row] :], single["input_ids"][0])
    assert torch.equal(batch["image_grid_thw"], singles[0]["image_grid_thw"])
    assert torch.equal(batch["video_grid_thw"], singles[1]["video_grid_thw"])


def test_local_tokenizer():
    tok = local_tokenizer()
    assert len(tok) == 256 + len(SPECIAL_TOKENS)
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [token_id(t) for t in SPECIAL_TOKENS]
    text = "Grüße, 世界!"
    assert tok.decode(tok(text)["input_ids"]) == text
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert (
        prompt == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
    )
    llava = local_tokenizer("llava").apply_chat_template(messages, tokenize=False)
    assert llava == "<|im_start|>user\n<image>\nHi<|im_end|>\n"


def test_tiny_processor_kinds():
    assert isinstance(tiny_processor("llava"), T.LlavaProcessor)
    assert isinstance(tiny_processor("qwen2_audio"), T.Qwen2AudioProcessor)
    for family in ("qwen2_vl", "qwen3_vl", "llava_onevision", "qwen2_5_omni", "llama"):
        assert isinstance(tiny_processor(family), T.PreTrainedTokenizerFast)


def test_real_media():
    image = real_image("coffee", (100, 150))
    assert image.mode == "RGB" and image.size == (150, 100)
    assert real_image("camera").mode == "RGB"  # grayscale photo converted
    with pytest.raises(ValueError, match="no image"):
        real_image("not_an_image")
    frames, times = real_video_frames(3, (56, 84))
    assert len(frames) == 3 and frames[0].size == (84, 56) and times == [0.0, 0.5, 1.0]
    assert np.abs(np.asarray(frames[0], float) - np.asarray(frames[2], float)).mean() > 0.5  # the frames move
    try:
        speech = real_speech()
    except MediaUnavailableError as reason:
        pytest.skip(str(reason))
    assert speech.dtype == np.float32 and speech.ndim == 1 and 0.05 < np.abs(speech).max() <= 1.0


def test_fallback_media_without_the_shared_data(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNIPRESS_DATA", str(tmp_path))  # an empty data folder
    frames, times = real_video_frames(4, (64, 64), fps=1.0)
    assert times == [0.0, 1.0, 2.0, 3.0] and all(f.size == (64, 64) for f in frames)
    assert np.abs(np.asarray(frames[0], float) - np.asarray(frames[3], float)).mean() > 1.0  # pan/zoom moves
    try:
        speech = real_speech()
    except MediaUnavailableError as reason:
        assert "no real speech found" in str(reason)
    else:
        assert speech.ndim == 1 and len(speech) > 16000  # /usr/share/sounds/alsa voice


def test_tiny_inputs_checks_the_family():
    with pytest.raises(ValueError, match="got a llava model"):
        tiny_inputs("qwen2_vl", tiny_model("llava"))
    with pytest.raises(ValueError, match="does not accept video"):
        tiny_inputs("llava", tiny_model("llava"), video_frames=2)
