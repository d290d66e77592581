"""Ragged attention: every backend against a brute-force reference (causal, cross, sliding window, GQA)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from omnipress.cache import RaggedLayer, ragged_attention, use_backend
from omnipress.cache.attention import _varlen_attention
from omnipress.core.dispatch import attend_ragged

from .test_ragged import dense, ragged_keep

CUDA = torch.cuda.is_available()


def reference(query, layer, q_len, scaling, *, causal=True, window=None):
    """Brute force: per query head, softmax over its KV head's visible entries."""
    bsz, q_heads, _, _ = query.shape
    heads = layer.num_heads
    groups = q_heads // heads
    keys, values = layer.segments()
    columns = layer.head_positions()
    out = torch.zeros(bsz, q_len, q_heads, values[0].shape[-1], dtype=torch.float64)
    for b in range(bsz):
        for hq in range(q_heads):
            seg = b * heads + hq // groups
            k, v, col = keys[seg].double(), values[seg].double(), columns[seg].long()
            n = k.shape[0]
            for i in range(q_len):
                visible = torch.ones(n, dtype=torch.bool)
                if causal:
                    visible &= torch.arange(n) <= n - q_len + i
                if window is not None:
                    visible &= col > layer.logical_length - q_len + i - window
                w = torch.softmax((k[visible] @ query[b, hq, i].double()) * scaling, dim=0)
                out[b, i, hq] = w @ v[visible]
    return out


def grown_layer(ragged, q_len, *, bsz=2, heads=2, seq=40, dim=8, seed=0):
    k, v = dense(bsz=bsz, heads=heads, seq=seq, dim=dim, seed=seed)
    keep = ragged_keep(bsz, heads, seq, seed=seed + 1, minimum=4) if ragged else None
    layer = RaggedLayer.from_dense(k, v, keep)
    layer.append(*dense(bsz=bsz, heads=heads, seq=q_len, dim=dim, seed=seed + 2))
    return layer


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("q_len", [1, 3])
@pytest.mark.parametrize("groups", [1, 3])
def test_torch_backend_matches_brute_force(ragged, q_len, groups):
    layer = grown_layer(ragged, q_len)
    query = torch.randn(2, 2 * groups, q_len, 8, generator=torch.Generator().manual_seed(3))
    got = ragged_attention(query, layer, scaling=0.3, backend="torch")
    torch.testing.assert_close(got.double(), reference(query, layer, q_len, 0.3), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_len", [1, 4])
def test_cross_attention_sees_every_entry(q_len):
    layer = RaggedLayer.from_dense(*dense(seq=20, dim=8), ragged_keep(2, 3, 20))
    query = torch.randn(2, 6, q_len, 8)
    got = ragged_attention(query, layer, scaling=0.5, causal=False, backend="torch")
    torch.testing.assert_close(got.double(), reference(query, layer, q_len, 0.5, causal=False), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_len", [1, 3])
def test_sliding_window_is_applied_from_the_stored_columns(q_len):
    layer = grown_layer(True, q_len)
    query = torch.randn(2, 4, q_len, 8)
    got = ragged_attention(query, layer, scaling=0.3, sliding_window=9)
    want = reference(query, layer, q_len, 0.3, window=9)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got.double(), reference(query, layer, q_len, 0.3), atol=1e-3)  # the window mattered
    with pytest.raises(ValueError, match="sliding window"):
        ragged_attention(query, layer, scaling=0.3, sliding_window=9, backend="varlen")


def test_low_precision_inputs():
    layer = grown_layer(True, 1)
    layer.keys, layer.values = layer.keys.bfloat16(), layer.values.bfloat16()
    query = torch.randn(2, 4, 1, 8).bfloat16()
    got = ragged_attention(query, layer, scaling=0.3)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), reference(query.float(), layer, 1, 0.3), atol=3e-2, rtol=3e-2)


def varlen_reference(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, causal, seqused_k):
    """The documented semantics of FlashAttention's varlen kernel with `seqused_k`, in plain PyTorch: sequence `s`
    has queries `q[cu_q[s]:cu_q[s+1]]` and keys `k[cu_k[s] : cu_k[s] + seqused_k[s]]`; causal is bottom-right
    aligned; query heads share KV heads in groups."""
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1])
    groups = q.shape[1] // k.shape[1]
    for s in range(len(cu_q) - 1):
        qs = q[cu_q[s] : cu_q[s + 1]]
        ks = k[cu_k[s] : cu_k[s] + seqused_k[s]]
        vs = v[cu_k[s] : cu_k[s] + seqused_k[s]]
        lq, lk = qs.shape[0], ks.shape[0]
        assert lq <= max_q and lk <= max_k
        for h in range(q.shape[1]):
            logits = (qs[:, h] @ ks[:, h // groups].T) * scale
            if causal:
                allowed = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
                logits = logits.masked_fill(~allowed, float("-inf"))
            out[cu_q[s] : cu_q[s + 1], h] = logits.softmax(-1) @ vs[:, h // groups]
    return out


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("q_len", [1, 3])
def test_varlen_call_layout_with_a_cpu_stand_in_of_the_kernel(ragged, q_len):
    """The varlen call (query packing, cu_seq_k = segment starts, seqused_k = lengths, output order) is right; the
    kernel itself runs in the GPU tests."""
    layer = grown_layer(ragged, q_len)
    query = torch.randn(2, 6, q_len, 8)
    got = _varlen_attention(query, layer, 0.3, True, varlen_reference)
    torch.testing.assert_close(got.double(), reference(query, layer, q_len, 0.3), atol=1e-5, rtol=1e-5)


class _Attn(nn.Module):
    def __init__(self, impl: str) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"_attn_implementation": impl})()
        self.num_key_value_groups = 2
        self.layer_idx = 0
        self.is_causal = True


@pytest.mark.parametrize("impl", ["sdpa", "eager", "flex_attention"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("q_len", [1, 3])
def test_dispatcher_attention_for_every_base_kernel(impl, ragged, q_len):
    """Uniform layers run the model's own sdpa/eager kernel on a dense view; the rest the ragged path."""
    layer = grown_layer(ragged, q_len)
    query = torch.randn(2, 4, q_len, 8)
    got, _ = attend_ragged(_Attn(impl), query, layer, {"scaling": 0.3})
    torch.testing.assert_close(got.double(), reference(query, layer, q_len, 0.3), atol=1e-5, rtol=1e-5)


def test_unsupported_attention_arguments_are_refused():
    layer = grown_layer(True, 1)
    with pytest.raises(ValueError, match="softcap"):
        attend_ragged(_Attn("sdpa"), torch.randn(2, 4, 1, 8), layer, {"scaling": 0.3, "softcap": 30.0})


def test_backend_choice_is_validated_and_scoped():
    layer = grown_layer(True, 1)
    query = torch.randn(2, 4, 1, 8)
    with pytest.raises(ValueError, match="unknown ragged attention backend"):
        ragged_attention(query, layer, backend="triton")
    with use_backend("torch"):
        got = ragged_attention(query, layer, scaling=0.3)
    torch.testing.assert_close(got.double(), reference(query, layer, 1, 0.3), atol=1e-5, rtol=1e-5)
    if not CUDA:
        with pytest.raises(RuntimeError, match="varlen"):
            ragged_attention(query, layer, backend="varlen")  # CPU tensors: the kernel is CUDA-only


# -- GPU ---------------------------------------------------------------------------------------------------------
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@gpu
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("q_len", [1, 5])
def test_varlen_kernel_matches_the_torch_path_on_gpu(ragged, q_len):
    layer = grown_layer(ragged, q_len, heads=4, seq=300, dim=128)
    cuda = RaggedLayer.from_packed(
        torch.cat(layer.segments()[0]).cuda().bfloat16(),
        torch.cat(layer.segments()[1]).cuda().bfloat16(),
        layer.host_lengths,
        torch.cat(layer.head_positions()).cuda(),
        batch_size=2,
        num_heads=4,
        logical_length=layer.logical_length,
    )
    query = torch.randn(2, 28, q_len, 128, device="cuda", dtype=torch.bfloat16)
    fast = ragged_attention(query, cuda, scaling=128**-0.5, backend="varlen")
    slow = ragged_attention(query.float(), _to_float(cuda), scaling=128**-0.5, backend="torch")
    torch.testing.assert_close(fast.float(), slow, atol=2e-2, rtol=2e-2)


def _to_float(layer):
    layer.keys, layer.values = layer.keys.float(), layer.values.float()
    return layer


@gpu
def test_gpu_decode_steps_do_not_sync():
    layer = grown_layer(True, 1, heads=4, seq=300, dim=128)
    cuda = RaggedLayer.from_packed(
        torch.cat(layer.segments()[0]).cuda().bfloat16(),
        torch.cat(layer.segments()[1]).cuda().bfloat16(),
        layer.host_lengths,
        torch.cat(layer.head_positions()).cuda(),
        batch_size=2,
        num_heads=4,
        logical_length=layer.logical_length,
        reserve=64,
    )
    query = torch.randn(2, 28, 1, 128, device="cuda", dtype=torch.bfloat16)
    new = torch.randn(2, 4, 1, 128, device="cuda", dtype=torch.bfloat16)
    ragged_attention(query, cuda)  # builds cached metadata
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(8):
            cuda.append(new, new)
            ragged_attention(query, cuda)
    finally:
        torch.cuda.set_sync_debug_mode("default")
