"""PackedLayer: ragged storage, appends, physical bytes, and exact attention over it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from omnipress.cache import PackedLayer, attention_path_closed, attention_path_opened, cache_kv_bytes
from omnipress.kv.attention import packed_attention


@pytest.fixture
def open_path():
    attention_path_opened()
    yield
    attention_path_closed()


def _dense(bsz=2, heads=3, seq=10, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(bsz, heads, seq, dim, generator=g), torch.randn(bsz, heads, seq, dim, generator=g)


def _ragged_keep(bsz, heads, seq, seed=1):
    g = torch.Generator().manual_seed(seed)
    keep = []
    for _ in range(bsz * heads):
        n = int(torch.randint(1, seq + 1, (1,), generator=g))
        keep.append(torch.randperm(seq, generator=g)[:n].sort().values)
    return keep


def test_from_dense_ragged_holds_exactly_the_kept_entries():
    k, v = _dense()
    keep = _ragged_keep(2, 3, 10)
    layer = PackedLayer.from_dense(k, v, keep)
    ks, vs = layer.segments()
    for seg, ix in enumerate(keep):
        b, h = divmod(seg, 3)
        assert torch.equal(ks[seg], k[b, h, ix])
        assert torch.equal(vs[seg], v[b, h, ix])
        assert torch.equal(layer.head_positions()[seg].long(), ix)
    total = sum(len(ix) for ix in keep)
    assert layer.kv_bytes() == 2 * total * 4 * 4  # keys + values, fp32, dim 4: no full-size tensor behind
    assert layer.get_seq_length() == 10 and not layer.is_uniform


def test_uniform_layer_is_a_dense_view():
    k, v = _dense()
    keep = torch.tensor([[1, 4, 7]]).expand(2, 3, 3)
    layer = PackedLayer.from_dense(k, v, keep)
    dk, dv = layer.dense()
    assert torch.equal(dk, k[:, :, [1, 4, 7]]) and torch.equal(dv, v[:, :, [1, 4, 7]])
    assert layer.kv_bytes() == 2 * 2 * 3 * 3 * 4 * 4


@pytest.mark.parametrize("ragged", [False, True])
def test_update_appends_to_every_head(open_path, ragged):
    k, v = _dense()
    keep = _ragged_keep(2, 3, 10) if ragged else torch.tensor([[0, 5]]).expand(2, 3, 2)
    layer = PackedLayer.from_dense(k, v, keep)
    before_k, _ = layer.segments()
    before_k = [t.clone() for t in before_k]
    nk, nv = _dense(seq=2, seed=5)
    layer.update(nk, nv)
    ks, vs = layer.segments()
    for seg in range(6):
        b, h = divmod(seg, 3)
        assert torch.equal(ks[seg][:-2], before_k[seg])
        assert torch.equal(ks[seg][-2:], nk[b, h]) and torch.equal(vs[seg][-2:], nv[b, h])
        assert layer.head_positions()[seg][-2:].tolist() == [10, 11]
    assert layer.get_seq_length() == 12


def test_update_outside_an_omnipress_context_is_refused():
    k, v = _dense()
    layer = PackedLayer.from_dense(k, v, torch.tensor([[0, 5]]).expand(2, 3, 2))
    with pytest.raises(RuntimeError, match="omnipress context"):
        layer.update(*_dense(seq=1))


def test_bad_shapes_are_refused():
    k, v = _dense()
    with pytest.raises(ValueError, match="batch_size"):
        PackedLayer(
            k[0, 0], v[0, 0], torch.tensor([10]), torch.arange(10), batch_size=2, num_heads=3, logical_length=10
        )
    with pytest.raises(ValueError, match="per-head index"):
        PackedLayer.from_dense(k, v, [torch.arange(3)])


class _Attn(nn.Module):
    def __init__(self, impl: str) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"_attn_implementation": impl})()
        self.num_key_value_groups = 2
        self.layer_idx = 0
        self.is_causal = True


def _reference(query, keys, values, positions, q_len, scaling):
    """Brute force: per query head, softmax over the head's entries with the causal rule on the new tokens."""
    bsz, q_heads, _, _ = query.shape
    kv_heads = len(keys) // bsz
    groups = q_heads // kv_heads
    out = torch.zeros(bsz, q_len, q_heads, values[0].shape[-1])
    for b in range(bsz):
        for hq in range(q_heads):
            seg = b * kv_heads + hq // groups
            k, v, pos = keys[seg], values[seg], positions[seg]
            for i in range(q_len):
                qpos = pos.max() - (q_len - 1 - i)
                vis = pos <= qpos
                w = torch.softmax((k[vis] @ query[b, hq, i]) * scaling, dim=0)
                out[b, i, hq] = w @ v[vis]
    return out


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("q_len", [1, 3])
def test_packed_attention_matches_brute_force(open_path, impl, ragged, q_len):
    k, v = _dense(bsz=2, heads=2, seq=12, dim=8)
    keep = _ragged_keep(2, 2, 12) if ragged else torch.tensor([[0, 3, 4, 9, 11]]).expand(2, 2, 5)
    layer = PackedLayer.from_dense(k, v, keep)
    nk, nv = _dense(bsz=2, heads=2, seq=q_len, dim=8, seed=9)
    layer.update(nk, nv)
    query = torch.randn(2, 4, q_len, 8, generator=torch.Generator().manual_seed(3))
    out, _ = packed_attention(_Attn(impl), query, layer, scaling=0.3)
    ks, vs = layer.segments()
    ref = _reference(query, ks, vs, layer.head_positions(), q_len, 0.3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_cache_kv_bytes_counts_packed_and_dense_layers():
    from transformers import DynamicCache

    cache = DynamicCache()
    k, v = _dense()
    cache.update(k, v, 0)
    cache.update(k, v, 1)
    assert cache_kv_bytes(cache) == 2 * 2 * k.numel() * 4
    cache.layers[1] = PackedLayer.from_dense(k, v, torch.tensor([[2]]).expand(2, 3, 1))
    assert cache_kv_bytes(cache) == 2 * k.numel() * 4 + 2 * 2 * 3 * 1 * 4 * 4


def _varlen_reference(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=False):
    """flash_attn_varlen_func's documented semantics in plain PyTorch (causal aligned to the bottom right)."""
    out = torch.empty(q.shape[0], q.shape[1], v.shape[-1])
    groups = q.shape[1] // k.shape[1]
    for s in range(len(cu_q) - 1):
        qs, ks = q[cu_q[s] : cu_q[s + 1]], k[cu_k[s] : cu_k[s + 1]]
        vs = v[cu_k[s] : cu_k[s + 1]]
        lq, lk = qs.shape[0], ks.shape[0]
        for h in range(q.shape[1]):
            logits = (qs[:, h] @ ks[:, h // groups].T) * softmax_scale
            if causal:
                allowed = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
                logits = logits.masked_fill(~allowed, float("-inf"))
            out[cu_q[s] : cu_q[s + 1], h] = logits.softmax(-1) @ vs[:, h // groups]
    return out


@pytest.mark.parametrize("q_len", [1, 3])
def test_flash_varlen_layout_matches_the_pytorch_path(open_path, q_len):
    """The flash-attn varlen call (layout, cu_seqlens, output order) checked with a CPU stand-in of the kernel."""
    from omnipress.kv.attention import _flash_varlen_attention

    k, v = _dense(bsz=2, heads=2, seq=12, dim=8)
    layer = PackedLayer.from_dense(k, v, _ragged_keep(2, 2, 12))
    layer.update(*_dense(bsz=2, heads=2, seq=q_len, dim=8, seed=9))
    query = torch.randn(2, 4, q_len, 8, generator=torch.Generator().manual_seed(3))
    got = _flash_varlen_attention(query, layer, 0.3, kernel=_varlen_reference)
    want, _ = packed_attention(_Attn("sdpa"), query, layer, scaling=0.3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
