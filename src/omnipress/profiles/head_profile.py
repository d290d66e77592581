"""A per-(layer, KV head) score table saved as JSON (visual heads for SparseMM, redundancy weights for MixKV,
audio heads for AudioKV)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class HeadProfile:
    """`scores[layer][kv_head]`, non-negative, with what was measured (`kind`) and on which model."""

    scores: torch.Tensor  # (num_layers, num_kv_heads) float32
    kind: str = "generic"
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32)
        if self.scores.dim() != 2 or 0 in self.scores.shape:
            raise ValueError(
                f"a head profile is a (num_layers, num_kv_heads) table, got shape {tuple(self.scores.shape)}"
            )
        if not torch.isfinite(self.scores).all() or bool((self.scores < 0).any()):
            raise ValueError("head profile scores must be finite and non-negative")

    @property
    def num_layers(self) -> int:
        return self.scores.shape[0]

    @property
    def num_kv_heads(self) -> int:
        return self.scores.shape[1]

    def check(self, num_layers: int, num_kv_heads: int) -> None:
        """Raise a clear error when the profile does not fit a model with this many layers and KV heads."""
        if (self.num_layers, self.num_kv_heads) != (num_layers, num_kv_heads):
            raise ValueError(
                f"head profile ({self.kind!r}, model {self.model!r}) has {self.num_layers} layers x "
                f"{self.num_kv_heads} KV heads, the model has {num_layers} x {num_kv_heads}"
            )

    def save(self, path: str | Path) -> None:
        data = {"kind": self.kind, "model": self.model, "meta": self.meta, "scores": self.scores.tolist()}
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> HeadProfile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"head profile {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"head profile {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or "scores" not in data:
            raise ValueError(f"head profile {path} has no 'scores' table")
        return cls(
            torch.tensor(data["scores"]), data.get("kind", "generic"), data.get("model", ""), data.get("meta", {})
        )
