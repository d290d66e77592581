"""HeadRouter: head-weighted, task-adaptive audio token pruning inside the language model.

HeadRouter (He et al., arXiv 2604.23717; no public code: this follows the reconstruction in
`shared/specs/audio.md` §2) replaces FastV's "mean over heads of the last token's attention" by:

1. **text-to-audio probing** at the probe layer (K-1): the attention of every text token after the audio over the
   prompt, per query head, normalised over all keys and sliced to the audio (`probe_attention`);
2. **position-bias reduction**: divide by the calibration prior of each head's attention per relative-position bin
   (`debias="prior"`, the default), or by a per-input log-linear trend (`"detrend"`), then renormalise per head;
3. **routing**: the input's head-behaviour vector (per head: selectivity `1 - entropy / log N_a` and audio-attention
   share) is z-scored and compared with the task profiles' centroids (semantic vs acoustic); the profiles' sparse
   head weights are mixed by `softmax(-distance^2 / temperature)` (`routing="soft"`) or the nearest profile's are
   taken (`"hard"`);
4. **head-weighted token scores** `s[j] = sum_h w[h] * a~[h, j]`; the top `retain` share of the audio tokens is kept,
   segment by segment (`segments`, spec §2.2 step 3d: each of 32 equal runs of the audio keeps its share, so a
   region the probe ignores is not emptied), and the layers from K on run on them (`omnipress.tokens.inllm`).

The task profiles come from a calibration set (`omnipress.profiles.router.RouterProfiles.build`). Without
profiles the head weights are uniform (and with `debias="none"`, `renormalize=False`, `query="last"` the scores
are exactly FastV's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from ..profiles.store import normalize_model_name
from .inllm.base import InLLMPruner, Probe
from .inllm.scoring import top_fraction_by_segment

if TYPE_CHECKING:
    from ..core.session import Listener, ModelSession
    from ..profiles.router import RouterProfiles

_EPS = 1e-8
DEBIAS = ("prior", "detrend", "none")
ROUTING = ("soft", "hard")


# -- the math (pure functions, batch rows with their own audio columns) -------------------------------------------
def audio_bins(candidates: torch.Tensor, bins: int) -> torch.Tensor:
    """`(B, N)` long: the relative-position bin `floor(bins * r / n)` of every audio column (`r` its rank among
    the row's `n` audio columns); 0 elsewhere."""
    rank = candidates.long().cumsum(dim=-1) - 1
    n = candidates.sum(dim=-1, keepdim=True).clamp(min=1)
    return torch.div(rank.clamp(min=0) * bins, n, rounding_mode="floor").clamp(max=bins - 1) * candidates


def debias_prior(attention: torch.Tensor, candidates: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """`a[h, j] / prior[h, bin(j)]` on the audio columns, 0 elsewhere. `attention` `(B, H, N)`, `prior` `(H, bins)`
    (mean attention per relative-position bin, 1 = uniform)."""
    bins = audio_bins(candidates, prior.shape[-1])  # (B, N)
    heads = attention.shape[1]
    table = prior.to(attention.device, attention.dtype)  # (H, bins)
    index = bins.unsqueeze(1).expand(-1, heads, -1)  # (B, H, N)
    per_column = table.unsqueeze(0).expand(attention.shape[0], -1, -1).gather(2, index)
    return (attention / (per_column + _EPS)) * candidates.unsqueeze(1)


def debias_detrend(attention: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Divide out a per-head least-squares fit of `log a` on the relative position `r / n` over the audio columns
    (the recency ramp RoPE gives attention), 0 elsewhere."""
    mask = candidates.unsqueeze(1).to(attention.dtype)  # (B, 1, N)
    rank = (candidates.long().cumsum(dim=-1) - 1).clamp(min=0).to(attention.dtype)
    x = (rank / candidates.sum(dim=-1, keepdim=True).clamp(min=1)).unsqueeze(1)  # (B, 1, N)
    y = torch.log(attention + _EPS)
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    mx = (x * mask).sum(-1, keepdim=True) / count
    my = (y * mask).sum(-1, keepdim=True) / count
    var = (((x - mx) ** 2) * mask).sum(-1, keepdim=True)
    slope = (((x - mx) * (y - my)) * mask).sum(-1, keepdim=True) / var.clamp(min=_EPS)
    trend = my + slope * (x - mx)
    return torch.exp(y - trend) * mask


def normalize_audio(scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Every head's scores over the audio columns scaled to sum 1 (0 elsewhere). `(B, H, N)`."""
    masked = scores * candidates.unsqueeze(1)
    return masked / masked.sum(dim=-1, keepdim=True).clamp(min=_EPS)


def head_behaviour(attention: torch.Tensor, debiased: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The head-behaviour vector `(B, 2H)`: per head the selectivity `1 - H(p) / log n` of its debiased audio
    distribution `p`, then its audio-attention share `sum_j∈A a[h, j]`."""
    p = normalize_audio(debiased, candidates)  # (B, H, N)
    entropy = -(p * torch.log(p.clamp(min=_EPS))).sum(dim=-1)  # (B, H)
    n = candidates.sum(dim=-1, keepdim=True).to(p.dtype)  # (B, 1)
    selectivity = torch.where(n > 1, 1.0 - entropy / torch.log(n.clamp(min=2)), torch.zeros_like(entropy))
    mass = (attention * candidates.unsqueeze(1)).sum(dim=-1)  # (B, H)
    return torch.cat([selectivity, mass], dim=-1)


def route(
    behaviour: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    centroids: torch.Tensor,
    *,
    temperature: float = 1.0,
    hard: bool = False,
) -> torch.Tensor:
    """Mixing weights `(B, P)` of `P` profiles: `softmax(-||z(b) - c_d||^2 / temperature)` with `z` the z-scoring
    by `mean`/`std` `(2H,)` and `centroids` `(P, 2H)` in z space; `hard`: one-hot on the nearest profile."""
    z = (behaviour - mean.to(behaviour)) / std.to(behaviour)  # (B, 2H)
    dist = torch.cdist(z.unsqueeze(0), centroids.to(z).unsqueeze(0)).squeeze(0) ** 2  # (B, P)
    if hard:
        return torch.nn.functional.one_hot(dist.argmin(dim=-1), centroids.shape[0]).to(z.dtype)
    return (-dist / temperature).softmax(dim=-1)


def head_weighted_scores(weights: torch.Tensor, debiased: torch.Tensor) -> torch.Tensor:
    """`s[b, j] = sum_h w[b, h] * a~[b, h, j]`: `(B, N)` from head weights `(B, H)` and scores `(B, H, N)`."""
    return torch.einsum("bh,bhn->bn", weights.to(debiased), debiased)


def debiased_attention(
    attention: torch.Tensor,
    candidates: torch.Tensor,
    *,
    debias: str,
    prior: torch.Tensor | None,
    renormalize: bool,
) -> torch.Tensor:
    """Steps 2 of the module docstring: `(B, H, N)` debiased (and optionally renormalised) audio attention."""
    if debias == "prior":
        if prior is None:
            raise ValueError("debias='prior' needs profiles with a position prior (RouterProfiles.build)")
        out = debias_prior(attention, candidates, prior)
    elif debias == "detrend":
        out = debias_detrend(attention, candidates)
    elif debias == "none":
        out = attention * candidates.unsqueeze(1)
    else:
        raise ValueError(f"debias must be one of {DEBIAS}, got {debias!r}")
    return normalize_audio(out, candidates) if renormalize else out


# -- the pruner -----------------------------------------------------------------------------------------------------
@dataclass
class HeadRouter(InLLMPruner):
    """HeadRouter (arXiv 2604.23717) on the in-LLM pruning mechanism; see the module docstring.

    Parameters
    ----------
    retain : float
        Share of each row's audio tokens kept (0.7 in the paper's headline).
    layer : int
        Pruning layer K; the probe is layer K-1 (the profiles must have been built there).
    profiles : RouterProfiles, str, Path or None
        Task profiles (`RouterProfiles.load(path)` or `.build(...)`, or a profile file / shipped model name to load).
        `None`: the profiles shipped for the model when there are some (Whisper tiny.en), else uniform head weights
        and no routing (then `debias` must not be `"prior"`).
    query : str
        `"text"`: average the probe over every text token after the audio (default); `"last"`: the last token.
    debias : str
        Position-bias reduction: `"prior"` (the profiles' calibration prior, default), `"detrend"` (per input) or
        `"none"`.
    renormalize : bool
        Scale each head's debiased audio attention to sum 1 before weighting (heads count by their weight only).
    routing : str
        `"soft"`: mix the profiles' head weights by `softmax(-d^2 / temperature)`; `"hard"`: the nearest profile.
    temperature : float
        Routing temperature on z-scored behaviour vectors.
    force_profile : str or None
        Use this profile's head weights for every input (the "oracle" routing of ablations).
    segments : int
        Segment-wise ranking (spec §2.2 step 3d): split the audio into this many equal runs and keep the top
        `retain` share of each (`inllm.scoring.top_fraction_by_segment`), so that no stretch of audio loses all its
        tokens to a region the probe prefers; 0 (default) ranks the whole span at once, as FastV does.
    """

    retain: float = 0.7
    layer: int = 2
    profiles: RouterProfiles | str | Path | None = field(default=None, repr=False)
    query: str = "text"
    debias: str = "prior"
    renormalize: bool = True
    routing: str = "soft"
    temperature: float = 1.0
    force_profile: str | None = None
    segments: int = 32

    uses_attention: ClassVar[bool] = True

    _last_routing: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _active: RouterProfiles | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.query not in ("last", "text"):
            raise ValueError(f"query must be 'last' or 'text', got {self.query!r}")
        if self.debias not in DEBIAS:
            raise ValueError(f"debias must be one of {DEBIAS}, got {self.debias!r}")
        if self.routing not in ROUTING:
            raise ValueError(f"routing must be one of {ROUTING}, got {self.routing!r}")
        if (
            not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature <= 0
        ):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if isinstance(self.segments, bool) or not isinstance(self.segments, int) or self.segments < 0:
            raise ValueError(f"segments must be an int >= 0 (0: rank the whole span), got {self.segments!r}")
        if isinstance(self.profiles, (str, Path)):
            from ..profiles.router import RouterProfiles

            self.profiles = RouterProfiles.load(self.profiles)
        if self.profiles is None:
            if self.force_profile is not None:
                raise ValueError("force_profile needs task profiles")
        else:
            self._check_profiles(self.profiles)
        self._active = self.profiles

    def _check_profiles(self, profiles: RouterProfiles) -> None:
        from ..profiles.router import RouterProfiles

        if not isinstance(profiles, RouterProfiles):
            raise TypeError(f"profiles must be a RouterProfiles (or a profile file), got {type(profiles).__name__}")
        if profiles.probe_layer != self.probe_layer_index:
            raise ValueError(
                f"the profiles were built at probe layer {profiles.probe_layer}; HeadRouter(layer={self.layer}) "
                f"probes layer {self.probe_layer_index} (use layer={profiles.probe_layer + 1})"
            )
        if self.force_profile is not None and self.force_profile not in profiles.names:
            raise ValueError(f"force_profile {self.force_profile!r} is not one of the profiles {profiles.names}")

    def attach(self, session: ModelSession) -> Listener:
        from ..profiles import ModelFingerprint
        from ..profiles.router import RouterProfiles, shipped_router_profiles

        profiles = self.profiles
        if profiles is None:  # the profiles shipped for this model, if any
            name = ModelFingerprint.of(session.model).name
            if name and normalize_model_name(name) in shipped_router_profiles():
                profiles = RouterProfiles.load(name)
                self._check_profiles(profiles)
        if profiles is None and self.debias == "prior":
            raise ValueError(
                "HeadRouter(debias='prior') needs task profiles (profiles=RouterProfiles.load(path), or build them "
                "with RouterProfiles.build); none ship for this model. Without profiles use debias='detrend' or 'none'"
            )
        if profiles is not None:
            profiles.check_model(session.model)
        self._active = profiles
        return super().attach(session)

    def head_weights(self, attention: torch.Tensor, debiased: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """`(B, H)` head weights of every row (uniform without profiles); records the routing for the report."""
        bsz, heads = attention.shape[:2]
        profiles = self._active
        if profiles is None:
            self._last_routing = None
            return torch.full((bsz, heads), 1.0 / heads, dtype=attention.dtype, device=attention.device)
        if profiles.num_heads != heads:
            raise ValueError(f"the profiles have {profiles.num_heads} heads, the probe layer has {heads}")
        if self.force_profile is not None:
            mix = torch.zeros(bsz, len(profiles.names), dtype=attention.dtype, device=attention.device)
            mix[:, profiles.names.index(self.force_profile)] = 1.0
        else:
            behaviour = head_behaviour(attention, debiased, candidates)
            mix = route(
                behaviour,
                profiles.mean,
                profiles.std,
                profiles.centroids,
                temperature=float(self.temperature),
                hard=self.routing == "hard",
            )
        self._last_routing = mix.detach().cpu()
        return mix @ profiles.weights.to(mix)  # (B, H)

    def score(self, probe: Probe) -> torch.Tensor:
        attention, candidates = probe.attention, probe.candidates
        prior = self._active.prior if self._active is not None else None
        debiased = debiased_attention(
            attention, candidates, debias=self.debias, prior=prior, renormalize=self.renormalize
        )
        weights = self.head_weights(attention, debiased, candidates)
        return head_weighted_scores(weights, debiased)

    def select(self, probe: Probe) -> torch.Tensor:
        if self.segments == 0:
            return super().select(probe)
        return top_fraction_by_segment(self.score(probe), probe.candidates, self.retain, self.segments)

    def _routing(self) -> torch.Tensor | None:
        return self._last_routing
