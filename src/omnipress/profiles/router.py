"""HeadRouter's task profiles: per task (semantic, acoustic, ...) a centroid of head-behaviour vectors and sparse
head weights, plus the per-head position prior, measured once per model on a calibration set.

Building (`RouterProfiles.build`, spec `shared/specs/audio.md` §2.2 steps 1-5), at the probe layer `l_p`:

1. for every calibration input, the text-to-audio attention `a[h, j]` of the text after the audio (per query head,
   normalised over all keys, sliced to the audio; Whisper: the decoder prompt's cross-attention over the encoder
   positions holding audio);
2. the position prior `prior[h, beta]`: the mean over all inputs of each head's attention share per relative
   position bin (`bins` bins, times the bin count so that uniform attention is 1), smoothed with `[1, 2, 1] / 4`;
3. per input the debiased attention `a~ = a / prior` and its head-behaviour vector (selectivity, audio share);
   `mean`/`std` over all inputs z-score it;
4. per task the centroid of the z-scored vectors and the head weights `w[h] ∝ mean(selectivity[h] * share[h])`,
   kept on the top `head_fraction` of heads, raised to `1 / sharpness`, normalised to sum 1.

Saved as a versioned profile file of kind `"headrouter"` (`omnipress.profiles.store`): loading it for another
model is a `ProfileError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..tokens.inllm.base import InLLMPruner, Probe
from .store import (
    ModelFingerprint,
    ProfileError,
    ProfileRecord,
    load_profile,
    normalize_model_name,
    save_profile,
    tensor_from_json,
    tensor_to_json,
)

KIND = "headrouter"
#: where shipped router profiles live inside the package (one `<model name>.json` each)
SHIPPED = "data/headrouter"


@dataclass
class RouterProfiles:
    """HeadRouter's task profiles for one model (see the module docstring).

    Attributes
    ----------
    model : ModelFingerprint
    probe_layer : int
    names : tuple of str
        The profiles (tasks), e.g. `("semantic", "acoustic")`.
    centroids : Tensor
        `(P, 2H)` z-scored head-behaviour centroids.
    weights : Tensor
        `(P, H)` sparse head weights, each row summing to 1.
    mean, std : Tensor
        `(2H,)` z-scoring statistics of the behaviour vectors.
    prior : Tensor
        `(H, bins)` position prior (1 = uniform).
    calibration, settings : dict
        What the profiles were measured on and how.
    """

    model: ModelFingerprint
    probe_layer: int
    names: tuple[str, ...]
    centroids: torch.Tensor
    weights: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    prior: torch.Tensor
    calibration: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = KIND

    def __post_init__(self) -> None:
        self.names = tuple(str(n) for n in self.names)
        p, h = len(self.names), self.num_heads
        if p < 1 or len(set(self.names)) != p:
            raise ProfileError(f"router profiles need distinct profile names, got {self.names}")
        shapes = {
            "centroids": (self.centroids, (p, 2 * h)),
            "weights": (self.weights, (p, h)),
            "mean": (self.mean, (2 * h,)),
            "std": (self.std, (2 * h,)),
        }
        for name, (tensor, shape) in shapes.items():
            if tuple(tensor.shape) != shape:
                raise ProfileError(f"router profiles: {name} must have shape {shape}, got {tuple(tensor.shape)}")
        if self.prior.dim() != 2 or self.prior.shape[0] != h or self.prior.shape[1] < 1:
            raise ProfileError(f"router profiles: prior must be (heads={h}, bins), got {tuple(self.prior.shape)}")
        if bool((self.std <= 0).any()) or bool((self.prior <= 0).any()) or bool((self.weights < 0).any()):
            raise ProfileError("router profiles: std and prior must be positive and weights non-negative")

    @property
    def num_heads(self) -> int:
        return int(self.weights.shape[-1])

    @property
    def bins(self) -> int:
        return int(self.prior.shape[1])

    def check_model(self, model: nn.Module | ModelFingerprint | str) -> None:
        """`ProfileError` when these profiles were built for another model."""
        self._record().check_model(model, "router profiles")

    # -- files ----------------------------------------------------------------------------------------------------
    def _record(self) -> ProfileRecord:
        data = {
            "probe_layer": self.probe_layer,
            "names": list(self.names),
            "centroids": tensor_to_json(self.centroids),
            "weights": tensor_to_json(self.weights),
            "mean": tensor_to_json(self.mean),
            "std": tensor_to_json(self.std),
            "prior": tensor_to_json(self.prior),
        }
        return ProfileRecord(KIND, self.model, data, dict(self.calibration), dict(self.settings))

    def save(self, path: str | Path) -> Path:
        """Write a versioned profile file (kind `"headrouter"`)."""
        return save_profile(self._record(), path)

    @classmethod
    def load(cls, path: str | Path, *, model: nn.Module | ModelFingerprint | str | None = None) -> RouterProfiles:
        """Read a profile file, or profiles shipped with omnipress by model name (`shipped_router_profiles()`, e.g.
        `"whisper-tiny.en"`); `model` (optional) checks they were built for that model."""
        shipped = shipped_router_profiles()
        if isinstance(path, str) and not Path(path).exists() and normalize_model_name(path) in shipped:
            path = shipped[normalize_model_name(path)]
        record = load_profile(path, kind=KIND, model=model)
        where = f"profile {path}"
        data = record.data
        try:
            probe_layer = int(data["probe_layer"])
            names = tuple(str(n) for n in data["names"])
        except (KeyError, TypeError, ValueError) as err:
            raise ProfileError(f"{where}: bad router profile data ({err})") from None
        tables = {}
        for name, dim in (("centroids", 2), ("weights", 2), ("mean", 1), ("std", 1), ("prior", 2)):
            if name not in data:
                raise ProfileError(f"{where}: no {name!r} table")
            tables[name] = tensor_from_json(data[name], name, dim=dim, where=where)
        return cls(record.model, probe_layer, names, **tables, calibration=record.calibration, settings=record.settings)

    # -- building -------------------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: nn.Module,
        calibration: Mapping[str, Iterable[Mapping[str, Any]]],
        *,
        probe_layer: int = 1,
        query: str = "text",
        bins: int = 32,
        head_fraction: float = 0.15,
        sharpness: float = 1.0,
        description: str = "",
        model_name: str = "",
    ) -> RouterProfiles:
        """Measure task profiles on a calibration set.

        Parameters
        ----------
        model : nn.Module
            Qwen2-Audio, a Qwen2.5-Omni thinker or Whisper.
        calibration : mapping of str to iterable of dict
            Per task (profile name, e.g. `"semantic"`, `"acoustic"`) the model inputs of its calibration samples
            (what `model(**inputs)` takes: a processor's output, `omnipress.testing.whisper_inputs`, ...). Each must
            hold audio.
        probe_layer : int
            The layer probed (HeadRouter then prunes at `probe_layer + 1`).
        query : str
            The text query set, `"text"` or `"last"` (as HeadRouter's `query`).
        bins : int
            Relative-position bins of the prior.
        head_fraction : float
            Share of heads with a non-zero weight per profile (at least one head).
        sharpness : float
            Head weights are raised to `1 / sharpness` before normalising (1: proportional to selectivity x share).
        description : str
            What the calibration data are (stored in the file).
        model_name : str
            The model's name for the fingerprint (default: the config's `_name_or_path`).
        """
        from ..tokens.headrouter import debias_prior, head_behaviour

        if not calibration:
            raise ValueError("calibration needs at least one task with samples")
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        if not 0.0 < head_fraction <= 1.0:
            raise ValueError(f"head_fraction must be in (0, 1], got {head_fraction}")
        if not sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {sharpness}")
        per_task: dict[str, list[torch.Tensor]] = {}
        for name, samples in calibration.items():
            rows = [row for inputs in samples for row in probe_rows(model, inputs, probe_layer, query)]
            if not rows:
                raise ValueError(f"calibration task {name!r} has no samples")
            per_task[str(name)] = rows
        every = [a for rows in per_task.values() for a in rows]
        prior = position_prior(every, bins)  # (H, bins)
        behaviours: dict[str, torch.Tensor] = {}
        scores: dict[str, torch.Tensor] = {}
        for name, rows in per_task.items():
            vectors, products = [], []
            for a in rows:  # (H, n)
                att, cand = a.unsqueeze(0), torch.ones(1, a.shape[1], dtype=torch.bool)
                b = head_behaviour(att, debias_prior(att, cand, prior), cand)[0]  # (2H,)
                vectors.append(b)
                heads = a.shape[0]
                products.append(b[:heads] * b[heads:])
            behaviours[name] = torch.stack(vectors)
            scores[name] = torch.stack(products).mean(dim=0)
        stacked = torch.cat(list(behaviours.values()))
        mean = stacked.mean(dim=0)
        std = stacked.std(dim=0, unbiased=False).clamp(min=1e-6) if stacked.shape[0] > 1 else torch.ones_like(mean)
        names = tuple(per_task)
        centroids = torch.stack([((behaviours[n] - mean) / std).mean(dim=0) for n in names])
        weights = torch.stack([sparse_head_weights(scores[n], head_fraction, sharpness) for n in names])
        return cls(
            ModelFingerprint.of(model, model_name),
            int(probe_layer),
            names,
            centroids,
            weights,
            mean,
            std,
            prior,
            calibration={"description": description, "samples": {n: len(per_task[n]) for n in names}},
            settings={"query": query, "bins": bins, "head_fraction": head_fraction, "sharpness": sharpness},
        )


def shipped_router_profiles() -> dict[str, Path]:
    """Router profiles that ship inside the package: `{normalised model name: file}`."""
    from importlib import resources

    folder = resources.files(__package__).joinpath(SHIPPED)
    if not folder.is_dir():
        return {}
    return {
        normalize_model_name(entry.name.removesuffix(".json")): Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def position_prior(attention: list[torch.Tensor], bins: int) -> torch.Tensor:
    """`(H, bins)`: the mean over inputs of every head's attention share per relative-position bin, times `bins`
    (uniform attention gives 1), smoothed with `[1, 2, 1] / 4`; bins no input reaches are 1.

    `attention` holds one `(H, n)` audio attention table per input.
    """
    heads = attention[0].shape[0]
    total = torch.zeros(heads, bins, dtype=torch.float64)
    count = torch.zeros(bins, dtype=torch.float64)
    for a in attention:
        n = a.shape[1]
        share = a.double() / a.double().sum(dim=-1, keepdim=True).clamp(min=1e-12)  # (H, n)
        which = torch.div(torch.arange(n) * bins, n, rounding_mode="floor")  # (n,)
        sums = torch.zeros(heads, bins, dtype=torch.float64).index_add_(1, which, share)
        sizes = torch.bincount(which, minlength=bins).double()  # tokens per bin
        seen = sizes > 0
        total[:, seen] += sums[:, seen] / sizes[seen] * n  # mean share per token, times n (uniform = 1)
        count += seen.double()
    prior = torch.where(count > 0, total / count.clamp(min=1), torch.ones_like(total))
    padded = torch.cat([prior[:, :1], prior, prior[:, -1:]], dim=1)
    smooth = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    return smooth.clamp(min=1e-6).float()


def sparse_head_weights(score: torch.Tensor, head_fraction: float, sharpness: float) -> torch.Tensor:
    """`(H,)`: `score` kept on its top `max(1, round(head_fraction * H))` heads, raised to `1 / sharpness`,
    normalised to sum 1 (uniform over the kept heads when they all score 0)."""
    heads = score.shape[0]
    k = max(1, round(head_fraction * heads))
    top = score.clamp(min=0).topk(k)
    kept = top.values ** (1.0 / sharpness)
    if float(kept.sum()) <= 0:
        kept = torch.ones_like(kept)
    out = torch.zeros(heads, dtype=torch.float32)
    out[top.indices] = (kept / kept.sum()).float()
    return out


def probe_rows(model: nn.Module, inputs: Mapping[str, Any], probe_layer: int, query: str) -> list[torch.Tensor]:
    """Run `model(**inputs)` once and return, per batch row, the probe layer's text-to-audio attention over that
    row's audio columns, `(H, n)` (normalised over all keys)."""
    recorder = _ProbeRecorder(retain=1.0, layer=probe_layer + 1, query=query)
    with torch.no_grad(), recorder(model):
        model(**dict(inputs))
    records = recorder.records
    if not records or any(r.shape[1] == 0 for r in records):
        raise ValueError("a calibration sample holds no audio tokens (or its probe layer never ran)")
    return records


@dataclass
class _ProbeRecorder(InLLMPruner):
    """An in-LLM pruner that keeps every token and records the probe of each row."""

    query: str = "text"
    records: list[torch.Tensor] = field(default_factory=list, repr=False)

    uses_attention: ClassVar[bool] = True

    def select(self, probe: Probe) -> torch.Tensor:
        for row in range(probe.candidates.shape[0]):
            self.records.append(probe.attention[row][:, probe.candidates[row]].detach().float().cpu())
        return probe.candidates
