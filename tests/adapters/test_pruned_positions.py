"""pruned_position_ids: the kept tokens run alone at these positions give the logits of the full prompt in which the
pruned tokens are hidden from attention."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from omnipress.adapters import PrunedPositions, get_adapter
from omnipress.testing import tiny_inputs, tiny_model

MEDIA = {
    "qwen2": {},
    "llava_onevision": dict(video_frames=2),
    "qwen2_audio": {},
    "qwen2_vl": dict(video_frames=4),
    "qwen2_5_vl": dict(video_frames=4),
    "qwen3_vl": dict(video_frames=4),
    "qwen2_5_omni": dict(video_frames=2, audio=True),
}
MROPE = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni")

#: the keep mask of the reference attention, `(seq,)` bool
PRUNED: dict[str, torch.Tensor] = {}


def pruned_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA over the full prompt where every query sees the causal past minus the pruned keys (and itself, so that
    rows of pruned queries are never empty)."""
    keep = PRUNED["keep"].to(query.device)
    seq = query.shape[-2]
    assert key.shape[-2] == seq == keep.shape[0]  # one full prompt, no cache
    causal = torch.ones(seq, seq, dtype=torch.bool, device=query.device).tril()
    itself = torch.eye(seq, dtype=torch.bool, device=query.device)
    allowed = causal & (keep[None, :] | itself)  # (q, k)
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, allowed[None, None], is_causal=False, **kwargs)


AttentionInterface.register("omnipress_test_pruned", pruned_sdpa)


def _keep_mask(seq_len: int, spans) -> torch.Tensor:
    """Drop every other media token and every third text token (never the first or the last token)."""
    keep = torch.arange(seq_len) % 3 != 1
    for span in spans.spans:
        keep[span.start : span.end] = torch.arange(span.length) % 2 == 0
    keep[0] = keep[-1] = True
    return keep


def _language_model_call(adapter, inputs):
    """The language model's keyword arguments and output states in a plain forward of the model."""
    captured = {}
    lm = adapter.language_model
    pre = lm.register_forward_pre_hook(lambda _m, _a, kw: captured.update(kwargs=dict(kw)), with_kwargs=True)
    post = lm.register_forward_hook(lambda _m, _a, out: captured.update(states=out.last_hidden_state))
    with torch.no_grad():
        adapter.model(**inputs, use_cache=False)
    pre.remove()
    post.remove()
    return captured["kwargs"], captured["states"]


@pytest.mark.parametrize("family", list(MEDIA))
def test_kept_tokens_at_their_positions_match_the_masked_full_prompt(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = tiny_inputs(family, model, **MEDIA[family])
    ids = inputs["input_ids"][0]
    spans = adapter.spans(**inputs)
    keep = _keep_mask(len(ids), spans)
    media = {k: v for k, v in inputs.items() if k != "input_ids"}
    pruned = adapter.pruned_position_ids(ids, keep, **media)
    kept = int(keep.sum())

    PRUNED["keep"] = keep
    adapter.text_config._attn_implementation = "omnipress_test_pruned"
    try:
        lm_kwargs, reference = _language_model_call(adapter, inputs)
    finally:
        adapter.text_config._attn_implementation = "sdpa"

    index = keep.nonzero().flatten()
    if family in MROPE:
        assert pruned.position_ids.shape == (4, 1, kept)
        model_positions = lm_kwargs["position_ids"][-3:]  # (3, 1, seq): what the model computed for the full prompt
        assert torch.equal(pruned.position_ids[1:], model_positions[:, :, index])
        assert torch.equal(pruned.position_ids[0, 0], index)
        assert pruned.rope_delta == int(adapter.rope_deltas()[0]) < 0
    else:
        assert pruned.position_ids.shape == (1, kept) and pruned.rope_delta == 0
    assert pruned.prompt_length == len(ids)

    embeds = lm_kwargs.get("inputs_embeds")
    if embeds is None:  # a text model's decoder embeds the ids itself
        embeds = adapter.language_model.embed_tokens(lm_kwargs["input_ids"])
    short = {
        "inputs_embeds": embeds[:, index],
        "position_ids": pruned.position_ids,
        "attention_mask": torch.ones(1, kept, dtype=torch.long),  # a full causal mask over the kept tokens
        "use_cache": False,
    }
    if lm_kwargs.get("visual_pos_masks") is not None:  # Qwen3-VL deepstack: keep the kept visual tokens' rows
        visual = lm_kwargs["visual_pos_masks"][0]
        short["visual_pos_masks"] = lm_kwargs["visual_pos_masks"][:, index]
        short["deepstack_visual_embeds"] = [d[keep[visual]] for d in lm_kwargs["deepstack_visual_embeds"]]
    with torch.no_grad():
        states = adapter.language_model(**short).last_hidden_state
    torch.testing.assert_close(states, reference[:, index], rtol=1e-4, atol=1e-5)
    # the same tokens at consecutive positions are a different computation: the test can fail
    naive = {**short, "position_ids": torch.arange(kept).view(1, 1, -1).expand(pruned.position_ids.shape[0], 1, -1)}
    if family not in MROPE:
        naive["position_ids"] = torch.arange(kept).unsqueeze(0)
    with torch.no_grad():
        wrong = adapter.language_model(**naive).last_hidden_state
    assert not torch.allclose(wrong, reference[:, index], atol=1e-3)


def test_generate_prefill_positions_and_indices_give_the_same_result():
    model = tiny_model("qwen2_vl")
    adapter = get_adapter(model)
    inputs = tiny_inputs("qwen2_vl", model, video_frames=4)
    ids = inputs["input_ids"][0]
    captured = []
    handle = model.register_forward_pre_hook(lambda _m, _a, kw: captured.append(kw), with_kwargs=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=1)
    handle.remove()
    keep = _keep_mask(len(ids), adapter.spans(**inputs))
    media = {k: v for k, v in inputs.items() if k != "input_ids"}
    from_grids = adapter.pruned_position_ids(ids, keep, **media)
    from_prefill = adapter.pruned_position_ids(ids, keep, position_ids=captured[0]["position_ids"])
    from_indices = adapter.pruned_position_ids(ids, keep.nonzero().flatten(), **media)
    assert torch.equal(from_grids.position_ids, from_prefill.position_ids)
    assert from_grids.rope_delta == from_prefill.rope_delta == int(adapter.rope_deltas()[0])
    assert torch.equal(from_indices.position_ids, from_grids.position_ids)
    # the text after the prompt continues from the unpruned length, as the model's own decode positions
    expected = adapter.continuation_position_ids(len(ids), 2)
    assert torch.equal(from_grids.continuation(2), expected)


def test_text_positions_and_errors():
    adapter = get_adapter(tiny_model("llama"))
    ids = torch.arange(10, 20)
    got = adapter.pruned_position_ids(ids, torch.tensor([0, 3, 9]))
    assert isinstance(got, PrunedPositions) and (got.rope_delta, got.prompt_length) == (0, 10)
    assert torch.equal(got.position_ids, torch.tensor([[0, 3, 9]]))
    assert torch.equal(got.continuation(2), torch.tensor([[10, 11]]))
    with pytest.raises(ValueError, match="sorted and unique"):
        adapter.pruned_position_ids(ids, torch.tensor([3, 1]))
    with pytest.raises(ValueError, match=r"in \[0, 10\)"):
        adapter.pruned_position_ids(ids, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="keep mask has 9 entries"):
        adapter.pruned_position_ids(ids, torch.ones(9, dtype=torch.bool))
    with pytest.raises(ValueError, match="no token"):
        adapter.pruned_position_ids(ids, torch.zeros(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="unpadded"):
        adapter.pruned_position_ids(ids, torch.tensor([5]), attention_mask=torch.tensor([0] + [1] * 9))
    qwen = get_adapter(tiny_model("qwen2_vl"))
    inputs = tiny_inputs("qwen2_vl", qwen.model)
    with pytest.raises(ValueError, match="need the grids"):
        qwen.pruned_position_ids(inputs["input_ids"], torch.tensor([0]))
    text = qwen.pruned_position_ids(torch.arange(5), torch.tensor([1, 4]))  # no media: plain positions
    assert text.position_ids[:, 0].tolist() == [[1, 4]] * 4 and text.rope_delta == 0
