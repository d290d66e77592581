"""Adapter spans agree with the processors' own token counts and with the models' layouts."""

from __future__ import annotations

import itertools

import pytest
import torch

from omnipress.adapters import get_adapter
from omnipress.adapters.llava import llava_onevision_image_tokens
from omnipress.generation import build_inputs
from omnipress.testing import (
    local_tokenizer,
    real_image,
    real_speech,
    real_video_frames,
    tiny_inputs,
    tiny_model,
    tiny_processor,
    token_id,
)

VISION_START, VISION_END = token_id("<|vision_start|>"), token_id("<|vision_end|>")


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen2_5_omni"])
@pytest.mark.parametrize("size", [(168, 224), (100, 300), (257, 131)])
def test_qwen_image_spans_match_the_image_processor_grid(family, size):
    model = tiny_model(family)
    adapter = get_adapter(model)
    image = real_image("coffee", size)
    grid = adapter.default_image_processor()(images=[image], return_tensors="pt")["image_grid_thw"][0]
    inputs = build_inputs(model, local_tokenizer(family), text="Describe.", images=[image])
    spans = adapter.spans(**inputs)
    (span,) = spans.of("image")
    assert span.length == int(grid.prod()) // 4  # gh * gw / merge**2
    ids = inputs["input_ids"][0]
    assert ids[span.start - 1] == VISION_START and ids[span.end] == VISION_END
    assert bool((ids[span.start : span.end] == adapter.modality_token_ids["image"]).all())


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen2_5_omni"])
def test_qwen_video_is_one_block_split_into_frame_groups(family):
    model = tiny_model(family)
    inputs = tiny_inputs(family, model, image=True, video_frames=6)
    spans = get_adapter(model).spans(**inputs)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    video = spans.of("video")
    assert t == 3 and [s.frame for s in video] == [0, 1, 2]
    assert all(s.length == h * w // 4 and s.item == 0 for s in video)
    assert all(a.end == b.start for a, b in itertools.pairwise(video))  # one contiguous block
    assert spans.count("image") == int(inputs["image_grid_thw"].prod()) // 4


def test_qwen3_vl_video_frame_groups_are_separated_by_timestamps():
    model = tiny_model("qwen3_vl")
    inputs = tiny_inputs("qwen3_vl", model, image=False, video_frames=4)
    spans = get_adapter(model).spans(**inputs)
    ids = inputs["input_ids"][0]
    t, h, w = inputs["video_grid_thw"][0].tolist()
    video = spans.of("video")
    assert [s.frame for s in video] == list(range(t)) == [0, 1]
    tok = local_tokenizer()
    for a, b in itertools.pairwise(video):
        between = tok.decode(ids[a.end : b.start])
        assert between.startswith("<|vision_end|><") and "seconds>" in between
    for s in video:
        assert s.length == h * w // 4
        assert ids[s.start - 1] == VISION_START and ids[s.end] == VISION_END
    # the model accepts the layout (get_rope_index splits the grid per frame)
    with torch.no_grad():
        model(**inputs)


def test_llava_spans_agree_with_llava_processor():
    model = tiny_model("llava")
    processor = tiny_processor("llava", model)
    prompt = "USER: <image>\nWhat is in the picture? ASSISTANT:"
    inputs = processor(text=[prompt], images=[real_image("chelsea")], return_tensors="pt")
    spans = get_adapter(model).spans(**inputs)
    image_id = token_id("<image>")
    assert int((inputs["input_ids"] == image_id).sum()) == 576
    (span,) = spans.of("image")
    assert span.length == 576 and span.item == 0
    assert bool((inputs["input_ids"][0, span.start : span.end] == image_id).all())
    assert spans.summary() == {"text": inputs["input_ids"].shape[1] - 576, "image": 576}


def test_qwen2_audio_spans_agree_with_qwen2_audio_processor():
    model = tiny_model("qwen2_audio")
    processor = tiny_processor("qwen2_audio", model)
    clips = [real_speech("harvard_03"), real_speech("harvard_04")]
    prompt = "<|audio_bos|><|AUDIO|><|audio_eos|>and<|audio_bos|><|AUDIO|><|audio_eos|>What is said?"
    inputs = processor(text=[prompt], audio=clips, sampling_rate=16000, return_tensors="pt")
    spans = get_adapter(model).spans(**inputs)
    audio = spans.of("audio")
    assert [s.item for s in audio] == [0, 1]
    for span, clip in zip(audio, clips):
        frames = len(clip) // 160  # valid mel frames at hop 160
        assert span.length == (((frames - 1) // 2 + 1) - 2) // 2 + 1
    assert spans.count("audio") == int((inputs["input_ids"] == token_id("<|AUDIO|>")).sum())
    ids = inputs["input_ids"][0]
    assert all(ids[s.start - 1] == token_id("<|audio_bos|>") and ids[s.end] == token_id("<|audio_eos|>") for s in audio)


@pytest.mark.parametrize(
    "aspect, sizes",
    [
        ("anyres_max_9", [(168, 224), (60, 500), (500, 60), (300, 301), (90, 120)]),
        ("anyres_max_2", [(336, 336), (224, 168)]),  # more tiles than allowed: the features are downscaled
    ],
)
def test_llava_onevision_image_tokens_match_the_model_packing(aspect, sizes):
    model = tiny_model("llava_onevision")
    model.config.vision_aspect_ratio = aspect
    adapter = get_adapter(model)
    images = [real_image("rocket", s) for s in sizes]
    inputs = build_inputs(model, local_tokenizer("llava_onevision"), text="x", images=images[:1])
    assert adapter.spans(**inputs).count("image") == adapter.tokens_per_image(*sizes[0])
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    side = model.config.vision_config.image_size
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side}, image_grid_pinpoints=model.config.image_grid_pinpoints
    )
    max_tiles = int(aspect.removeprefix("anyres_max_"))
    for image, size in zip(images, sizes):
        enc = processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            feats = model.model.get_image_features(enc["pixel_values"], enc["image_sizes"], return_dict=True)
        got = llava_onevision_image_tokens(
            *size, image_size=side, patch_size=14, grid_pinpoints=model.config.image_grid_pinpoints, max_tiles=max_tiles
        )
        assert got == feats.pooler_output[0].shape[0], size


def test_llava_onevision_video_spans_one_per_frame_with_the_newline_last():
    model = tiny_model("llava_onevision")
    inputs = tiny_inputs("llava_onevision", model, image=True, video_frames=3)
    spans = get_adapter(model).spans(**inputs)
    video = spans.of("video")
    assert [s.frame for s in video] == [0, 1, 2]
    assert [s.length for s in video] == [16, 16, 17]  # ceil(8 / 2)**2 per frame, + 1 newline closing the video
    assert spans.count("image") == get_adapter(model).tokens_per_image(168, 224)


def test_omni_audio_and_image_spans():
    model = tiny_model("qwen2_5_omni")
    inputs = tiny_inputs("qwen2_5_omni", model, image=True, audio=True)
    spans = get_adapter(model).spans(**inputs)
    frames = int(inputs["feature_attention_mask"].sum())
    assert spans.count("audio") == (((frames - 1) // 2 + 1) - 2) // 2 + 1
    assert len(spans.of("audio")) == 1 and len(spans.of("image")) == 1
    assert spans.count("image") == int(inputs["image_grid_thw"].prod()) // 4


def test_omni_audio_interleaved_with_video():
    model = tiny_model("qwen2_5_omni")
    adapter = get_adapter(model)
    frames, times = real_video_frames(8, (112, 168), fps=1.0)
    clip = real_speech("harvard_long_2")[: 16000 * 7]
    prompt = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n"
    ids = local_tokenizer()(prompt, add_special_tokens=False)["input_ids"]
    inputs = adapter.build_audio_video_inputs(ids, frames, times, clip, video_size=(112, 168))
    spans = adapter.spans(**inputs)
    kinds = [s.modality for s in spans.spans]
    # 2-second chunks: frame group (2 frames) then its 50 audio tokens, four times; audio is one clip cut in chunks
    assert kinds == ["video", "audio"] * 4
    assert [s.length for s in spans.of("audio")] == [50, 50, 50, 25]
    assert {s.item for s in spans.of("audio")} == {0}
    assert [s.frame for s in spans.of("video")] == [0, 1, 2, 3]
    captured = []
    handle = model.register_forward_pre_hook(lambda _m, _a, kwargs: captured.append(kwargs), with_kwargs=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=1)  # the model's M-RoPE index accepts the layout
    handle.remove()
    assert adapter.spans(**captured[0]).spans == spans.spans  # also from generate's encoder outputs


def test_mismatched_placeholders_raise():
    model = tiny_model("qwen2_vl")
    adapter = get_adapter(model)
    inputs = tiny_inputs("qwen2_vl", model, video_frames=2)
    ids = inputs["input_ids"].clone()
    image_pos = int((ids[0] == token_id("<|image_pad|>")).nonzero()[0])
    short = torch.cat([ids[:, :image_pos], ids[:, image_pos + 1 :]], dim=1)
    other = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with pytest.raises(ValueError, match="image placeholder tokens but image_grid_thw require"):
        adapter.spans(short, **other)
    with pytest.raises(ValueError, match="neither video_grid_thw nor mm_encoder_outputs"):
        adapter.spans(ids, image_grid_thw=inputs["image_grid_thw"])
    with pytest.raises(ValueError, match=r"\(seq,\) or \(1, seq\)"):
        adapter.spans(ids.expand(2, -1), **other)
    audio = get_adapter(tiny_model("qwen2_audio"))
    audio_inputs = tiny_inputs("qwen2_audio", audio.model)
    with pytest.raises(ValueError, match="feature_attention_mask"):
        audio.spans(audio_inputs["input_ids"])


@pytest.mark.parametrize(
    "family, media",
    [
        ("qwen2_vl", dict(video_frames=6)),
        ("qwen2_5_vl", dict(video_frames=4)),
        ("qwen3_vl", dict(video_frames=6)),
        ("llava", {}),
        ("llava_onevision", dict(video_frames=3)),
        ("qwen2_5_omni", dict(video_frames=4, audio=True)),
    ],
)
def test_spans_inside_generate_match_the_spans_of_the_inputs(family, media):
    """`generate` runs the encoders first and passes `mm_encoder_outputs` (no pixels, no grids) to the prefill:
    the spans from those arguments equal the spans of the original inputs."""
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = tiny_inputs(family, model, **media)
    captured = []
    handle = model.register_forward_pre_hook(lambda _m, _a, kwargs: captured.append(kwargs), with_kwargs=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=1)
    handle.remove()
    prefill = captured[0]
    assert "mm_encoder_outputs" in prefill and "image_grid_thw" not in prefill and "pixel_values" not in prefill
    assert adapter.spans(**prefill).spans == adapter.spans(**inputs).spans


def test_video_frames_without_grid_need_positions():
    model = tiny_model("qwen2_vl")
    inputs = tiny_inputs("qwen2_vl", model, image=False, video_frames=2)
    with torch.no_grad():
        encoded = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    with pytest.raises(ValueError, match="needs video_grid_thw or the M-RoPE position_ids"):
        get_adapter(model).spans(inputs["input_ids"], mm_encoder_outputs={"video": encoded})


def test_text_spans_are_empty():
    model = tiny_model("qwen3")
    inputs = tiny_inputs("qwen3", model)
    spans = get_adapter(model).spans(**inputs)
    assert spans.spans == [] and spans.seq_len == inputs["input_ids"].shape[1]
