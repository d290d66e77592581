"""The streaming session's own listener on the model: keeps the live cache ragged, labelled and compressed.

A `StreamingSession` enters `StreamHook` on its model (with its encoder-stage methods) for each append, question or
prompt, so the model is untouched between calls. Before each language-model call the session describes the call
(`CallPlan`); after each decoder layer's attention the listener

- turns a dense layer of a fresh cache into a `RaggedLayer` (one per `(row, KV head)` segment, cache columns stored),
- labels the appended entries with their columns in the unpruned sequence (`RaggedLayer.relabel_tail`) when a token
  pruner dropped some of them, so positions and evictions keep referring to the full stream,
- compresses the chunk's new entries with the session's KV press (`ChunkCompressor`),

and, before a layer's attention, may swap the layer for another (`before_attention`): the retrieval memory brings
offloaded frame blocks back this way, per layer, for the question being answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..cache.ragged import RaggedLayer
from ..core.method import Method
from ..core.session import Listener, ModelSession
from .compress import ChunkCompressor, ChunkPlan, per_head

#: `swap(layer_idx, query (1, q_heads, n, dim), layer) -> replacement or None`
SwapFn = Callable[[int, torch.Tensor, RaggedLayer], "RaggedLayer | None"]


@dataclass
class CallPlan:
    """One language-model call of the session.

    Attributes
    ----------
    columns:
        `(n,)` cache column of every new token (its index in the unpruned sequence).
    end:
        Logical length of the sequence after the call (columns seen, pruned ones included).
    contiguous:
        The columns are `start .. start + n - 1` (no pruned token among them): no relabelling needed.
    chunk:
        The press's plan for this chunk, or None (keep every new entry).
    reserve:
        Spare slots per segment when a layer is rebuilt (room for the next chunk without a copy).
    """

    columns: torch.Tensor
    end: int
    contiguous: bool = True
    chunk: ChunkPlan | None = None
    reserve: int = 0


class StreamListener(Listener):
    """See module docstring."""

    def __init__(self, session: ModelSession, compressor: ChunkCompressor | None) -> None:
        super().__init__()
        self.compressor = compressor
        self.call: CallPlan | None = None
        self.swap: SwapFn | None = None

    def before_attention(self, session: ModelSession, module: nn.Module, query: torch.Tensor, layer: Any) -> Any:
        if self.swap is None or not isinstance(layer, RaggedLayer):
            return None
        route = session.route_of(module)
        if route is None or route[0] != "self":
            return None
        return self.swap(route[1], query, layer)

    def after_attention(
        self,
        session: ModelSession,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kwargs: dict[str, Any],
        layer: Any,
    ) -> None:
        call = self.call
        if call is None or layer is None:
            return
        route = session.route_of(module)
        if route is None or route[0] != "self":
            return
        layer_idx = route[1]
        n = query.shape[2]
        keep = None
        if call.chunk is not None and self.compressor is not None:
            scaling = float(kwargs.get("scaling") or getattr(module, "scaling", query.shape[-1] ** -0.5))
            new_keys, new_values = key[:, :, -n:], value[:, :, -n:]  # (1, kv_heads, n, dim)
            keep = self.compressor.keep(call.chunk, layer_idx, query, new_keys, new_values, scaling)
        if not isinstance(layer, RaggedLayer):  # the first call on a fresh cache: `key` holds exactly the chunk
            ragged = RaggedLayer.from_dense(
                key,
                value,
                keep,
                positions=call.columns.to(key.device).view(1, 1, -1),
                logical_length=call.end,
                reserve=call.reserve,
            )
            session.replace_layer(module, ragged)
            return
        if not call.contiguous:
            layer.relabel_tail(call.columns, call.end)
        if keep is not None:
            retain_tail(layer, n, per_head(keep, layer.num_segments), reserve=call.reserve)


def retain_tail(layer: RaggedLayer, count: int, keep: list[torch.Tensor], *, reserve: int = 0) -> None:
    """Of the last `count` entries of every segment keep those at `keep[s]` (ascending indices into that tail);
    everything before the tail stays."""
    device = layer.device
    indices = []
    for length, tail in zip(layer.host_lengths, keep):
        old = length - count
        indices.append(torch.cat([torch.arange(old, device=device), old + tail.to(device).long()]))
    layer.retain(indices, reserve=reserve)


class StreamHook(Method):
    """The streaming session's method: one per model at a time (it owns the model's live stream cache)."""

    stage: ClassVar[str] = "stream"
    exclusive: ClassVar[bool] = True

    def __init__(self, compressor: ChunkCompressor | None = None) -> None:
        self.compressor = compressor
        self.listener: StreamListener | None = None

    @property
    def name(self) -> str:
        return "StreamingSession"

    def attach(self, session: ModelSession) -> Listener:
        self.listener = StreamListener(session, self.compressor)
        return self.listener
