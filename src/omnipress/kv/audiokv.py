"""AudioKV: KV-cache eviction for audio language models (spectrally smoothed scores, audio-head budgets)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..profiles import HeadProfile
from .base import BudgetConfig, DecodingConfig, KVPress, LayerInputs, ScorerPress
from .budgets import adakv_capacities
from .scoring import pool1d, snapkv_scores
from .snapkv import SnapKV
from .spectral import PADDINGS, even_positions, headkv_capacities, spectral_smooth

if TYPE_CHECKING:
    from ..core.session import Listener, ModelSession

ALLOCATIONS = ("headkv", "dynamic", "host")


@dataclass
class AudioKV(ScorerPress):
    """AudioKV (Wang et al., 2026, https://arxiv.org/abs/2604.06694), reconstructed (no public code).

    Per layer, at the end of prefill:

    1. window attention scores (SnapKV: the last `window` prompt queries vote, averaged over each GQA group; text
       positions are pooled with `kernel`), or the `host` press's scores;
    2. Spectral Score Smoothing over every audio span (`spectral.spectral_smooth`: mirrored rFFT, tapered low-pass
       keeping `keep` of the bins or `cutoff_hz`, blended by `alpha`), so top-k picks contiguous stretches of audio
       instead of isolated spikes;
    3. per-head budgets moved toward the audio-critical heads of `profile` (`allocation="headkv"`:
       `spectral.headkv_capacities`, each head keeping a floor `b - b // beta`; `"dynamic"`: AdaKV's in-layer
       top-k over scores multiplied by `1 + lam * profile`; `"host"`: the host's own budgets);
    4. temporal coverage (our addition, not in the paper): `coverage` of each head's audio budget goes to positions
       spread evenly over the audio (`spectral.even_positions`), the rest to the best smoothed scores. The paper
       smooths so that the kept audio has no holes (holes make ASR loop); where the observation window knows little
       about what will be said (Whisper's two decoder-prompt queries) top-k still leaves holes, and `coverage`
       closes them. `coverage=0` is the paper's selection;
    5. the window and the protected tokens are kept; with the default `scope="audio"` all text (the audio bos/eos
       markers included) is protected and `compression_ratio` is the fraction of audio tokens removed; with
       `scope="all"` the tokens right before and after each audio span (the markers) and the first `sinks` tokens
       are still protected.

    The kept entries are stored in a ragged cache (per-head lengths), so the memory really goes. On Whisper the
    press evicts, per decoder layer and head, entries of the cross-attention cache over the encoder states; the
    compression ratio counts the positions holding audio, and the silence padding up to 30 s is kept
    (`whisper_padding="keep"`) or dropped (`"drop"`).

    Parameters
    ----------
    budget, compression_ratio, scope, window, strict, decode_budget, decode_every
        See `omnipress.kv.base`. Exactly one of `budget` / `compression_ratio` unless `host` is given.
    host : KVPress, optional
        A SnapKV-family press (SnapKV, AdaKV, PyramidKV, SparseMM) whose scores AudioKV smooths and whose budget,
        scope and window it uses: AudioKV as a scoring plug-in. Then leave `budget` / `compression_ratio` unset.
    profile : HeadProfile or str, optional
        Audio-critical head scores `(num_layers, kv_heads)` (`omnipress.profiles.audio_head_profile`), a profile
        file or the name of a shipped profile (`"whisper-tiny.en"`); refused on another model. Without one every
        head gets the same budget.
    alpha, keep, cutoff_hz, tokens_per_second, taper, padding
        Spectral Score Smoothing (`spectral.spectral_smooth`). `alpha=0` turns it off.
    allocation : {"headkv", "dynamic", "host"}
        How a profile moves budget between heads (see above).
    beta, temperature
        HeadKV allocation: redistributed share (`beta > 1`; 2 pools half of each head's budget) and sharpening.
    lam, floor_ratio
        Dynamic allocation: profile weight and AdaKV's guaranteed share per head.
    kernel, pooling
        Pooling of text-position scores (standalone mode; audio scores are smoothed spectrally instead).
    sinks : int
        With `scope="all"`: the first `sinks` prompt tokens are protected.
    whisper_padding : {"keep", "drop"}
        Whisper only: keep the encoder positions past the end of the audio (silence padding) or drop them.
    coverage : float
        Share of each head's audio budget spread evenly over the audio, in [0, 1] (step 4). The default 0.75 was
        chosen on Whisper tiny.en's calibration list (Harvard list 1), where it removed the repetition loops at 60%
        and 80% compression; 0 gives the paper's top-k selection.
    """

    window: int = 32
    host: KVPress | None = None
    profile: HeadProfile | str | Path | None = field(default=None, repr=False)
    scope: str = "audio"
    alpha: float = 0.8
    keep: float = 0.1
    cutoff_hz: float | None = None
    tokens_per_second: float | None = None
    taper: float = 0.5
    padding: str = "reflect"
    allocation: str = "headkv"
    beta: float = 2.0
    temperature: float = 1.0
    lam: float = 1.0
    floor_ratio: float = 0.2
    kernel: int = 5
    pooling: str = "avg"
    sinks: int = 0
    whisper_padding: str = "keep"
    coverage: float = 0.75

    def __post_init__(self) -> None:
        if self.host is not None:
            if not isinstance(self.host, SnapKV):
                raise ValueError(
                    f"AudioKV plugs into an attention-scored SnapKV-family host (SnapKV, AdaKV, PyramidKV, SparseMM); "
                    f"got {type(self.host).__name__}"
                )
            if self.budget is not None or self.compression_ratio is not None:
                raise ValueError("with a host, the budget is the host's: leave budget / compression_ratio unset")
        else:
            super().__post_init__()
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if not 0.0 < float(self.keep) <= 1.0:
            raise ValueError(f"keep must lie in (0, 1], got {self.keep}")
        if self.cutoff_hz is not None and not self.cutoff_hz > 0:
            raise ValueError(f"cutoff_hz must be > 0, got {self.cutoff_hz}")
        if self.tokens_per_second is not None and not self.tokens_per_second > 0:
            raise ValueError(f"tokens_per_second must be > 0, got {self.tokens_per_second}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if isinstance(self.profile, (str, Path)):
            self.profile = HeadProfile.load(self.profile, kind="audio_heads")
        if self.profile is not None and not isinstance(self.profile, HeadProfile):
            raise ValueError(
                f"profile must be a HeadProfile or a profile file / shipped name, got {type(self.profile)}"
            )
        if not float(self.beta) > 1.0:
            raise ValueError(f"beta must be > 1, got {self.beta}")
        if not float(self.temperature) >= 1.0:
            raise ValueError(f"temperature must be >= 1, got {self.temperature}")
        if not float(self.lam) >= 0.0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not 0.0 <= float(self.floor_ratio) <= 1.0:
            raise ValueError(f"floor_ratio must lie in [0, 1], got {self.floor_ratio}")
        if isinstance(self.sinks, bool) or not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"sinks must be an int >= 0, got {self.sinks!r}")
        if not 0.0 <= float(self.coverage) <= 1.0:
            raise ValueError(f"coverage must lie in [0, 1], got {self.coverage}")
        if self.whisper_padding not in ("keep", "drop"):
            raise ValueError(f"whisper_padding must be 'keep' or 'drop', got {self.whisper_padding!r}")
        self._tokens_per_second = 25.0

    # -- configuration ----------------------------------------------------------------------------------------
    @property
    def budget_config(self) -> BudgetConfig:
        return self.host.budget_config if self.host is not None else self._budget

    @property
    def decoding(self) -> DecodingConfig | None:
        return self.host.decoding if self.host is not None else self._decoding

    @property
    def name(self) -> str:
        return f"AudioKV({self.host.name})" if self.host is not None else "AudioKV"

    def attach(self, session: ModelSession) -> Listener:
        # token rate of the audio positions: Whisper's encoder states 50 per second, Qwen audio tokens 25
        self._tokens_per_second = self.tokens_per_second or (50.0 if session.adapter.is_encoder_decoder else 25.0)
        if isinstance(self.profile, HeadProfile):
            self.profile.check_model(session.model)  # a profile of another model is a clear error
        return super().attach(session)

    # -- scoring ----------------------------------------------------------------------------------------------
    def smooth(self, scores: torch.Tensor) -> torch.Tensor:
        """Spectral Score Smoothing of one audio span's scores `(..., L)` with this press's settings."""
        return spectral_smooth(
            scores,
            alpha=self.alpha,
            keep=self.keep,
            cutoff_hz=self.cutoff_hz,
            tokens_per_second=self._tokens_per_second,
            taper=self.taper,
            padding=self.padding,
        )

    def raw_scores(self, layer: LayerInputs) -> torch.Tensor:
        """`(batch, kv_heads, N)` scores before smoothing (window entries score 0: they are kept anyway)."""
        if getattr(layer, "cross", False):
            from .cross import cross_attention_scores

            return cross_attention_scores(layer.query, layer.keys, scaling=layer.scaling, key_mask=layer.padding_mask)
        if self.host is not None:
            return self.host.score(layer).float()
        if layer.window == 0:
            raise ValueError("AudioKV needs an observation window >= 1")
        raw = snapkv_scores(
            layer.window_queries, layer.keys, scaling=layer.scaling, kernel=1, key_mask=layer.padding_mask
        )  # (batch, kv_heads, N - window)
        return torch.nn.functional.pad(raw, (0, layer.window))

    def score(self, layer: LayerInputs) -> torch.Tensor:
        raw = self.raw_scores(layer)
        standalone = self.host is None and not getattr(layer, "cross", False)
        out = pool1d(raw, self.kernel, self.pooling) if standalone else raw.clone()
        if layer.spans is None or self.alpha == 0:
            return out
        limit = raw.shape[-1] - (0 if getattr(layer, "cross", False) else layer.window)
        for row, row_spans in enumerate(layer.spans):
            for span in row_spans.of("audio"):
                end = min(span.end, limit)
                if end - span.start >= 2:
                    out[row, :, span.start : end] = self.smooth(raw[row, :, span.start : end])
        return out

    # -- budgets ----------------------------------------------------------------------------------------------
    def head_importance(self, layer: LayerInputs, heads: int) -> torch.Tensor | None:
        """The profile's `(kv_heads,)` row for this layer, or None without a profile."""
        if self.profile is None:
            return None
        self.profile.check(layer.num_layers, heads)
        return self.profile.scores[layer.layer_idx]

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        bsz, heads = scores.shape[:2]
        importance = self.head_importance(layer, heads)
        uniform = self.host.capacities if self.host is not None else super().capacities
        if importance is None or self.allocation == "host":
            return uniform(layer, scores)
        candidates = layer.candidates.expand(bsz, heads, -1)
        if self.allocation == "dynamic":
            top = float(self.profile.scores.max())  # type: ignore[union-attr]
            weight = 1.0 + self.lam * (importance / top if top > 0 else importance)
            weighted = scores * weight.to(scores.device).view(1, heads, 1)
            rows = [
                adakv_capacities(
                    weighted[row : row + 1],
                    int(base),
                    floor_ratio=self.floor_ratio,
                    candidates=candidates[row : row + 1],
                )
                for row, base in enumerate(layer.capacity.tolist())
            ]
            return torch.cat(rows).to(scores.device)
        upper = candidates.sum(-1).cpu()  # (batch, heads)
        rows = [
            headkv_capacities(importance, int(base), beta=self.beta, temperature=self.temperature, upper=upper[row])
            for row, base in enumerate(layer.capacity.tolist())
        ]
        return torch.stack(rows).to(scores.device)

    def rank(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        return self.host.rank(layer, scores) if self.host is not None else scores

    # -- selection --------------------------------------------------------------------------------------------
    def keep_indices(self, layer: LayerInputs):
        extra = self.extra_protected(layer)
        if extra is not None:
            moved = extra & layer.candidates  # (batch, 1, N)
            layer = replace(
                layer,
                candidates=layer.candidates & ~extra,
                protected=layer.protected | moved,
                capacity=(layer.capacity - moved.sum((-1, -2))).clamp_min(0),
            )
        return super().keep_indices(layer)

    def prioritize(self, layer: LayerInputs, ranks: torch.Tensor, capacities: torch.Tensor) -> torch.Tensor:
        """Temporal coverage: raise the ranks of `coverage` of each head's audio budget, spread evenly over the row's
        audio positions (`spectral.even_positions`), above every score: they are kept whatever the scores say."""
        if self.coverage == 0 or layer.spans is None:
            return ranks
        n = ranks.shape[-1]
        masks = [spans.mask("audio")[:n] for spans in layer.spans]
        audio = torch.stack([torch.nn.functional.pad(m, (0, n - m.numel())) for m in masks]).unsqueeze(1)
        audio = audio.to(ranks.device) & layer.candidates
        n_cand = layer.candidate_count().expand_as(capacities).clamp_min(1)
        share = audio.sum(-1).float() / n_cand.float()  # audio's share of the candidates, (batch, heads)
        counts = (self.coverage * capacities.float() * share).round().long()
        chosen = even_positions(audio.expand_as(ranks), counts)
        return ranks.masked_fill(chosen, torch.finfo(ranks.dtype).max)

    def extra_protected(self, layer: LayerInputs) -> torch.Tensor | None:
        """`(batch, 1, N)` candidates that `scope="all"` still protects: the first `sinks` real tokens and the
        tokens right before and after each audio span (the audio bos/eos markers). None when there are none."""
        if layer.spans is None or self.budget_config.scope != "all" or getattr(layer, "cross", False):
            return None
        n = layer.seq_len
        extra = torch.zeros(len(layer.spans), 1, n, dtype=torch.bool)
        for row, row_spans in enumerate(layer.spans):
            start = row_spans.padding
            extra[row, 0, start : min(n, start + self.sinks)] = True
            for span in row_spans.of("audio"):
                if span.start - 1 >= start:
                    extra[row, 0, span.start - 1] = True
                if span.end < n:
                    extra[row, 0, span.end] = True
        return extra.to(layer.keys.device) if bool(extra.any()) else None
