"""`with pruner(model): model.generate(...)` on an offline real video (tiny models, fp32, greedy).

The reference is the untouched model with the pruned tokens hidden from every query (`reference.hidden_tokens`):
same positions, masks and cache, so a pruner that drops the tokens, keeps the others at their original positions
and renumbers its cache right gives the same tokens.
"""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.adapters import get_adapter
from omnipress.cache import RaggedLayer
from omnipress.encoders import STCCacher
from omnipress.generation import build_inputs
from omnipress.testing import (
    DEFAULT_VIDEO_FRAME_SIZE,
    VIDEO_FRAME_SIZES,
    data_dir,
    tiny_batch_inputs,
    tiny_inputs,
    tiny_model,
    tiny_processor,
)

from .reference import assert_same_generation, generate_with_scores, greedy, hidden_tokens

VIDEO_FAMILIES = ("llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
MROPE = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def _video_prompt(family: str, model, frames: int = 4, **kwargs):
    return tiny_inputs(family, model, image=False, video_frames=frames, **kwargs)


def _prefill_lm_kwargs(model, inputs) -> dict:
    """The keyword arguments the language model receives at the prefill of `generate` (after any pruner)."""
    captured: list[dict] = []
    lm = get_adapter(model).language_model
    handle = lm.register_forward_pre_hook(lambda _m, _a, kw: captured.append(dict(kw)), with_kwargs=True)
    try:
        greedy(model, inputs, 1)
    finally:
        handle.remove()
    return captured[0]


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_kept_tokens_enter_the_language_model_at_their_unpruned_positions(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = _video_prompt(family, model)
    full = _prefill_lm_kwargs(model, inputs)
    pruner = op.STCPruner(tokens_per_frame=5)
    with pruner(model):
        short = _prefill_lm_kwargs(model, inputs)
    keep = pruner.report.keep[0]
    index = keep.nonzero().flatten()
    assert pruner.report.pruned and short["inputs_embeds"].shape[1] == index.numel()
    media = {k: v for k, v in inputs.items() if k != "input_ids"}
    expected = adapter.pruned_position_ids(inputs["input_ids"][0], keep, **media)
    if family in MROPE:
        assert short["position_ids"].shape == (4, 1, index.numel())  # text index row + 3 M-RoPE rows
    else:
        assert short["position_ids"].shape == (1, index.numel())
    assert torch.equal(short["position_ids"], expected.position_ids)
    torch.testing.assert_close(short["inputs_embeds"], full["inputs_embeds"][:, index], rtol=0, atol=0)
    assert torch.equal(short["attention_mask"], torch.ones(1, index.numel(), dtype=short["attention_mask"].dtype))
    # per frame: k tokens kept, ascending inside the frame (LLaVA-OneVision's closing newline is kept on top)
    report = pruner.report
    assert all(after == 5 for after in report.frame_tokens_after[0][:-1])
    assert report.frame_tokens_after[0][-1] == 5 + (family == "llava_onevision")
    if family == "llava_onevision":
        newline = int((inputs["input_ids"][0] == adapter.modality_token_ids["video"]).nonzero().max())
        assert bool(keep[newline])


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
@pytest.mark.parametrize("strategy", ["gaussian", "dual_anchor"])
def test_generate_equals_the_model_with_the_pruned_tokens_hidden(family, strategy):
    model = tiny_model(family)
    inputs = _video_prompt(family, model)
    pruner = op.STCPruner(tokens_per_frame=6, strategy=strategy)
    with pruner(model):
        out = generate_with_scores(model, inputs, 6)
    assert pruner.report.pruned
    assert_same_generation(model, inputs, pruner.report.keep, out)


@pytest.mark.parametrize(
    "pruner",
    [
        op.VidCom2Pruner(tokens_per_frame=6),
        op.DivPrunePruner(tokens_per_frame=6),
        op.UniformPruner(5),
        op.RandomPruner(7),
    ],
    ids=lambda p: p.name,
)
def test_baselines_under_generate_equal_the_model_with_the_pruned_tokens_hidden(pruner):
    model = tiny_model("qwen2_vl")
    inputs = _video_prompt("qwen2_vl", model, frames=6)
    with pruner(model):
        out = generate_with_scores(model, inputs, 6)
    assert pruner.report.pruned
    assert_same_generation(model, inputs, pruner.report.keep, out)


def test_visionzip_under_generate_writes_its_merged_contextual_tokens():
    family = "llava_onevision"
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = _video_prompt(family, model)
    pruner = op.VisionZipPruner(tokens_per_frame=6, contextual=2)
    with pruner(model):
        out = greedy(model, inputs, 6)

    per_frame = adapter.tokens_per_video_frame
    start = int((inputs["input_ids"][0] == adapter.modality_token_ids["video"]).nonzero().min())
    expected_keep = pruner.report.keep.clone()

    def merged(features: torch.Tensor) -> torch.Tensor:  # (4 * P + 1, D) of the one video
        frames = features[:-1].view(4, per_frame, -1)
        selection = op.VisionZipPruner(tokens_per_frame=6, contextual=2).compress(frames)
        replaced = features.clone()
        for f in range(4):
            replaced[f * per_frame + selection.indices[f]] = selection.features[f]
            columns = start + f * per_frame + selection.indices[f]
            assert bool(expected_keep[0, columns].all())
        return replaced

    with hidden_tokens(model, pruner.report.keep), adapter.register_feature_hook("video", merged):
        reference = greedy(model, inputs, 6)
    assert torch.equal(out, reference)


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_keeping_every_token_is_bit_identical_to_the_untouched_model(family):
    model = tiny_model(family)
    inputs = _video_prompt(family, model)
    kwargs = {"max_new_tokens": 5, "do_sample": False, "return_dict_in_generate": True, "output_scores": True}
    with torch.no_grad():
        base = model.generate(**inputs, **kwargs)
    pruners = [op.STCPruner(tokens_per_frame=10_000)]
    if family in ("llava_onevision", "qwen2_vl"):  # the other pruners share the keep-whole path: two families suffice
        pruners += [op.VidCom2Pruner(10_000), op.VisionZipPruner(10_000)]
    for pruner in pruners:
        with torch.no_grad(), pruner(model):
            out = model.generate(**inputs, **kwargs)
        assert torch.equal(out.sequences, base.sequences)
        assert all(torch.equal(a, b) for a, b in zip(out.scores, base.scores))
        assert not pruner.report.pruned and pruner.report.video_tokens_before > 0
        assert not any(isinstance(layer, RaggedLayer) for layer in out.cache.layers)


@pytest.mark.parametrize("press_first", [False, True])
def test_a_composed_video_press_plans_on_the_pruned_prompt(press_first):
    family = "qwen2_vl"
    model = tiny_model(family)
    inputs = _video_prompt(family, model, frames=6)
    pruner = op.STCPruner(tokens_per_frame=8)
    press = op.SnapKV(budget=10, window=4, scope="video")
    methods = (press, pruner) if press_first else (pruner, press)
    with torch.no_grad(), op.compose(*methods)(model):
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    keep = pruner.report.keep[0]
    length = inputs["input_ids"].shape[1]
    # the press saw the pruned prompt: its tokens, and its video tokens where the pruner put them
    assert press.report.row_tokens == [int(keep.sum())]
    assert press.report.modality_tokens == pruner.report.modality_tokens_after
    heads = get_adapter(model).num_key_value_heads
    text = pruner.report.modality_tokens_after["text"]
    for stats in press.report.layers:
        assert stats.kept_by_modality["text"] == text * heads  # scope "video": all text kept
        assert stats.kept_by_modality["video"] == (10 - 4) * heads  # the budget minus the window
    # the cache holds unpruned columns: every kept text column, no pruned column, then the generated tokens
    text_columns = set(
        (keep & (inputs["input_ids"][0] != get_adapter(model).modality_token_ids["video"])).nonzero().flatten().tolist()
    )
    for layer in out.cache.layers:
        assert isinstance(layer, RaggedLayer) and layer.get_seq_length() == length + 3
        for columns in layer.head_positions():
            stored = set(columns.tolist())
            assert text_columns <= stored
            assert all(c >= length or bool(keep[c]) for c in stored)
            assert {length, length + 1, length + 2} <= stored
    with torch.no_grad(), op.compose(*reversed(methods))(model):
        again = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(again, out.sequences)


@pytest.mark.parametrize(
    ("family", "prompts"),
    [
        ("qwen2_vl", [dict(image=False, video_frames=4), dict(image=True, video_frames=6, question="Which one?")]),
        (
            "llava_onevision",
            [
                dict(image=False, video_frames=4, question="What happens in the street?"),
                dict(image=False, video_frames=4),
            ],
        ),
    ],
)
def test_batches_prune_each_row_on_its_own(family, prompts):
    model = tiny_model(family)
    batch = tiny_batch_inputs(family, model, prompts)
    pruner = op.STCPruner(tokens_per_frame=5)
    with pruner(model):
        out = generate_with_scores(model, batch, 5)
    report = pruner.report
    assert [len(row) for row in report.frame_tokens_after] == [len(row) for row in report.frame_tokens_before]
    assert_same_generation(model, batch, report.keep, out)
    out = out[0]
    for row, prompt in enumerate(prompts):
        with pruner(model):
            alone = greedy(model, tiny_inputs(family, model, **prompt), 5)
        assert torch.equal(out[row : row + 1], alone)
        assert pruner.report.frame_tokens_after[0] == report.frame_tokens_after[row]


def test_prompts_without_video_and_models_without_video_input():
    model = tiny_model("qwen2_vl")
    inputs = tiny_inputs("qwen2_vl", model, image=True)
    pruner = op.STCPruner(tokens_per_frame=2)
    base = greedy(model, inputs, 3)
    with pruner(model):
        assert torch.equal(greedy(model, inputs, 3), base)
    assert not pruner.report.pruned and pruner.report.frame_tokens_before == []
    with pytest.raises(ValueError, match="no video input"), pruner(tiny_model("llava")):
        pass
    with pytest.raises(ValueError, match="tokens-stage"), op.compose(pruner, op.UniformPruner())(model):
        pass


@pytest.mark.parametrize("chunk_frames", [1, 2])
def test_chunk_frames_feeds_the_video_to_the_stream_memory_chunk_by_chunk(chunk_frames):
    family = "llava_onevision"
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = _video_prompt(family, model)
    embeds = _prefill_lm_kwargs(model, inputs)["inputs_embeds"][0]  # (seq, D) of the untouched prefill
    per_frame = adapter.tokens_per_video_frame
    start = int((inputs["input_ids"][0] == adapter.modality_token_ids["video"]).nonzero().min())
    frames = embeds[start : start + 4 * per_frame].view(4, per_frame, -1)
    reference = op.STCPruner(tokens_per_frame=5, chunk_frames=chunk_frames)
    expected = torch.cat([reference.select(frames[f : f + chunk_frames]) for f in range(0, 4, chunk_frames)])
    pruner = op.STCPruner(tokens_per_frame=5, chunk_frames=chunk_frames)
    pruner.select(frames[:1])  # stale memory of another stream: generate must reset it first
    with pruner(model):
        greedy(model, inputs, 1)
    keep = pruner.report.keep[0]
    for f in range(4):
        columns = start + f * per_frame + torch.arange(per_frame)
        assert keep[columns].nonzero().flatten().tolist() == expected[f].tolist()
    assert pruner.memory_chunks == 4 // chunk_frames
    whole = op.STCPruner(tokens_per_frame=5, chunk_frames=4).select(frames)
    assert not torch.equal(whole, expected)  # the chunking matters: the knob is really used


def test_real_video_read_with_read_video_prunes_like_the_hidden_token_reference():
    family = "qwen2_5_vl"
    model = tiny_model(family)
    pairs = list(op.read_video(data_dir() / "video" / "tree.avi", fps=1.0, max_frames=4))
    assert len(pairs) == 4 and pairs[1][0] > pairs[0][0]
    size = VIDEO_FRAME_SIZES.get(family, DEFAULT_VIDEO_FRAME_SIZE)
    inputs = build_inputs(model, tiny_processor(family, model), text="What moves?", video=pairs, video_size=size)
    pruner = op.STCPruner(tokens_per_frame=4)
    with pruner(model):
        out = generate_with_scores(model, inputs, 5)
    report = pruner.report
    assert report.frame_tokens_after == [[4] * len(report.frame_tokens_before[0])]
    assert report.video_tokens_before == sum(report.frame_tokens_before[0]) > report.video_tokens_after
    assert_same_generation(model, inputs, report.keep, out)


def test_composes_with_the_stc_cacher_in_the_encoder():
    family = "llava_onevision"
    model = tiny_model(family)
    inputs = _video_prompt(family, model)
    cacher = STCCacher(update_ratio=0.25, interval=2)
    pruner = op.STCPruner(tokens_per_frame=5)
    with cacher(model), pruner(model):
        out = generate_with_scores(model, inputs, 5)
    assert pruner.report.pruned and cacher.stats.frames > 0
    cacher.reset()
    with cacher(model):  # the reference: the cached encoder's features, the pruned tokens hidden
        assert_same_generation(model, inputs, pruner.report.keep, out)
    cacher.reset()
    with cacher(model):
        cached = _prefill_lm_kwargs(model, inputs)["inputs_embeds"]
    dense = _prefill_lm_kwargs(model, inputs)["inputs_embeds"]
    assert not torch.equal(cached, dense)  # the cacher really changed the features the pruner scored


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_images_true_prunes_every_image_as_a_one_frame_stream(family):
    model = tiny_model(family)
    frames = 4 if family == "qwen2_vl" else 0
    inputs = tiny_inputs(family, model, image=True, video_frames=frames)
    pruner = op.STCPruner(tokens_per_frame=5, images=True)
    with pruner(model):
        out = generate_with_scores(model, inputs, 5)
    report = pruner.report
    assert report.modality_tokens_after["image"] == 5 < report.modality_tokens_before["image"]
    assert report.frame_tokens_after == [[5] * (frames // 2)]  # the video frames as before (none for LLaVA-1.5)
    assert_same_generation(model, inputs, report.keep, out)
    if family != "qwen2_vl":
        return
    with pruner(model):  # the image's own tokens decide, as a stream of one frame
        greedy(model, inputs, 1)
    image = get_adapter(model).modality_token_ids["image"]
    columns = (inputs["input_ids"][0] == image).nonzero().flatten()
    features = _prefill_lm_kwargs(model, inputs)["inputs_embeds"][0, columns]
    expected = columns[op.STCPruner(tokens_per_frame=5).select(features.unsqueeze(0))[0]]
    assert pruner.report.keep[0, columns].sum() == 5 and bool(pruner.report.keep[0, expected].all())


def test_images_true_refuses_any_resolution_tiles():
    with pytest.raises(ValueError, match="any-resolution"), op.STCPruner(images=True)(tiny_model("llava_onevision")):
        pass
    with pytest.raises(ValueError, match="images=True"), op.STCPruner()(tiny_model("llava")):
        pass
    with pytest.raises(ValueError, match="images must be"):
        op.UniformPruner(images=1)


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
def test_a_plain_forward_returns_the_kept_tokens_outputs(family):
    model = tiny_model(family)
    inputs = _video_prompt(family, model)
    pruner = op.VisionZipPruner(tokens_per_frame=4, contextual=0)  # no merging: the reference can hide tokens
    with torch.no_grad(), pruner(model):
        logits = model(**inputs).logits
    keep = pruner.report.keep
    assert logits.shape[:2] == (1, int(keep.sum()))
    with torch.no_grad(), hidden_tokens(model, keep):
        reference = model(**inputs).logits[keep].unsqueeze(0)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
