"""Whisper: the tiny model generates with beams, the adapter finds its decoder, caches and encoder, and counts the
encoder positions that hold audio."""

from __future__ import annotations

import math

import pytest
import torch
import transformers as T

from omnipress.adapters import WhisperAdapter, collate_inputs, get_adapter
from omnipress.testing import (
    ENCODER_DECODER_FAMILIES,
    FAMILIES,
    real_speech,
    tiny_config,
    tiny_inputs,
    tiny_model,
    whisper_decoder_prompt,
    whisper_inputs,
    whisper_token_id,
)


def test_whisper_is_registered_apart_from_the_decoder_only_families():
    assert "whisper" in ENCODER_DECODER_FAMILIES and "whisper" not in FAMILIES
    model = tiny_model("whisper")
    assert isinstance(model, T.WhisperForConditionalGeneration)
    assert model.config.d_model == 64 and model.config.encoder_layers == model.config.decoder_layers == 2
    assert isinstance(get_adapter(model), WhisperAdapter)
    assert get_adapter(T.WhisperModel(tiny_config("whisper"))).family == "whisper"


def test_generate_with_beams_on_real_speech():
    model = tiny_model("whisper")
    inputs = tiny_inputs("whisper", model)
    assert inputs["input_features"].shape == (1, 80, 3000)
    with torch.no_grad():
        out = model.generate(
            input_features=inputs["input_features"],
            attention_mask=inputs["attention_mask"],
            num_beams=5,
            max_new_tokens=4,
        )
        logits = model(**inputs).logits
    assert out.shape[0] == 1 and 1 <= out.shape[1] <= 4
    assert logits.shape == (1, len(whisper_decoder_prompt()), model.config.vocab_size)
    with torch.no_grad():  # the decoder prompt of tiny_inputs is continued by generate
        prompted = model.generate(**inputs, num_beams=5, max_new_tokens=3)
    assert prompted.shape[0] == 1


def test_adapter_finds_the_decoder_its_caches_and_the_encoder():
    model = tiny_model("whisper", decoder_layers=3)
    adapter = get_adapter(model)
    decoder = model.model.decoder
    assert adapter.language_model is decoder and adapter.is_encoder_decoder
    assert adapter.num_layers == 3 and adapter.decoder_layers is decoder.layers
    assert [a.layer_idx for a in adapter.attention_modules] == [0, 1, 2]
    assert all(a is layer.self_attn for a, layer in zip(adapter.attention_modules, decoder.layers))
    assert all(a is layer.encoder_attn for a, layer in zip(adapter.cross_attention_modules, decoder.layers))
    assert [a.layer_idx for a in adapter.cross_attention_modules] == [0, 1, 2]
    assert (adapter.num_attention_heads, adapter.num_key_value_heads, adapter.head_dim) == (4, 4, 16)
    assert adapter.audio_encoder is model.model.encoder and adapter.audio_blocks is model.model.encoder.layers
    assert adapter.modality_token_ids == {}
    with pytest.raises(ValueError, match=r"whisper .*no vision encoder"):
        adapter.vision_encoder  # noqa: B018
    text = get_adapter(tiny_model("qwen2"))
    assert text.cross_attention_modules == [] and not text.is_encoder_decoder


def test_decoder_prompt_spans_are_text_and_padding():
    model = tiny_model("whisper")
    adapter = get_adapter(model)
    inputs = tiny_inputs("whisper", model)
    spans = adapter.spans(**inputs)  # reads decoder_input_ids; attention_mask is the encoder's frame mask
    assert spans.spans == [] and spans.seq_len == len(whisper_decoder_prompt()) and spans.padding == 0
    ids = torch.tensor([[0, 0, *whisper_decoder_prompt()], [1, 2, *whisper_decoder_prompt()]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    rows = adapter.batch_spans(decoder_input_ids=ids, decoder_attention_mask=mask, attention_mask=torch.ones(2, 3000))
    assert [r.padding for r in rows] == [2, 0] and [r.summary() for r in rows] == [{"text": 4}, {"text": 6}]


@pytest.mark.parametrize("name, seconds", [("harvard_03", 1.3), ("harvard_01", None)])
def test_encoder_positions_that_hold_audio(name, seconds):
    model = tiny_model("whisper")
    adapter = get_adapter(model)
    clip = real_speech(name)
    if seconds is not None:
        clip = clip[: int(16000 * seconds)]
    inputs = whisper_inputs(model, [clip])
    (count,) = adapter.audio_encoder_positions(num_samples=len(clip))
    mel_frames = math.ceil(len(clip) / 160)
    assert count == math.ceil(mel_frames / 2) == (mel_frames + 1) // 2
    assert abs(count - 50 * len(clip) / 16000) <= 1  # 50 positions per second
    assert adapter.audio_encoder_positions(feature_attention_mask=inputs["attention_mask"]) == [count]
    # the convolution front end: position j is centred on mel frame 2j; positions up to `count` see audio frames,
    # those from `count + 1` on see only the padding
    encoder = adapter.audio_encoder
    features = inputs["input_features"]
    changed = features.clone()
    changed[..., :mel_frames] += 1.0  # change the audio frames only

    def front(x):
        with torch.no_grad():
            return torch.nn.functional.gelu(encoder.conv2(torch.nn.functional.gelu(encoder.conv1(x))))

    differs = (front(features) != front(changed)).any(1)[0]  # (1500,)
    assert bool(differs[:count].all()) and not bool(differs[count + 1 :].any())
    assert adapter.audio_encoder_positions(num_samples=[16000 * 40, 1]) == [1500, 1]
    with pytest.raises(ValueError, match="exactly one"):
        adapter.audio_encoder_positions()


def test_collated_whisper_batch_and_feature_hook():
    model = tiny_model("whisper")
    adapter = get_adapter(model)
    clips = [real_speech("harvard_03"), real_speech("harvard_01")]
    batch = collate_inputs(model, [whisper_inputs(model, [clip]) for clip in clips])
    assert batch["input_features"].shape == (2, 80, 3000) and batch["decoder_input_ids"].shape == (2, 4)
    assert torch.equal(batch["decoder_attention_mask"], torch.ones(2, 4, dtype=torch.long))
    assert adapter.audio_encoder_positions(feature_attention_mask=batch["attention_mask"]) == [
        adapter.audio_encoder_positions(num_samples=len(c))[0] for c in clips
    ]
    seen = []
    with adapter.register_feature_hook("audio", lambda states: seen.append(states.shape)), torch.no_grad():
        model.generate(input_features=batch["input_features"], max_new_tokens=2, language="en")
    assert seen == [(2, 1500, 64)]
    assert whisper_token_id("<|notimestamps|>") == whisper_token_id("<|nospeech|>") + 1
    with pytest.raises(ValueError, match="whisper has no image features"):
        adapter.register_feature_hook("image", lambda states: None)


def test_whisper_batch_generates_each_clip_as_alone():
    model = tiny_model("whisper")
    singles = [whisper_inputs(model, [real_speech(name)]) for name in ("harvard_03", "harvard_01")]
    batch = collate_inputs(model, singles)
    kwargs = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, language="en")
    with torch.no_grad():
        batched = model.generate(input_features=batch["input_features"], **kwargs)
        for row, single in enumerate(singles):
            alone = model.generate(input_features=single["input_features"], **kwargs)
            assert torch.equal(batched[row], alone[0])
