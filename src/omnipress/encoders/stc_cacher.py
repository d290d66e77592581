"""STC-Cacher: skip the vision-encoder work on the tokens of a frame that did not change since a reference frame.

STC, "Accelerating Streaming Video Large Language Models via Hierarchical Token Compression" (arXiv 2512.00891,
https://arxiv.org/abs/2512.00891), the encoder half; spec ../shared/specs/stc_mixkv.md §1.2.1.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..core.method import Method
from ..core.session import Listener
from .stc_layers import CachedAttention, CachedMLP, LayerCache, Selection
from .stc_select import METRICS, MODES
from .stc_state import CacherStats, CallPlan, FrameStats, StreamState, plan_call

if TYPE_CHECKING:
    from ..core.session import ModelSession


@dataclass(eq=False)
class STCCacher(Method):
    """STC-Cacher (arXiv 2512.00891): selective recomputation inside the vision encoder of a video stream.

    Every `interval` frames a full reference pass keeps, per encoder layer, the frame's keys, values, attention output
    and MLP output. On the other frames each layer computes every token's key, marks as dynamic the `update_ratio`
    share of tokens whose key is least cosine-similar to the reference key at the same patch position, and computes
    queries, values, attention and MLP for those tokens only; static tokens add the reference frame's attention and
    MLP outputs to their own residual (spec §1.2.1). At `update_ratio = 0.25, interval = 2` about a third of the
    encoder FLOPs are skipped (the paper reports -24.5% ViT latency on GPU).

    Works inside the towers of LLaVA-1.5 (CLIP), LLaVA-OneVision (SigLIP), Qwen2-VL, Qwen2.5-VL (windowed blocks and
    their window permutation: rows are compared position by position within frames of the same grid) and Qwen3-VL
    (deepstack features come from the cached blocks' outputs), applied to the whole VLM or to the bare tower::

        cacher = op.STCCacher(update_ratio=0.25, interval=2)
        with cacher(model):                    # or cacher(model.model.vision_tower)
            for frame in frames:
                features = model.get_image_features(...)   # or generate, or a streaming session
        cacher.stats.recomputed_fraction
        cacher.reset()                         # next stream

    A "frame" is one batch entry of a SigLIP/CLIP tower and one temporal patch group of a Qwen tower (whose ViT takes
    all frames packed). A call with several frames is processed frame by frame in order, as the official
    `enable_streaming_cacher` does. Every image through the tower counts as a frame of the stream too; a frame of
    another size than its reference is a refresh frame.

    State (frame counter, references, stats) belongs to this object: it continues across contexts on the same tower,
    is restarted by `reset()`, and restarts by itself when the cacher is applied to another tower. One cacher serves
    one stream; applying it to a second model while active is an error (use one cacher per stream).

    Parameters
    ----------
    update_ratio : float
        Share of tokens recomputed on selective frames, in (0, 1]: `max(1, floor(T * r))` tokens. 1.0 recomputes
        everything (equal to the dense encoder up to float rounding).
    interval : int
        A refresh (full) frame every `interval` frames of the stream; 1 means every frame is dense.
    mode : str
        `"ratio"` (the paper's) or `"threshold"` (ablation): recompute the tokens whose similarity is below
        `threshold`, at most `update_ratio` of them.
    threshold : float
        Cosine threshold of `"threshold"` mode.
    metric : str
        `"cosine"` (the paper's) or `"l2"` (ablation: Euclidean key distance; ratio mode only).

    Notes
    -----
    The cacher replaces each block's attention and MLP branch modules for the duration of the context
    (`CachedAttention`, `CachedMLP`, holding the originals); the blocks themselves stay, so `output_hidden_states`
    (which LLaVA's feature layer reads) works as before. Attention weights (`output_attentions`) are not recorded
    for cached blocks. The selective path uses torch's `scaled_dot_product_attention` whatever attention
    implementation the tower is configured with.
    """

    update_ratio: float = 0.25
    interval: int = 2
    mode: str = "ratio"
    threshold: float = 0.85
    metric: str = "cosine"

    stage: ClassVar[str] = "encoder"

    _state: StreamState = field(default_factory=StreamState, init=False, repr=False)
    _tower: Any = field(default=None, init=False, repr=False)  # weakref to the tower the state belongs to
    _active: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.update_ratio <= 1.0:
            raise ValueError(f"update_ratio must be in (0, 1], got {self.update_ratio}")
        if int(self.interval) != self.interval or self.interval < 1:
            raise ValueError(f"interval must be an integer >= 1, got {self.interval}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if self.mode == "threshold" and self.metric != "cosine":
            raise ValueError("mode='threshold' compares cosine similarities: use metric='cosine'")

    # -- public state ------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new stream: the next frame is a refresh frame, references and stats are dropped."""
        self._state = StreamState()

    @property
    def stats(self) -> CacherStats:
        """Per-frame record since the last reset: `frames`, `refresh_frames`, `recomputed_per_layer`,
        `recomputed_fraction`, `per_frame[i].recomputed` (tokens recomputed at each layer)."""
        return self._state.stats

    @property
    def frames_seen(self) -> int:
        """Frames of the current stream so far."""
        return self._state.next_index

    # -- wiring ------------------------------------------------------------------------------------------------------
    def attach(self, session: ModelSession) -> Listener:
        adapter = session.adapter
        tower, blocks = adapter.vision_encoder, adapter.vision_blocks
        previous = self._tower() if self._tower is not None else None
        if self._active and previous is not tower:
            raise ValueError(
                "this STCCacher is already active on another model; one cacher holds one stream: create one per model "
                "or stream"
            )
        if previous is not tower:  # a new tower: its stream starts afresh
            self.reset()
        selection = Selection(float(self.update_ratio), self.mode, float(self.threshold), self.metric)
        packed = hasattr(blocks[0], "attn")
        for layer, block in enumerate(blocks):
            cache = LayerCache(lambda: self._state, layer, selection)
            name = "attn" if packed else "self_attn"
            if not isinstance(getattr(block, name, None), nn.Module) or not isinstance(
                getattr(block, "mlp", None), nn.Module
            ):
                raise TypeError(f"{type(block).__name__} has no {name}/mlp branches; STC-Cacher cannot wrap it")
            session.replace_submodule(block, name, CachedAttention(getattr(block, name), cache))
            session.replace_submodule(block, "mlp", CachedMLP(block.mlp, cache))
        session.hook_forward_pre(tower, self._before_encoder, with_kwargs=True)
        session.hook_forward(tower, self._after_encoder, with_kwargs=True)
        self._tower, self._active = weakref.ref(tower), True
        return _CacherListener(self)

    def _before_encoder(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        state = self._state
        if state.call is not None:  # the previous call failed half-way: undo what its layers stored
            state.references = state.call.saved_references
        signatures, packed = _frame_signatures(args, kwargs)
        frames = plan_call(signatures, state.next_index, state.reference_signature, int(self.interval))
        state.call = CallPlan(
            frames,
            packed,
            recomputed=[[] for _ in frames],
            saved_references=[dataclasses.replace(r) if r is not None else None for r in state.references],
        )

    def _after_encoder(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        state, call = self._state, self._state.call
        if call is None:
            return
        state.call = None
        for frame, recomputed in zip(call.frames, call.recomputed):
            state.stats.per_frame.append(FrameStats(frame.index, frame.refresh, frame.tokens, recomputed))
            if frame.refresh:
                state.reference_signature = frame.signature
        state.next_index += len(call.frames)


class _CacherListener(Listener):
    def __init__(self, cacher: STCCacher) -> None:
        super().__init__()
        self.cacher = cacher

    def close(self) -> None:
        super().close()
        self.cacher._active = False
        state = self.cacher._state
        if state.call is not None:  # left during an encoder call (an exception): drop what that call stored
            state.references, state.call = state.call.saved_references, None


def _frame_signatures(args: tuple, kwargs: dict[str, Any]) -> tuple[list[tuple[Hashable, int]], bool]:
    """Per frame of an encoder call, `(signature, tokens)`, and whether the tower packs frames (Qwen) or batches
    them (SigLIP/CLIP, tokens known at the first layer: 0 here)."""
    grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
    if grid is not None:  # Qwen: (items, 3) temporal patch groups x patch rows x patch columns
        out: list[tuple[Hashable, int]] = []
        for t, h, w in torch.as_tensor(grid).tolist():
            out.extend([(("grid", int(h), int(w)), int(h) * int(w))] * int(t))
        return out, True
    pixels = kwargs.get("pixel_values", args[0] if args else None)
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
        raise ValueError(
            "STC-Cacher expects the vision tower to get pixel_values of shape (frames, channels, height, width) or a "
            f"Qwen grid_thw; got {type(pixels).__name__}"
            + (f" of shape {tuple(pixels.shape)}" if isinstance(pixels, torch.Tensor) else "")
        )
    return [(("pixels", *map(int, pixels.shape[-2:])), 0)] * int(pixels.shape[0]), False
