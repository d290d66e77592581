"""RaggedLayer: storage, in-place appends with growth, eviction, beams, accounting, and no host sync per step."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, EncoderDecoderCache

from omnipress.cache import RaggedLayer, cache_kept_bytes, cache_kv_bytes, page_size_for
from omnipress.kv.budgets import RaggedIndices

from ..sync_guard import HostSyncError, no_host_sync


def dense(bsz=2, heads=3, seq=10, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(bsz, heads, seq, dim, generator=g), torch.randn(bsz, heads, seq, dim, generator=g)


def ragged_keep(bsz, heads, seq, seed=1, minimum=1):
    g = torch.Generator().manual_seed(seed)
    keep = []
    for _ in range(bsz * heads):
        n = int(torch.randint(minimum, seq + 1, (1,), generator=g))
        keep.append(torch.randperm(seq, generator=g)[:n].sort().values)
    return keep


def check_contents(layer, keys, values, keep):
    """Every segment holds exactly keys[b, h, keep] in order, with their columns."""
    heads = layer.num_heads
    ks, vs = layer.segments()
    for seg, ix in enumerate(keep):
        b, h = divmod(seg, heads)
        assert torch.equal(ks[seg], keys[b, h, ix]) and torch.equal(vs[seg], values[b, h, ix])
        assert torch.equal(layer.head_positions()[seg].long(), ix)


def test_from_dense_ragged_holds_exactly_the_kept_entries():
    k, v = dense()
    keep = ragged_keep(2, 3, 10)
    layer = RaggedLayer.from_dense(k, v, keep)
    check_contents(layer, k, v, keep)
    assert not layer.is_uniform and layer.get_seq_length() == 10
    total = sum(len(ix) for ix in keep)
    assert layer.kept_per_head == [len(ix) for ix in keep]
    assert layer.kept_bytes() == 2 * total * 4 * 4
    page = layer.page_size
    assert all(c % page == 0 for c in layer.capacities)  # pages, so the CPU path reads the buffer without copies
    assert layer.kv_bytes() == 2 * sum(layer.capacities) * 4 * 4
    assert sum(layer.capacities) - total < len(keep) * page  # at most one partly used page per segment


def test_page_size_follows_the_lengths():
    assert page_size_for([1024] * 4) == 64
    assert page_size_for([20, 30]) == 4 and page_size_for([128]) == 8
    assert page_size_for([10_000]) == 256


def test_uniform_layer_is_a_view_of_its_buffers():
    k, v = dense()
    keep = torch.tensor([[1, 4, 7]]).expand(2, 3, 3)
    layer = RaggedLayer.from_dense(k, v, keep)
    dk, dv = layer.dense()
    assert layer.is_uniform
    assert torch.equal(dk, k[:, :, [1, 4, 7]]) and torch.equal(dv, v[:, :, [1, 4, 7]])
    assert dk.untyped_storage().data_ptr() == layer.keys.untyped_storage().data_ptr()  # no copy
    assert layer.kv_bytes() == layer.kept_bytes() == 2 * 2 * 3 * 3 * 4 * 4


def test_one_capacity_layer_is_a_masked_view_of_its_buffers():
    k, v = dense()  # (2, 3, seq, dim)
    keep = [torch.tensor(list(range(n))) for n in (1, 2, 3, 3, 2, 1)]
    layer = RaggedLayer.from_dense(k, v, keep, page_size=4)  # every segment: one 4-slot page
    assert layer.equal_capacity and not layer.is_uniform
    vk, vv, filled = layer.capacity_view()
    assert vk.shape[:3] == (2, 3, 4) and vk.untyped_storage().data_ptr() == layer.keys.untyped_storage().data_ptr()
    assert filled.sum(-1).flatten().tolist() == [1, 2, 3, 3, 2, 1]
    assert torch.equal(vk[filled], torch.cat([k[b, h, :n] for (b, h), n in zip(HEADS, [1, 2, 3, 3, 2, 1])]))
    assert torch.equal(vv[filled], torch.cat([v[b, h, :n] for (b, h), n in zip(HEADS, [1, 2, 3, 3, 2, 1])]))
    ragged = RaggedLayer.from_dense(k, v, keep, page_size=2)
    assert not ragged.equal_capacity
    with pytest.raises(ValueError, match="same capacity"):
        ragged.capacity_view()


HEADS = [(b, h) for b in range(2) for h in range(3)]


def test_key_mask_drops_left_padding():
    k, v = dense(bsz=2, heads=2, seq=6)
    mask = torch.tensor([[True] * 6, [False, False, True, True, True, True]]).unsqueeze(1)
    layer = RaggedLayer.from_dense(k, v, key_mask=mask)
    assert layer.kept_per_head == [6, 6, 4, 4]
    check_contents(layer, k, v, [torch.arange(6)] * 2 + [torch.arange(2, 6)] * 2)


@pytest.mark.parametrize("ragged", [False, True])
def test_appends_write_in_place_and_grow_geometrically(ragged):
    k, v = dense()
    keep = ragged_keep(2, 3, 10) if ragged else [torch.tensor([0, 5])] * 6
    layer = RaggedLayer.from_dense(k, v, keep)
    want_k = [k[b, h, ix] for b in range(2) for h in range(3) for ix in [keep[b * 3 + h]]]
    want_v = [v[b, h, ix] for b in range(2) for h in range(3) for ix in [keep[b * 3 + h]]]
    buffers, copies = layer.keys.data_ptr(), 0
    for step in range(40):
        q = 3 if step == 0 else 1
        nk, nv = dense(seq=q, seed=100 + step)
        layer.append(nk, nv)
        if layer.keys.data_ptr() != buffers:
            copies, buffers = copies + 1, layer.keys.data_ptr()
        for seg in range(6):
            b, h = divmod(seg, 3)
            want_k[seg] = torch.cat([want_k[seg], nk[b, h]])
            want_v[seg] = torch.cat([want_v[seg], nv[b, h]])
    ks, vs = layer.segments()
    for seg in range(6):
        assert torch.equal(ks[seg], want_k[seg]) and torch.equal(vs[seg], want_v[seg])
        assert layer.head_positions()[seg][-42:].tolist() == list(range(10, 52))
    assert layer.get_seq_length() == 52 and layer.is_uniform == (not ragged)
    assert 1 <= copies <= 10  # geometric growth: a few copies for 42 tokens, not one per token
    assert torch.equal(layer.lengths, torch.tensor([len(ix) + 42 for ix in keep], dtype=torch.int32))


def test_appending_and_ragged_attention_never_read_the_device_on_the_host():
    from omnipress.cache import ragged_attention

    k, v = dense(bsz=2, heads=2, seq=40, dim=8)
    for keep in (ragged_keep(2, 2, 40, minimum=20), None):
        layer = RaggedLayer.from_dense(k, v, keep)
        query = torch.randn(2, 4, 1, 8)
        with no_host_sync():
            for step in range(30):  # growth included
                layer.append(*dense(bsz=2, heads=2, seq=1, dim=8, seed=4 + step))
                ragged_attention(query, layer, scaling=0.3)
    with pytest.raises(HostSyncError), no_host_sync():
        layer.lengths.tolist()


def test_update_outside_an_omnipress_context_is_refused():
    k, v = dense()
    layer = RaggedLayer.from_dense(k, v, torch.tensor([[0, 5]]).expand(2, 3, 2))
    with pytest.raises(RuntimeError, match="omnipress context"):
        layer.update(*dense(seq=1))


def test_bad_shapes_are_refused():
    k, v = dense()
    with pytest.raises(ValueError, match="batch_size"):
        RaggedLayer.from_packed(
            k[0, 0], v[0, 0], torch.tensor([10]), torch.arange(10), batch_size=2, num_heads=3, logical_length=10
        )
    with pytest.raises(ValueError, match="per-head index"):
        RaggedLayer.from_dense(k, v, [torch.arange(3)])
    layer = RaggedLayer.from_dense(k, v)
    with pytest.raises(ValueError, match="kv heads"):
        layer.append(*dense(heads=2, seq=1))


@pytest.mark.parametrize("ragged", [False, True])
def test_reorder_cache_for_beams(ragged):
    k, v = dense(bsz=4, heads=2, seq=12)
    # two prompts x two beams: the beams of a prompt were compressed alike
    base = ragged_keep(2, 2, 12, seed=5) if ragged else [torch.tensor([1, 2, 8])] * 4
    keep = [base[0], base[1], base[0], base[1], base[2], base[3], base[2], base[3]]
    layer = RaggedLayer.from_dense(k, v, keep)
    layer.append(*dense(bsz=4, heads=2, seq=1, seed=6))
    before_k, _ = layer.segments()
    before_k = [t.clone() for t in before_k]
    layer.reorder_cache(torch.tensor([1, 1, 3, 2]))
    after_k, _ = layer.segments()
    for row, src in enumerate([1, 1, 3, 2]):
        for h in range(2):
            assert torch.equal(after_k[row * 2 + h], before_k[src * 2 + h])
    layer.append(*dense(bsz=4, heads=2, seq=1, seed=7))  # still decodable after the reorder


def test_reorder_between_rows_of_different_layouts_is_refused():
    k, v = dense(bsz=2, heads=1, seq=12)
    layer = RaggedLayer.from_dense(k, v, [torch.arange(3), torch.arange(9)])
    with pytest.raises(RuntimeError, match="beam"):
        layer.reorder_cache(torch.tensor([1, 0]))


def test_retain_evicts_on_a_live_cache():
    k, v = dense(bsz=1, heads=2, seq=12)
    layer = RaggedLayer.from_dense(k, v)
    layer.append(*dense(bsz=1, heads=2, seq=2, seed=8))
    layer.retain([torch.tensor([0, 5, 12, 13]), torch.tensor([1, 2])])
    assert layer.kept_per_head == [4, 2]
    assert [p.tolist() for p in layer.head_positions()] == [[0, 5, 12, 13], [1, 2]]
    assert layer.kept_bytes() == 6 * 2 * 4 * 4
    layer.append(*dense(bsz=1, heads=2, seq=1, seed=9))
    assert [p.tolist()[-1] for p in layer.head_positions()] == [14, 14]
    with pytest.raises(ValueError, match="lie in"):
        layer.retain([torch.tensor([0]), torch.tensor([3])])


def test_retain_where_and_crop():
    k, v = dense(bsz=1, heads=2, seq=12)
    layer = RaggedLayer.from_dense(k, v, [torch.arange(0, 12, 2), torch.arange(12)])
    layer.retain_where(lambda columns: (columns < 4) | (columns >= 8))  # drop a "frame" [4, 8)
    assert [p.tolist() for p in layer.head_positions()] == [[0, 2, 8, 10], [0, 1, 2, 3, 8, 9, 10, 11]]
    layer.crop(9)
    assert [p.tolist() for p in layer.head_positions()] == [[0, 2, 8], [0, 1, 2, 3, 8]]
    assert layer.get_seq_length() == 9


def test_batch_select_and_repeat_rows():
    k, v = dense(bsz=2, heads=2, seq=8)
    keep = ragged_keep(2, 2, 8, seed=11)
    layer = RaggedLayer.from_dense(k, v, keep)
    layer.batch_repeat_interleave(2)
    assert layer.batch_size == 4
    check_contents(
        layer, k.repeat_interleave(2, 0), v.repeat_interleave(2, 0), [keep[i] for i in (0, 1, 0, 1, 2, 3, 2, 3)]
    )
    layer.batch_select_indices(torch.tensor([3]))
    check_contents(layer, k[1:], v[1:], keep[2:])


def test_padded_right_aligned_view():
    k, v = dense(bsz=1, heads=2, seq=6)
    layer = RaggedLayer.from_dense(k, v, [torch.tensor([0, 3]), torch.tensor([1, 2, 4, 5])])
    keys, values, valid, columns = layer.padded(right_aligned=True)
    assert valid.tolist() == [[[False, False, True, True], [True, True, True, True]]]
    assert columns.tolist() == [[[-1, -1, 0, 3], [1, 2, 4, 5]]]
    assert torch.equal(keys[0, 0, 2:], k[0, 0, [0, 3]]) and torch.equal(values[0, 1], v[0, 1, [1, 2, 4, 5]])


def test_ragged_indices_and_tensor_keep_agree():
    k, v = dense(bsz=1, heads=2, seq=6)
    flat = torch.tensor([0, 3, 1, 2, 4])
    a = RaggedLayer.from_dense(k, v, RaggedIndices(flat=flat, lengths=torch.tensor([[2, 3]])))
    b = RaggedLayer.from_dense(k, v, [torch.tensor([0, 3]), torch.tensor([1, 2, 4])])
    assert torch.equal(a.keys, b.keys) and a.kept_per_head == b.kept_per_head


def test_cache_bytes_count_dense_ragged_and_cross_attention_layers():
    cache = DynamicCache()
    k, v = dense()
    cache.update(k, v, 0)
    cache.update(k, v, 1)
    assert cache_kv_bytes(cache) == cache_kept_bytes(cache) == 2 * 2 * k.numel() * 4
    cache.layers[1] = RaggedLayer.from_dense(k, v, torch.tensor([[2]]).expand(2, 3, 1))
    assert cache_kv_bytes(cache) == 2 * k.numel() * 4 + 2 * 2 * 3 * 1 * 4 * 4
    cross = DynamicCache()
    cross.update(k, v, 0)
    both = EncoderDecoderCache(cache, cross)
    assert cache_kv_bytes(both) == cache_kv_bytes(cache) + 2 * k.numel() * 4
    ragged = RaggedLayer.from_dense(k, v, ragged_keep(2, 3, 10))
    cross.layers[0] = ragged
    assert cache_kept_bytes(both) == cache_kept_bytes(cache) + ragged.kept_bytes()
    assert cache_kv_bytes(both) == cache_kv_bytes(cache) + ragged.kv_bytes()


def test_deepcopy_copies_the_buffers_but_not_the_session():
    import copy

    k, v = dense()
    layer = RaggedLayer.from_dense(k, v, ragged_keep(2, 3, 10))
    layer.session = object()  # stands for a live session (it holds the model: it must not be copied)
    twin = copy.deepcopy(layer)
    assert twin.session is None and twin.keys.data_ptr() != layer.keys.data_ptr()
    twin.append(*dense(seq=1, seed=3))
    assert twin.kept_per_head == [n + 1 for n in layer.kept_per_head]
    assert all(torch.equal(a[:-1], b) for a, b in zip(twin.segments()[0], layer.segments()[0]))


def test_remap_columns_renumbers_the_entries_of_each_row():
    k, v = dense(bsz=2, heads=2, seq=5)
    layer = RaggedLayer.from_dense(
        k, v, [torch.tensor([0, 2]), torch.tensor([1, 3, 4]), torch.arange(5), torch.tensor([4])]
    )
    table = torch.tensor([[3, 7, 9, 12, 20], [0, 1, 2, 30, 31]])  # where row b's columns sat in the full prompt
    layer.remap_columns(table, logical_length=40)
    assert [p.tolist() for p in layer.head_positions()] == [[3, 9], [7, 12, 20], [0, 1, 2, 30, 31], [31]]
    assert layer.get_seq_length() == 40
    layer.append(*dense(bsz=2, heads=2, seq=1, seed=2))
    assert [p.tolist()[-1] for p in layer.head_positions()] == [40] * 4
