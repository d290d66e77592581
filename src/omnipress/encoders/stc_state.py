"""STC-Cacher's per-stream state: frame counter, per-layer references, the plan of the current encoder call, stats.

One `StreamState` per stream, owned by the `STCCacher` object (never module globals): two cachers never share one,
and `STCCacher.reset()` replaces it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch


@dataclass
class LayerReference:
    """What a reference (refresh) frame left at one encoder layer, each `(tokens, dim)`.

    `key` is compared with the keys of later frames (rotated keys for the Qwen towers: the same rotation at the same
    patch position leaves the cosine unchanged); `value` stands in for the values of static tokens; `attn` and `mlp`
    are the attention- and MLP-branch outputs the static tokens add to their own residual.
    """

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    attn: torch.Tensor | None = None
    mlp: torch.Tensor | None = None


@dataclass
class FrameStats:
    """What one frame recomputed: `recomputed[l]` of its `tokens` tokens at encoder layer `l`."""

    index: int  # position of the frame in the stream (0 after reset)
    refresh: bool
    tokens: int
    recomputed: list[int]

    @property
    def fraction(self) -> float:
        """Recomputed share of the frame's token-layers."""
        return sum(self.recomputed) / max(1, self.tokens * len(self.recomputed))


@dataclass
class CacherStats:
    """Per-frame record of the stream since the last `reset()` (`cacher.stats`)."""

    per_frame: list[FrameStats] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.per_frame)

    @property
    def refresh_frames(self) -> int:
        return sum(f.refresh for f in self.per_frame)

    @property
    def recomputed_per_layer(self) -> list[int]:
        """Tokens recomputed at each layer, summed over frames."""
        if not self.per_frame:
            return []
        return [sum(col) for col in zip(*(f.recomputed for f in self.per_frame))]

    @property
    def recomputed_fraction(self) -> float:
        """Recomputed share of all token-layers (refresh frames count fully)."""
        total = sum(f.tokens * len(f.recomputed) for f in self.per_frame)
        return sum(sum(f.recomputed) for f in self.per_frame) / max(1, total)

    @property
    def selective_fraction(self) -> float:
        """Recomputed share of the token-layers of the selective frames only (`update_ratio` in ratio mode)."""
        frames = [f for f in self.per_frame if not f.refresh]
        total = sum(f.tokens * len(f.recomputed) for f in frames)
        return sum(sum(f.recomputed) for f in frames) / max(1, total)


@dataclass
class Frame:
    """One frame of an encoder call: its rows in the packed token rows of the call, and its role."""

    index: int  # in the stream
    signature: Hashable  # frames with equal signatures have aligned patch positions (same size)
    refresh: bool
    source: int | None  # selective frames: call position of the reference frame, None = the stored reference
    start: int = 0  # first row
    tokens: int = 0  # rows


@dataclass
class CallPlan:
    """The frames of one encoder call, planned before it runs (`plan_call`) and bound to rows at the first layer."""

    frames: list[Frame]
    packed: bool  # Qwen towers: rows are given by the grids; SigLIP/CLIP: frame = batch entry, bound at layer 0
    recomputed: list[list[int]] = field(default_factory=list)  # per frame, per layer
    saved_references: list[LayerReference | None] = field(default_factory=list)  # to roll back a failed call
    _groups: list[list[int]] | None = None
    _cu: dict[int, tuple[torch.Tensor, list[int]]] = field(default_factory=dict)

    def bind(self, rows: int, tokens: int | None) -> None:
        """Give batch-entry frames their rows (`tokens` each) and check the rows add up."""
        if not self.packed and tokens is not None and (not self.frames or self.frames[0].tokens != tokens):
            for j, frame in enumerate(self.frames):
                frame.start, frame.tokens = j * tokens, tokens
        if sum(f.tokens for f in self.frames) != rows:
            raise ValueError(
                f"STC-Cacher planned {len(self.frames)} frames of {[f.tokens for f in self.frames]} tokens but the "
                f"encoder layer received {rows} token rows"
            )

    @property
    def groups(self) -> list[list[int]]:
        """Call positions of the frames, grouped by signature (each group is processed as one batch)."""
        if self._groups is None:
            by_signature: dict[Hashable, list[int]] = {}
            for j, frame in enumerate(self.frames):
                by_signature.setdefault((frame.signature, frame.tokens), []).append(j)
            self._groups = list(by_signature.values())
        return self._groups

    def segment_bounds(self, frame: Frame, cu_seqlens: torch.Tensor | None) -> list[int]:
        """Attention segments inside `frame` from the block's `cu_seqlens` (`[0, tokens]`: the frame is one)."""
        if cu_seqlens is None:
            return [0, frame.tokens]
        key = id(cu_seqlens)
        if key not in self._cu:  # keep the tensor alive so that its id stays unique during the call
            self._cu[key] = (cu_seqlens, [int(v) for v in cu_seqlens.tolist()])
        edges = self._cu[key][1]
        stop = frame.start + frame.tokens
        bounds = [v - frame.start for v in edges if frame.start <= v <= stop]
        if not bounds or bounds[0] != 0 or bounds[-1] != frame.tokens:
            raise ValueError(
                "STC-Cacher needs every frame to be whole attention segments (per-frame or windowed attention); this "
                "encoder attends across frames"
            )
        return bounds


def plan_call(
    signatures: list[tuple[Hashable, int]],
    next_index: int,
    reference_signature: Hashable | None,
    interval: int,
) -> list[Frame]:
    """Refresh or selective for each frame of a call, in stream order (spec §1.2.1 refresh test).

    A frame is a refresh frame when there is no reference yet, every `interval` frames of the stream
    (`index % interval == 0`), or when its size differs from the reference frame's (its patches would not line up).
    A selective frame's reference is the last refresh frame before it, in this call or stored.

    Parameters
    ----------
    signatures:
        Per frame, `(signature, tokens)`; `tokens` may be 0 when only known at the first layer.
    """
    frames: list[Frame] = []
    last_signature, last_position = reference_signature, None
    start = 0
    for j, (signature, tokens) in enumerate(signatures):
        index = next_index + j
        refresh = interval == 1 or last_signature is None or signature != last_signature or index % interval == 0
        if refresh:
            last_signature, last_position = signature, j
        frames.append(Frame(index, signature, refresh, None if refresh else last_position, start, tokens))
        start += tokens
    return frames


@dataclass
class StreamState:
    """Everything one stream carries from frame to frame."""

    next_index: int = 0
    reference_signature: Hashable | None = None
    references: list[LayerReference | None] = field(default_factory=list)
    stats: CacherStats = field(default_factory=CacherStats)
    call: CallPlan | None = None
