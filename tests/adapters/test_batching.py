"""Left-padded batches: collate_inputs builds what generate needs, batch_spans gives every row its own spans, also
inside generate and under beam / sampling expansion."""

from __future__ import annotations

import pytest
import torch

from omnipress.adapters import collate_inputs, get_adapter
from omnipress.testing import (
    FAMILIES,
    real_image,
    tiny_batch_inputs,
    tiny_inputs,
    tiny_model,
    token_id,
)

#: per family: prompts with different questions (lengths), with and without media, different video lengths
PROMPTS = {
    "llama": [dict(question="What is shown?"), dict(question="Say something longer, please.")],
    "qwen2": [dict(question="Hi?"), dict(question="A much longer question about nothing?")],
    "qwen3": [dict(question="Hi?"), dict(question="A much longer question about nothing?")],
    "qwen2_vl": [dict(video_frames=4), dict(image=False, question="Hi?"), dict(video_frames=2, question="Frames?")],
    "qwen2_5_vl": [dict(video_frames=4), dict(image=False, question="Hi?"), dict(video_frames=2, question="Now?")],
    "qwen3_vl": [dict(video_frames=4), dict(image=False, question="Hi?"), dict(video_frames=2, question="Frames?")],
    "llava": [dict(), dict(image=False, question="Hi there?")],
    "llava_onevision": [
        dict(video_frames=2),
        dict(image=False, question="Hi?"),
        dict(question="A tall image?", image_size=(300, 120)),  # more anyres patches than the first image
    ],
    "qwen2_audio": [dict(), dict(audio=False, question="No sound here?")],
    "qwen2_5_omni": [dict(audio=True), dict(image=False, video_frames=2), dict(image=False, question="Text?")],
}


def _generate(model, inputs, **kwargs):
    kwargs.setdefault("max_new_tokens", 4)
    with torch.no_grad():
        out = get_adapter(model).generation_model.generate(
            **inputs, do_sample=False, min_new_tokens=kwargs["max_new_tokens"], **kwargs
        )
    return out[:, inputs["input_ids"].shape[1] :]


def _prefill_kwargs(model, inputs, **generate_kwargs):
    """The keyword arguments of the first forward call inside generate (the prefill)."""
    generator = get_adapter(model).generation_model
    captured = []
    handle = generator.register_forward_pre_hook(lambda _m, _a, kwargs: captured.append(kwargs), with_kwargs=True)
    with torch.no_grad():
        generator.generate(**inputs, max_new_tokens=1, **generate_kwargs)
    handle.remove()
    return captured[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_generates_each_prompt_as_alone_and_spans_are_shifted_single_spans(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    singles = [tiny_inputs(family, model, **prompt) for prompt in PROMPTS[family]]
    batch = collate_inputs(model, singles)
    longest = max(s["input_ids"].shape[1] for s in singles)
    assert batch["input_ids"].shape == (len(singles), longest)
    paddings = [longest - s["input_ids"].shape[1] for s in singles]
    assert len(set(paddings)) > 1  # the rows really have different lengths
    assert batch["attention_mask"].sum(-1).tolist() == [longest - p for p in paddings]

    rows = adapter.batch_spans(**batch)
    for row, single, padding in zip(rows, singles, paddings):
        assert row == adapter.spans(**single).left_padded(padding)
        assert row.padding == padding

    batched = _generate(model, batch)
    for row, single in enumerate(singles):
        assert torch.equal(batched[row], _generate(model, single)[0]), (family, row)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision", "qwen2_audio", "qwen2_5_omni"])
@pytest.mark.parametrize("expansion", [dict(num_beams=2), dict(do_sample=True, num_return_sequences=3)])
def test_spans_of_the_expanded_prefill_inside_generate(family, expansion):
    """Beam search and num_return_sequences repeat every row (and its media) inside generate: the prefill's
    batch_spans are the batch's spans, each repeated."""
    model = tiny_model(family)
    adapter = get_adapter(model)
    batch = tiny_batch_inputs(family, model, PROMPTS[family])
    prefill = _prefill_kwargs(model, batch, **expansion)
    repeat = expansion.get("num_beams", expansion.get("num_return_sequences"))
    assert prefill["input_ids"].shape[0] == repeat * batch["input_ids"].shape[0]
    expected = [spans for spans in adapter.batch_spans(**batch) for _ in range(repeat)]
    assert adapter.batch_spans(**prefill) == expected


def test_two_identical_image_prompts_inside_generate():
    """The issue's case: the prefill of a batch of two image prompts holds both images' encoder outputs."""
    model = tiny_model("qwen2_vl")
    adapter = get_adapter(model)
    single = tiny_inputs("qwen2_vl", model)
    batch = collate_inputs(model, [single, single])
    prefill = _prefill_kwargs(model, batch)
    assert "mm_encoder_outputs" in prefill and "image_grid_thw" not in prefill
    expected = adapter.spans(**single)
    assert adapter.batch_spans(**prefill) == [expected, expected]
    with pytest.raises(ValueError, match=r"48 image placeholder tokens but mm_encoder_outputs require 96.*batch_spans"):
        adapter.spans(prefill["input_ids"][0], **{k: v for k, v in prefill.items() if k != "input_ids"})


def test_rows_get_their_items_by_placeholder_count_and_mismatches_are_named():
    model = tiny_model("qwen2_vl")
    adapter = get_adapter(model)
    batch = tiny_batch_inputs("qwen2_vl", model, [dict(question="A?"), dict(image=False), dict(question="Longer?")])
    spans = adapter.batch_spans(**batch)
    assert [len(s.of("image")) for s in spans] == [1, 0, 1]
    assert [s.of("image")[0].item for s in (spans[0], spans[2])] == [0, 0]
    one_grid = {**batch, "image_grid_thw": batch["image_grid_thw"][:1]}
    with pytest.raises(ValueError, match=r"row 2 of input_ids holds \d+ image placeholder tokens"):
        adapter.batch_spans(**one_grid)
    extra_grid = {**batch, "image_grid_thw": torch.cat([batch["image_grid_thw"]] * 2)}
    with pytest.raises(ValueError, match=r"2 more image item\(s\)"):
        adapter.batch_spans(**extra_grid)


def test_right_padding_is_refused():
    model = tiny_model("qwen2_vl")
    batch = tiny_batch_inputs("qwen2_vl", model, [dict(question="A?"), dict(image=False, question="Hello?")])
    right = batch["attention_mask"].flip(-1)
    with pytest.raises(ValueError, match="left padding"):
        get_adapter(model).batch_spans(batch["input_ids"], right)


def test_text_rows_have_only_padding():
    model = tiny_model("llama")
    batch = tiny_batch_inputs("llama", model, PROMPTS["llama"])
    rows = get_adapter(model).batch_spans(**batch)
    assert [r.spans for r in rows] == [[], []]
    assert [r.padding for r in rows] == (batch["attention_mask"] == 0).sum(-1).tolist()
    assert [int(r.mask("all").sum()) for r in rows] == batch["attention_mask"].sum(-1).tolist()


def test_llava_onevision_patches_are_padded_as_its_image_processor_pads_a_batch():
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    model = tiny_model("llava_onevision")
    sizes = [(168, 224), (300, 120)]
    batch = tiny_batch_inputs("llava_onevision", model, [dict(image_size=s) for s in sizes])
    side = model.config.vision_config.image_size
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side},
        image_grid_pinpoints=model.config.image_grid_pinpoints,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    expected = processor(images=[[real_image("astronaut", s)] for s in sizes], return_tensors="pt")
    assert batch["pixel_values"].shape[1] > 1 and torch.equal(batch["pixel_values"], expected["pixel_values"])
    assert torch.equal(batch["image_sizes"], expected["image_sizes"])
    assert batch["batch_num_images"].tolist() == list(expected["batch_num_images"]) == [1, 1]


def test_collate_refuses_what_cannot_be_one_batch():
    model = tiny_model("llava_onevision")
    two, three = (tiny_inputs("llava_onevision", model, image=False, video_frames=n) for n in (2, 3))
    with pytest.raises(ValueError, match=r"pixel_values_videos .*same number of frames"):
        collate_inputs(model, [two, three])
    qwen = tiny_model("qwen2_5_omni")
    ids = {"input_ids": torch.tensor([[1, 2]])}
    with pytest.raises(ValueError, match="use_audio_in_video differs"):
        collate_inputs(qwen, [{**ids, "use_audio_in_video": True}, {**ids, "use_audio_in_video": False}])
    with pytest.raises(ValueError, match="at least one"):
        collate_inputs(qwen, [])


def test_collate_pads_with_the_pad_token_and_keeps_media_order():
    model = tiny_model("qwen2_vl")
    first = tiny_inputs("qwen2_vl", model, image=False, video_frames=2, question="First?")
    second = tiny_inputs("qwen2_vl", model, image=False, video_frames=4, question="Second, longer one?")
    batch = collate_inputs(model, [first, second])
    pad = batch["input_ids"].shape[1] - first["input_ids"].shape[1]
    assert batch["input_ids"][0, :pad].tolist() == [token_id("<|endoftext|>")] * pad
    assert batch["mm_token_type_ids"][0, :pad].tolist() == [0] * pad
    assert torch.equal(batch["video_grid_thw"], torch.cat([first["video_grid_thw"], second["video_grid_thw"]]))
    assert torch.equal(
        batch["pixel_values_videos"], torch.cat([first["pixel_values_videos"], second["pixel_values_videos"]])
    )
    custom = collate_inputs(model, [first, second], pad_token_id=7)
    assert custom["input_ids"][0, :pad].tolist() == [7] * pad
