"""The ragged-cache operations a stream needs: `relabel_tail` (pruned columns) and `pop` (undo appends)."""

from __future__ import annotations

import pytest
import torch

from omnipress.cache import RaggedLayer
from tests.sync_guard import no_host_sync


def _layers() -> list[RaggedLayer]:
    torch.manual_seed(0)
    keys, values = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    uniform = RaggedLayer.from_dense(keys, values, reserve=4)
    ragged = RaggedLayer.from_dense(keys, values, [torch.tensor([0, 2, 5]), torch.tensor([1, 3, 4, 5])], reserve=4)
    return [uniform, ragged]


def _state(layer: RaggedLayer) -> tuple:
    keys, values = layer.segments()
    return [k.clone() for k in keys], [v.clone() for v in values], [c.clone() for c in layer.head_positions()]


@pytest.mark.parametrize("which", [0, 1])
def test_pop_undoes_appends_without_a_host_sync(which):
    layer = _layers()[which]
    before, logical = _state(layer), layer.logical_length
    layer.append(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
    layer.append(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))  # a decode step
    assert layer.logical_length == logical + 4
    with no_host_sync():
        layer.pop(4)
    after = _state(layer)
    assert layer.logical_length == logical
    for a, b in zip([*before[0], *before[1], *before[2]], [*after[0], *after[1], *after[2]]):
        assert torch.equal(a, b)
    layer.append(torch.ones(1, 2, 2, 4), torch.ones(1, 2, 2, 4))  # the freed slots are reused
    assert [int(c[-1]) for c in layer.head_positions()] == [logical + 1] * 2
    layer.pop(2, logical_length=3)
    assert layer.logical_length == 3
    with pytest.raises(ValueError, match="cannot pop"):
        layer.pop(10)


@pytest.mark.parametrize("which", [0, 1])
def test_relabel_tail_gives_the_appended_entries_their_columns(which):
    layer = _layers()[which]
    heads_before = [c.clone() for c in layer.head_positions()]
    layer.append(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
    with no_host_sync():
        layer.relabel_tail(torch.tensor([7, 9, 12]), 13)
    assert layer.logical_length == 13
    for before, after in zip(heads_before, layer.head_positions()):
        assert torch.equal(after[: len(before)], before) and after[len(before) :].tolist() == [7, 9, 12]
    with pytest.raises(ValueError, match="cannot relabel"):
        layer.relabel_tail(torch.arange(20), 30)
