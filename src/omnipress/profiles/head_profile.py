"""A per-(layer, KV head) score table saved as a versioned JSON profile file (visual heads for SparseMM,
redundancy weights for MixKV, audio-critical heads for AudioKV)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .store import (
    ModelFingerprint,
    ProfileError,
    ProfileRecord,
    check_kind,
    normalize_model_name,
    read_profile_json,
    save_profile,
    tensor_from_json,
    tensor_to_json,
)


@dataclass
class HeadProfile:
    """`scores[layer][kv_head]`, non-negative, with what was measured (`kind`) and on which model.

    `fingerprint` binds the profile to a model (name, family, layer and head counts), `calibration` describes the
    data it was measured on and `settings` how; all three are written to the file (`omnipress.profiles.store`).
    """

    scores: torch.Tensor  # (num_layers, num_kv_heads) float32
    kind: str = "generic"
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    fingerprint: ModelFingerprint | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32)
        if self.scores.dim() != 2 or 0 in self.scores.shape:
            raise ValueError(
                f"a head profile is a (num_layers, num_kv_heads) table, got shape {tuple(self.scores.shape)}"
            )
        if not torch.isfinite(self.scores).all() or bool((self.scores < 0).any()):
            raise ValueError("head profile scores must be finite and non-negative")
        if self.fingerprint is None:
            self.fingerprint = ModelFingerprint(
                name=self.model, num_layers=self.num_layers, num_kv_heads=self.num_kv_heads
            )
        elif not self.model:
            self.model = self.fingerprint.name
        fp = self.fingerprint
        if (fp.num_layers and fp.num_layers != self.num_layers) or (
            fp.num_kv_heads and fp.num_kv_heads != self.num_kv_heads
        ):
            raise ValueError(
                f"head profile scores have shape {tuple(self.scores.shape)}, its model fingerprint says "
                f"{fp.num_layers} layers x {fp.num_kv_heads} KV heads"
            )

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

    def check_model(self, model: nn.Module | ModelFingerprint | str) -> None:
        """Raise `ProfileError` when the profile was built for another model (name, family or shape)."""
        self.record().check_model(model, "head profile")

    # -- files -------------------------------------------------------------------------------------------------
    def record(self) -> ProfileRecord:
        """The profile as a file record."""
        assert self.fingerprint is not None
        data: dict[str, Any] = {"scores": tensor_to_json(self.scores)}
        if self.meta:
            data["meta"] = self.meta
        return ProfileRecord(self.kind, self.fingerprint, data, dict(self.calibration), dict(self.settings))

    def save(self, path: str | Path) -> Path:
        """Write the profile as a versioned JSON file."""
        return save_profile(self.record(), path)

    @classmethod
    def from_record(cls, record: ProfileRecord, where: str = "head profile") -> HeadProfile:
        if "scores" not in record.data:
            raise ProfileError(f"{where} has no 'scores' table")
        scores = tensor_from_json(record.data["scores"], "scores", dim=2, where=where)
        meta = record.data.get("meta", {})
        if record.format_version == 0:  # version 0 kept its settings in 'meta'
            meta, settings = dict(record.settings), {}
        else:
            settings = dict(record.settings)
        try:
            return cls(
                scores,
                kind=record.kind,
                model=record.model.name,
                meta=dict(meta) if isinstance(meta, dict) else {},
                fingerprint=record.model,
                calibration=dict(record.calibration),
                settings=settings,
            )
        except ValueError as err:
            raise ProfileError(f"{where}: {err}") from None

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        kind: str | None = None,
        model: nn.Module | ModelFingerprint | str | None = None,
    ) -> HeadProfile:
        """Read a profile file, or a profile shipped with omnipress by name (`shipped_profiles()`, e.g.
        `"whisper-tiny.en"`).

        Raises `FileNotFoundError` for a missing file, `ProfileError` (a `ValueError`) for a corrupt file, one of
        another `kind`, one built for another `model`, or one written by a newer omnipress.
        """
        where = f"head profile {path}"
        file = Path(path)
        if file.is_file():
            text = file.read_text()
        elif isinstance(path, str) and shipped_name(path) is not None:
            text = resources.files(__package__).joinpath("data", shipped_profiles()[shipped_name(path)]).read_text()
            where = f"shipped head profile {path!r}"
        else:
            names = ", ".join(sorted(shipped_profiles())) or "none"
            raise FileNotFoundError(f"head profile {path} does not exist (shipped profiles: {names})")
        record = read_profile_json(text, where)
        check_kind(record, kind, where)
        profile = cls.from_record(record, where)
        if model is not None:
            record.check_model(model, where)
        return profile


def shipped_name(name: str) -> str | None:
    """The shipped profile `name` designates (`"whisper-tiny.en"`, `"whisper-tiny-en"`, `"openai/whisper-tiny.en"`
    all name the same one), or None."""
    wanted = normalize_model_name(name)
    return next((known for known in shipped_profiles() if normalize_model_name(known) == wanted), None)


def shipped_profiles() -> dict[str, str]:
    """Profiles that ship inside the package: `{name: file name}` under `omnipress/profiles/data/`."""
    folder = resources.files(__package__).joinpath("data")
    if not folder.is_dir():
        return {}
    return {entry.name.removesuffix(".json"): entry.name for entry in folder.iterdir() if entry.name.endswith(".json")}
