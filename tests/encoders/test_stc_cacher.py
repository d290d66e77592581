"""STC-Cacher inside the bare vision towers of every supported family, on real video frames.

Dense equivalence (`update_ratio=1`, `interval=1`), the brute-force reference (`reference.STCReference`) at r=0.25,
the per-layer recomputed counts, the gather/scatter (only dynamic rows reach the projections and the MLP), stream
state (continuity across calls, no leak, reset), threshold mode and bad input.
"""

from __future__ import annotations

import pytest
import torch

from omnipress.adapters import get_adapter
from omnipress.encoders import STCCacher
from omnipress.encoders.stc_select import num_dynamic

from .reference import STCReference
from .towers import TOWERS, assert_close_outputs, build_tower, frame_inputs

FRAMES = 4


@pytest.fixture(scope="module", params=TOWERS)
def tower_case(request):
    kind = request.param
    tower, vlm = build_tower(kind)
    args, kwargs = frame_inputs(kind, FRAMES)
    with torch.no_grad():
        dense = tower(*args, **kwargs)
    return kind, tower, vlm, args, kwargs, dense


def _run(tower, args, kwargs, cacher=None):
    with torch.no_grad():
        if cacher is None:
            return tower(*args, **kwargs)
        with cacher(tower):
            return tower(*args, **kwargs)


def _blocks(tower):
    return get_adapter(tower).vision_blocks


def _reference(tower, args, kwargs, **knobs):
    ref = STCReference(**knobs)
    handles = ref.hooks(tower, _blocks(tower))
    try:
        with torch.no_grad():
            out = tower(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out, ref


def _tokens(tower, args, kwargs) -> int:
    grid = kwargs.get("grid_thw")
    if grid is not None:
        return int(grid[0, 1] * grid[0, 2])
    config = tower.config
    return (config.image_size // config.patch_size) ** 2 + (config.model_type == "clip_vision_model")


def test_update_ratio_one_equals_the_dense_encoder(tower_case):
    _kind, tower, _, args, kwargs, dense = tower_case
    cacher = STCCacher(update_ratio=1.0, interval=2)
    assert_close_outputs(_run(tower, args, kwargs, cacher), dense)
    stats = cacher.stats
    assert stats.frames == FRAMES and stats.refresh_frames == FRAMES // 2
    tokens = _tokens(tower, args, kwargs)
    assert all(f.recomputed == [tokens] * len(_blocks(tower)) for f in stats.per_frame)


def test_interval_one_equals_the_dense_encoder(tower_case):
    _kind, tower, _, args, kwargs, dense = tower_case
    cacher = STCCacher(update_ratio=0.25, interval=1)
    assert_close_outputs(_run(tower, args, kwargs, cacher), dense)
    assert cacher.stats.refresh_frames == FRAMES and cacher.stats.recomputed_fraction == 1.0


def test_selective_frames_match_the_brute_force_reference(tower_case):
    _kind, tower, _, args, kwargs, dense = tower_case
    cacher = STCCacher(update_ratio=0.25, interval=2)
    out = _run(tower, args, kwargs, cacher)
    expected, ref = _reference(tower, args, kwargs, update_ratio=0.25, interval=2)
    assert_close_outputs(out, expected, rtol=1e-4, atol=1e-4)
    assert [f.recomputed for f in cacher.stats.per_frame] == ref.recomputed
    # and it is an approximation: the selective frames differ from the dense encoder
    assert not torch.allclose(out.last_hidden_state, dense.last_hidden_state, atol=1e-4)


def test_recomputed_tokens_per_layer_equal_the_ratio(tower_case):
    _kind, tower, _, args, kwargs, _ = tower_case
    layers, tokens = len(_blocks(tower)), _tokens(tower, args, kwargs)
    for ratio in (0.25, 0.5):
        cacher = STCCacher(update_ratio=ratio, interval=2)
        _run(tower, args, kwargs, cacher)
        m = num_dynamic(tokens, ratio)
        assert m == max(1, int(tokens * ratio))
        for frame in cacher.stats.per_frame:
            assert frame.tokens == tokens
            assert frame.recomputed == [tokens if frame.refresh else m] * layers
            assert frame.refresh == (frame.index % 2 == 0)
        assert cacher.stats.recomputed_per_layer == [2 * tokens + 2 * m] * layers
        assert cacher.stats.selective_fraction == pytest.approx(m / tokens)


def test_selective_frames_project_and_run_the_mlp_on_dynamic_rows_only(tower_case):
    """No dense compute behind a mask: on a selective frame the queries, values and MLP see `m` rows."""
    kind, tower, _vlm, args, kwargs, _ = tower_case
    block = _blocks(tower)[0]
    seen: dict[str, list[int]] = {"mlp": [], "q": []}
    fused = hasattr(block, "attn")
    query = block.attn.qkv if fused else block.self_attn.q_proj
    hooks = [
        block.mlp.register_forward_hook(lambda m, a, o: seen["mlp"].append(a[0].reshape(-1, a[0].shape[-1]).shape[0])),
        query.register_forward_hook(lambda m, a, o: seen["q"].append(a[0].reshape(-1, a[0].shape[-1]).shape[0])),
    ]
    try:
        cacher = STCCacher(update_ratio=0.25, interval=2)
        with cacher(tower), torch.no_grad():
            a0, k0 = frame_inputs(kind, 1, offset=0)
            tower(*a0, **k0)  # the refresh frame
            seen["mlp"].clear(), seen["q"].clear()
            a1, k1 = frame_inputs(kind, 1, offset=1)
            tower(*a1, **k1)  # a selective frame
    finally:
        for h in hooks:
            h.remove()
    tokens = _tokens(tower, args, kwargs)
    m = num_dynamic(tokens, 0.25)
    assert cacher.stats.per_frame[-1].refresh is False
    assert seen["mlp"] == [m]
    # the fused Qwen projection is split by the cacher (keys of every row through F.linear, q/v of m rows), so the
    # module itself is not called; SigLIP/CLIP call q_proj on the m dynamic rows only
    assert seen["q"] == ([] if fused else [m])


def test_frame_by_frame_calls_equal_one_call(tower_case):
    """The stream continues across calls: frames fed one by one give what one call with all of them gives."""
    kind, tower, _vlm, args, kwargs, _ = tower_case
    together = STCCacher(update_ratio=0.25, interval=2)
    expected = _run(tower, args, kwargs, together)
    one_by_one = STCCacher(update_ratio=0.25, interval=2)
    parts = []
    with one_by_one(tower), torch.no_grad():
        for n in range(FRAMES):
            a, k = frame_inputs(kind, 1, offset=n)
            parts.append(tower(*a, **k))
    cat = torch.cat([p.last_hidden_state for p in parts])
    torch.testing.assert_close(cat, expected.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert [f.refresh for f in one_by_one.stats.per_frame] == [f.refresh for f in together.stats.per_frame]
    assert one_by_one.frames_seen == FRAMES


def test_streams_do_not_leak_and_reset_starts_afresh(tower_case):
    kind, tower, _vlm, _args, _kwargs, _ = tower_case
    first = STCCacher(update_ratio=0.25, interval=2)
    a0, k0 = frame_inputs(kind, 1, offset=0)
    a1, k1 = frame_inputs(kind, 1, offset=1)
    with torch.no_grad():
        with first(tower):
            tower(*a0, **k0)
        # another stream on the same tower: its first frame is a refresh frame (dense), whatever `first` holds
        second = STCCacher(update_ratio=0.25, interval=2)
        with second(tower):
            fresh = tower(*a1, **k1)
        torch.testing.assert_close(fresh.last_hidden_state, tower(*a1, **k1).last_hidden_state)
        # `first` continues its own stream: frame 1 is selective against its frame 0
        with first(tower):
            cached = tower(*a1, **k1)
        assert first.stats.per_frame[-1].refresh is False and first.frames_seen == 2
        assert second.frames_seen == 1
        first.reset()
        assert first.frames_seen == 0 and first.stats.frames == 0
        with first(tower):
            after_reset = tower(*a1, **k1)
    assert first.stats.per_frame[0].refresh
    torch.testing.assert_close(after_reset.last_hidden_state, fresh.last_hidden_state)
    assert not torch.allclose(cached.last_hidden_state, fresh.last_hidden_state, atol=1e-4)


def test_threshold_mode_matches_the_reference(tower_case):
    _kind, tower, _, args, kwargs, _ = tower_case
    tokens = _tokens(tower, args, kwargs)
    for threshold in (0.99, -1.0):
        cacher = STCCacher(update_ratio=0.5, interval=2, mode="threshold", threshold=threshold)
        out = _run(tower, args, kwargs, cacher)
        expected, ref = _reference(
            tower, args, kwargs, update_ratio=0.5, interval=2, mode="threshold", threshold=threshold
        )
        assert_close_outputs(out, expected, rtol=1e-4, atol=1e-4)
        counts = [f.recomputed for f in cacher.stats.per_frame]
        assert counts == ref.recomputed
        selective = [c for f, c in zip(cacher.stats.per_frame, counts) if not f.refresh]
        assert all(0 <= n <= num_dynamic(tokens, 0.5) for c in selective for n in c)
        if threshold < -0.5:  # nothing is that dissimilar: selective frames recompute nothing
            assert all(n == 0 for c in selective for n in c)


def test_the_tower_is_restored_after_the_context(tower_case):
    _kind, tower, _, args, kwargs, dense = tower_case
    before = [(name, module) for name, module in tower.named_modules()]
    cacher = STCCacher()
    with pytest.raises(RuntimeError, match="boom"), cacher(tower):
        assert any(type(m).__name__ == "CachedAttention" for m in tower.modules())
        raise RuntimeError("boom")
    assert [(name, module) for name, module in tower.named_modules()] == before
    assert_close_outputs(_run(tower, args, kwargs), dense, rtol=0, atol=0)
