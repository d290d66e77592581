"""Decoding-time compression (`decode_budget`, `decode_every`): bounded memory, the right entries, exact decoding."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import omnipress as op
from omnipress.cache import RaggedLayer, generated_cache
from omnipress.core import Listener, Method
from omnipress.testing import tiny_batch_inputs, tiny_model

from . import reference_attention as ref

REF = "omnipress_test_decoding_reference"


@dataclass
class CacheRecorder(Method):
    """Records, before every language-model call, which cache columns each (row, head) of each layer holds."""

    stage = "tokens"
    exclusive = False
    steps: list[dict[int, list[set[int]]]] = field(default_factory=list)

    def attach(self, session):
        recorder = self

        class _Listener(Listener):
            def before_lm(self, session, call):
                state = {}
                for idx, layer in enumerate(getattr(call.cache, "layers", []) or []):
                    if isinstance(layer, RaggedLayer):
                        state[idx] = [set(p.tolist()) for p in layer.head_positions()]
                recorder.steps.append(state)

        return _Listener()


def _generate(model, inputs, n, **kwargs):
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )


@pytest.mark.parametrize(
    "press",
    [
        op.SnapKV(budget=24, window=4, decode_budget=30, decode_every=6),
        op.AdaKV(budget=24, window=4, decode_budget=30, decode_every=6),
        op.MixKV(op.AdaKV(budget=24, window=4, decode_budget=30, decode_every=6)),
        op.PyramidKV(budget=24, window=4, decode_budget=30, decode_every=6),
        op.H2O(budget=24, window=4, decode_budget=30, decode_every=6),
    ],
    ids=lambda p: p.name,
)
def test_memory_stays_bounded_and_decoding_is_exact(press):
    """Every step attends to exactly the entries the cache held then (a full-cache reference that hides the rest
    gives the same logits), and no head ever holds more than decode_budget + decode_every entries."""
    model = tiny_model("llama", attn_implementation="eager")
    batch = tiny_batch_inputs("llama", model, [{"question": "Tell me about the sea. " * 3}, {"question": "Hi there!"}])
    recorder = CacheRecorder()
    with op.compose(press, recorder)(model):
        out = _generate(model, batch, 30)
    states = recorder.steps[1:]  # before each decode step
    assert len(states) == 29 and press.report.decode_compressions == 4
    segments = 2 * 2 * 2  # rows x layers x kv heads
    held = [sum(len(s) for layer in state.values() for s in layer) for state in states]
    assert max(held) <= (30 + 6) * segments  # bounded, on average per head
    if press.name in ("SnapKV", "H2O"):  # uniform budgets: bounded in every head
        assert max(len(s) for state in states for layer in state.values() for s in layer) <= 30 + 6
    assert press.report.decode_entries_evicted > 0

    def reference(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        bsz, q_heads, q_len, _dim = query.shape
        kv_heads, kv_len = key.shape[1], key.shape[2]
        groups = q_heads // kv_heads
        logits = (query @ key.repeat_interleave(groups, 1).transpose(-1, -2)) * scaling
        allowed = torch.ones(bsz, q_heads, q_len, kv_len, dtype=torch.bool)
        if attention_mask is not None:
            allowed &= attention_mask[..., -kv_len:]
        if q_len == 1:  # a decode step: only what the compressed cache held, plus the new token
            width = batch["input_ids"].shape[1]
            held = states[kv_len - 1 - width][module.layer_idx]
            visible = torch.zeros(bsz, kv_heads, kv_len, dtype=torch.bool)
            for seg, columns in enumerate(held):
                visible[seg // kv_heads, seg % kv_heads, sorted(columns)] = True
            visible[..., -1] = True
            allowed &= visible.repeat_interleave(groups, 1).unsqueeze(2)
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
        return (probs @ value.repeat_interleave(groups, 1)).transpose(1, 2).contiguous(), None

    AttentionInterface.register(REF, reference)
    AttentionMaskInterface.register(REF, sdpa_mask)
    with ref.attention_as(model, REF):
        want = _generate(model, batch, 30)
    assert torch.equal(out.sequences, want.sequences)
    for a, b in zip(out.logits, want.logits):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_streaming_llm_at_decoding_keeps_sinks_window_and_the_most_recent():
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (1, 50), generator=torch.Generator().manual_seed(1))
    press = op.StreamingLLM(budget=20, window=4, sinks=2, decode_budget=16, decode_every=5)
    with press(model):
        out = _generate(model, {"input_ids": ids}, 11)
    for layer in generated_cache(out).layers:
        for columns in layer.head_positions():
            # prefill kept 0,1 + 46..49; the 10 decode steps append columns 50..59 and the last of them cuts the
            # cache back to the 2 sinks + the 14 most recent entries
            assert columns.tolist() == [0, 1, *range(46, 60)]


def test_a_decode_budget_that_covers_everything_changes_nothing():
    model = tiny_model("qwen2_vl")
    batch = tiny_batch_inputs("qwen2_vl", model, [{"image": True}, {"image": False, "question": "Why?"}])
    base = _generate(model, batch, 6)
    press = op.SnapKV(budget=10_000, window=4, decode_budget=5_000, decode_every=2)
    with press(model):
        out = _generate(model, batch, 6)
    assert torch.equal(out.sequences, base.sequences)
    assert all(torch.equal(a, b) for a, b in zip(out.logits, base.logits))
    assert press.report.decode_entries_evicted == 0


def test_decoding_compression_after_an_untouched_prefill():
    """The prefill fit the budget (nothing compressed); decoding still keeps the cache bounded."""
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (1, 20), generator=torch.Generator().manual_seed(2))
    press = op.SnapKV(budget=64, window=4, decode_budget=24, decode_every=4)
    with press(model):
        out = _generate(model, {"input_ids": ids}, 16)
    assert "nothing to compress" in press.report.note
    assert press.report.decode_compressions == 3  # 15 decode steps, one compression every 4
    assert all(isinstance(layer, RaggedLayer) and layer.max_length <= 28 for layer in generated_cache(out).layers)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 16, "window": 4, "decode_budget": 4}, "must exceed the observation window"),
        ({"budget": 16, "window": 4, "decode_budget": 0}, "positive integer"),
        ({"budget": 16, "window": 4, "decode_budget": 32, "decode_every": 0}, "decode_every"),
    ],
)
def test_bad_decoding_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        op.SnapKV(**kwargs)
