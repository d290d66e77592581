"""Smoke test of `benchmarks/streaming_prefill.py` at a tiny size: it runs, and what it times is right."""

from __future__ import annotations

import pytest
import torch

from tests.benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def sp():
    with benchmark_module("streaming_prefill.py") as module:
        yield module


TINY = dict(llm_layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vision_hidden=32)


def test_the_benchmark_runs_at_a_tiny_size_and_reports_every_method(sp):
    result = sp.run_prefill_benchmark(
        frames=2, tokens_per_frame=8, chunk_frames=1, repeats=1, methods=["stc", "vidcom2"], shape=sp.Shape(**TINY)
    )
    summary = result["summary"]
    assert list(summary) == ["dense", "stc", "vidcom2"]
    assert result["settings"]["unpruned_tokens_per_frame"] == 196  # 384 px, patch 14: 27 x 27 pooled to 14 x 14
    assert summary["dense"]["tokens_per_frame"] == 196 and summary["stc"]["tokens_per_frame"] == 8
    assert summary["vidcom2"]["tokens_per_frame"] == 8  # one frame per chunk: its budget is the mean budget
    assert all(row["ms_per_frame"] > 0 for row in summary.values())
    assert len(result["raw"]["stc"]) == 1 and "| stc | 8 |" in sp.markdown(result)
    assert summary["dense"]["paired_change_vs_dense"] == 0.0
    with pytest.raises(ValueError, match="unknown methods"):
        sp.run_prefill_benchmark(frames=1, methods=["nope"])


@torch.no_grad()
def test_streamed_kept_tokens_equal_one_prefill_at_their_unpruned_positions(sp):
    model = sp.build_model(sp.Shape(**TINY), torch.device("cpu"), torch.float32)
    frames, times = sp.read_frames(3, 1.0)
    features = sp.video_features(model, frames, times)  # (3, 196, 64) of real frames
    assert features.shape == (3, 196, 64)
    lm = sp.get_adapter(model).language_model
    seen: list[torch.Tensor] = []
    handle = lm.register_forward_hook(lambda _m, _a, kw, out: seen.append(out.last_hidden_state), with_kwargs=True)
    try:
        pruner = sp.op.STCPruner(tokens_per_frame=10)
        stats = sp.stream_prefill(model, features, pruner, chunk_frames=1)
    finally:
        handle.remove()
    assert stats["tokens"] == 30 and stats["cache_length"] == 30 and stats["pruner_seconds"] > 0
    pruner.reset()
    indices = torch.cat([pruner.select(features[f : f + 1]) + 196 * f for f in range(3)], dim=1)  # (1, 30)
    kept = features.reshape(1, -1, 64)[:, indices[0]]
    whole = lm(inputs_embeds=kept, position_ids=indices).last_hidden_state
    torch.testing.assert_close(torch.cat(seen, dim=1), whole, rtol=1e-4, atol=1e-4)
