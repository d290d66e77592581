"""omnipress.generation.generate: chat template -> processor -> model.generate, with and without a press."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import pytest
import torch

from omnipress.adapters import get_adapter
from omnipress.generation import GenerationResult, build_inputs, generate
from omnipress.testing import (
    data_dir,
    local_tokenizer,
    real_image,
    real_speech,
    real_video_frames,
    tiny_model,
    tiny_processor,
    token_id,
)

VTEST = data_dir() / "video" / "vtest.avi"


@dataclass
class DecoderCallCounter:
    """A minimal method with the omnipress shape: `press(model)` is a reversible context manager (a forward hook on
    the first decoder layer), and `report` says what it saw."""

    report: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, model):
        layer = get_adapter(model).decoder_layers[0]
        lengths: list[int] = []
        handle = layer.register_forward_hook(lambda _m, args, _o: lengths.append(args[0].shape[1]))
        try:
            yield self
        finally:
            handle.remove()
            self.report = {"calls": len(lengths), "prefill_tokens": lengths[0] if lengths else 0}


def test_text_model_with_tokenizer_and_press():
    model = tiny_model("qwen3")
    press = DecoderCallCounter()
    result = generate(
        model, tiny_processor("qwen3"), text="Hello there", press=press, max_new_tokens=5, min_new_tokens=5
    )
    assert isinstance(result, GenerationResult)
    assert result.token_ids.shape == (5,)
    assert result.report == {"calls": 5, "prefill_tokens": result.inputs["input_ids"].shape[1]}
    assert not get_adapter(model).decoder_layers[0]._forward_hooks  # the press was undone
    assert isinstance(result.text, str)
    plain = generate(model, tiny_processor("qwen3"), text="Hello there", max_new_tokens=5, min_new_tokens=5)
    assert plain.report is None and torch.equal(plain.token_ids, result.token_ids)  # greedy, deterministic


def test_llava_real_processor_matches_the_manual_path():
    model = tiny_model("llava")
    image = real_image("chelsea")
    native = generate(model, tiny_processor("llava", model), text="What animal?", images=image, max_new_tokens=3)
    manual = generate(model, local_tokenizer("llava"), text="What animal?", images=[image], max_new_tokens=3)
    assert int((native.inputs["input_ids"] == token_id("<image>")).sum()) == 576
    for key in native.inputs:
        assert torch.equal(native.inputs[key], manual.inputs[key]), key
    assert torch.equal(native.token_ids, manual.token_ids)


def test_qwen2_audio_real_processor_matches_the_manual_path(tmp_path):
    model = tiny_model("qwen2_audio")
    clip = real_speech("harvard_05")
    native = build_inputs(model, tiny_processor("qwen2_audio", model), text="What is said?", audio=clip)
    manual = build_inputs(model, local_tokenizer(), text="What is said?", audio=[clip])
    assert sorted(native) == sorted(manual)
    for key in native:
        assert torch.equal(native[key], manual[key]), key
    result = generate(model, tiny_processor("qwen2_audio", model), text="What is said?", audio=clip, max_new_tokens=2)
    assert result.token_ids.numel() <= 2


@pytest.mark.skipif(not VTEST.is_file(), reason=f"real video {VTEST} not present")
def test_qwen2_vl_video_from_a_path():
    model = tiny_model("qwen2_vl")
    press = DecoderCallCounter()
    result = generate(
        model,
        tiny_processor("qwen2_vl"),
        text="What happens?",
        video=VTEST,
        video_fps=1.0,
        max_video_frames=4,
        video_size=(112, 140),
        press=press,
        max_new_tokens=3,
    )
    inputs = result.inputs
    assert inputs["video_grid_thw"].tolist() == [[2, 8, 10]]  # 4 frames -> 2 temporal patches of 8 x 10 patches
    spans = get_adapter(model).spans(**inputs)
    assert [s.length for s in spans.of("video")] == [20, 20]
    assert press.report["prefill_tokens"] == inputs["input_ids"].shape[1]


def test_qwen3_vl_frames_with_timestamps_and_image():
    model = tiny_model("qwen3_vl")
    frames, times = real_video_frames(4, (128, 160))
    result = generate(
        model,
        local_tokenizer(),
        text="Compare.",
        images=real_image("rocket", (160, 224)),
        video=list(zip(times, frames)),
        video_size=(128, 160),
        max_new_tokens=2,
    )
    text = local_tokenizer().decode(result.inputs["input_ids"][0])
    assert "<0.2 seconds>" in text and "<1.2 seconds>" in text  # mean time of each 2-frame temporal patch
    assert "second_per_grid_ts" not in result.inputs


def test_qwen2_5_vl_temporal_spacing_from_frame_rate():
    model = tiny_model("qwen2_5_vl")
    frames, _ = real_video_frames(4, (112, 112))
    inputs = build_inputs(model, local_tokenizer(), text="?", video=frames, video_fps=4.0, video_size=(112, 112))
    assert inputs["second_per_grid_ts"].tolist() == [0.5]  # 2 frames per temporal patch at 4 fps


def test_omni_audio_and_image():
    model = tiny_model("qwen2_5_omni")
    result = generate(
        model,
        tiny_processor("qwen2_5_omni"),
        text="Describe both.",
        images=real_image("astronaut", (112, 112)),
        audio=real_speech("harvard_06"),
        max_new_tokens=2,
    )
    summary = get_adapter(model).spans(**result.inputs).summary()
    assert set(summary) == {"text", "image", "audio"}
    assert "mm_token_type_ids" not in result.inputs  # the Omni forward does not take it


def test_llava_onevision_video_frames():
    model = tiny_model("llava_onevision")
    frames, _ = real_video_frames(3)
    result = generate(model, tiny_processor("llava_onevision"), text="?", video=frames, max_new_tokens=2)
    assert result.inputs["pixel_values_videos"].shape == (1, 3, 3, 112, 112)
    assert int((result.inputs["input_ids"] == token_id("<video>")).sum()) == 3 * 16 + 1


def test_unsupported_modality_and_bad_inputs():
    with pytest.raises(ValueError, match=r"does not accept video.*accepts: image"):
        generate(tiny_model("llava"), tiny_processor("llava"), text="?", video=[real_image("coffee")])
    with pytest.raises(ValueError, match="does not accept audio"):
        build_inputs(tiny_model("qwen2_vl"), local_tokenizer(), text="?", audio=real_speech())
    with pytest.raises(ValueError, match="text only"):
        build_inputs(tiny_model("llama"), local_tokenizer(), text="?", images=real_image())
    with pytest.raises(FileNotFoundError, match=re.escape("nope.png")):
        build_inputs(tiny_model("llava"), local_tokenizer("llava"), text="?", images="nope.png")
    with pytest.raises(TypeError, match="video must be"):
        build_inputs(tiny_model("qwen2_vl"), local_tokenizer(), text="?", video=[1, 2])
    with pytest.raises(TypeError, match="text must be a str"):
        build_inputs(tiny_model("qwen2"), local_tokenizer(), text=None)


def test_text_only_prompt_works_with_a_string_concatenating_chat_template():
    """Text LLM templates such as SmolLM2's concatenate `message['content']` as a string."""
    from omnipress.testing import local_tokenizer, tiny_model

    tokenizer = local_tokenizer("llama")
    tokenizer.chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'assistant\\n' }}{% endif %}"
    )
    model = tiny_model("llama")
    inputs = build_inputs(model, tokenizer, text="Hello there")
    prompt = tokenizer.decode(inputs["input_ids"][0])
    assert prompt.endswith("user\nHello there\nassistant\n")
