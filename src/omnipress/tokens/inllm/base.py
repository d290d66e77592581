"""The base of every in-LLM audio token pruner: which audio tokens the layers from K on still see.

Unlike the pruners of `omnipress.tokens.base`, which drop tokens before the language model, these prune *inside*
it (FastV-style, arXiv 2403.06764): layers `0 .. K-1` run on the whole prompt, and from layer K on the hidden
states, position ids (original values, M-RoPE included), attention masks and cache hold only the kept tokens. A
subclass decides which audio tokens to keep from a `Probe` (the text-to-audio attention at the probe layer, the
features entering layer K); `omnipress.tokens.inllm.decoder` does the pruning for decoder-only LALMs (Qwen2-Audio,
the Qwen2.5-Omni thinker) and `omnipress.tokens.inllm.cross` for Whisper, where the "audio tokens" are the encoder
states the decoder cross-attends to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from ...core.method import Method
from .scoring import check_retain, top_fraction

if TYPE_CHECKING:
    from ...core.session import Listener, ModelSession


@dataclass
class Probe:
    """What a pruner sees when it selects, for a batch of `B` rows of `N` columns.

    Attributes
    ----------
    candidates : Tensor
        `(B, N)` bool: the prunable audio columns (Whisper: encoder positions holding audio).
    valid : Tensor
        `(B, N)` bool: real columns (left padding False).
    attention : Tensor or None
        `(B, H, N)` float32 attention of the text query set over every column at the probe layer, per query head
        (`probe_attention`); `None` for pruners that do not use it.
    features : Tensor or None
        `(B, N, D)` token features: the hidden states entering layer K (Whisper: layer K's cross-attention keys,
        heads concatenated).
    """

    candidates: torch.Tensor
    valid: torch.Tensor
    attention: torch.Tensor | None = None
    features: torch.Tensor | None = None


@dataclass
class AudioPruningReport:
    """What an in-LLM pruner kept in the last prompt.

    Attributes
    ----------
    method : str
    layer : int
        The pruning layer K.
    audio_before, audio_after : list of int
        Audio tokens per batch row before and after pruning (Whisper: encoder positions holding audio; the 30 s
        padding is not counted).
    keep : Tensor or None
        `(B, N)` bool over the unpruned columns (padding False): what layers >= K see.
    routing : Tensor or None
        HeadRouter: `(B, profiles)` mixing weights of every row.
    """

    method: str
    layer: int
    audio_before: list[int] = field(default_factory=list)
    audio_after: list[int] = field(default_factory=list)
    keep: torch.Tensor | None = field(default=None, repr=False)
    routing: torch.Tensor | None = field(default=None, repr=False)

    @property
    def retained(self) -> float:
        """Share of the audio tokens kept (1.0 without audio)."""
        before = sum(self.audio_before)
        return 1.0 if before == 0 else sum(self.audio_after) / before

    @property
    def pruned(self) -> bool:
        return sum(self.audio_after) < sum(self.audio_before)

    def __str__(self) -> str:
        return (
            f"{self.method} at layer {self.layer}: {sum(self.audio_before)} -> {sum(self.audio_after)} audio tokens "
            f"({self.retained:.1%} kept)"
        )


@dataclass
class InLLMPruner(Method):
    """Base of the in-LLM audio token pruners (stage `"tokens"`); see the module docstring.

    Parameters
    ----------
    retain : float
        Share of every row's audio tokens kept, in (0, 1]: `ceil(retain * n)` of `n`. 1.0 leaves the model
        bit-identical.
    layer : int
        K: layers `0 .. K-1` see every token, layers `K ..` only the kept ones (K = 0 prunes before the first
        layer).
    whisper_padding : str
        Whisper only: `"keep"` leaves the encoder positions past the audio (the 30 s padding, never counted as
        audio) visible to the pruned layers, `"drop"` removes them too.
    """

    retain: float = 0.5
    layer: int = 2
    whisper_padding: str = "keep"

    stage: ClassVar[str] = "tokens"
    exclusive: ClassVar[bool] = True
    #: whether `select` reads `Probe.attention` (then the probe layer must come before `layer`)
    uses_attention: ClassVar[bool] = False

    report: AudioPruningReport | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.retain = check_retain(self.retain)
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"layer must be a non-negative integer (the pruning layer K), got {self.layer!r}")
        if self.uses_attention and self.probe_layer_index < 0:
            raise ValueError(f"{self.name} probes the attention of layer K-1: layer must be >= 1, got {self.layer}")
        if self.whisper_padding not in ("keep", "drop"):
            raise ValueError(f"whisper_padding must be 'keep' or 'drop', got {self.whisper_padding!r}")

    @property
    def probe_layer_index(self) -> int:
        """The layer whose attention is probed (K - 1 unless a subclass says otherwise)."""
        return self.layer - 1

    @property
    def query_set(self) -> str:
        """Which queries the probe averages: the `"last"` token, or every `"text"` token after the audio (the
        `query` knob of attention-based pruners)."""
        return str(getattr(self, "query", "last"))

    # -- what subclasses implement -------------------------------------------------------------------------------
    def score(self, probe: Probe) -> torch.Tensor:
        """`(B, N)` scores; the best `ceil(retain * n)` candidates of each row are kept."""
        raise NotImplementedError

    def select(self, probe: Probe) -> torch.Tensor:
        """`(B, N)` bool: the kept candidates (a subset of `probe.candidates`)."""
        return top_fraction(self.score(probe), probe.candidates, self.retain)

    def _routing(self) -> torch.Tensor | None:
        """Per-row routing weights of the last `select` (HeadRouter), for the report."""
        return None

    # -- as a method on a model ----------------------------------------------------------------------------------
    def attach(self, session: ModelSession) -> Listener:
        adapter = session.adapter
        if "audio" not in getattr(adapter, "modalities", ()):
            raise ValueError(
                f"{self.name} prunes audio tokens, but {type(adapter.model).__name__} ({adapter.family}) takes no "
                "audio; audio models: Qwen2-Audio, the Qwen2.5-Omni thinker, Whisper"
            )
        layers = adapter.num_layers
        if self.layer >= layers:
            raise ValueError(f"{self.name}: layer {self.layer} is out of range; the model has {layers} decoder layers")
        if adapter.is_encoder_decoder:
            from .cross import CrossAttentionPruning

            return CrossAttentionPruning(self, session)
        from .decoder import LayerPruning

        return LayerPruning(self, session)
