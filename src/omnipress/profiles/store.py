"""Versioned JSON profile files: one record format for every offline profile omnipress measures.

A profile file is a JSON object::

    {
      "format": "omnipress-profile",
      "format_version": 1,
      "kind": "audio_heads",                  # what was measured (a HeadProfile kind, "router", ...)
      "model": {"name": "openai/whisper-tiny.en", "family": "whisper", "num_layers": 4,
                "num_heads": 6, "num_kv_heads": 6},
      "calibration": {...},                   # what it was measured on (data set, list, clip count, ...)
      "settings": {...},                      # how (score variant, window, ...)
      "data": {...},                          # the kind's payload (tables as nested lists)
      "omnipress_version": "0.1.0",
      "created": "2026-11-26T06:00:00+00:00"
    }

`save_profile` writes a `ProfileRecord`; `load_profile` reads one and refuses, with one clear message, a file of
another kind, one built for another model (other family, layer or head count, or another model name when both
names are known) and one written by a newer format version. Files written before the format existed (a bare
`{"kind", "model", "meta", "scores"}` object) read as version 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: the newest profile file format this version reads and writes
FORMAT_VERSION = 1
FORMAT_NAME = "omnipress-profile"


class ProfileError(ValueError):
    """A profile file that cannot be used: corrupt, of another kind, for another model, or too new."""


@dataclass(frozen=True)
class ModelFingerprint:
    """What a profile is bound to: the model's name and the shape of the attention it was measured on.

    `num_layers` / `num_heads` / `num_kv_heads` describe the profiled attention: the LLM's self-attention for
    decoder-only LALMs (Qwen2-Audio, the Qwen2.5-Omni thinker), the decoder's cross-attention for Whisper.
    An empty `name` (a tiny random model built from a config) matches any name.
    """

    name: str = ""
    family: str = ""
    num_layers: int = 0
    num_heads: int = 0
    num_kv_heads: int = 0

    @classmethod
    def of(cls, model: nn.Module, name: str = "") -> ModelFingerprint:
        """The fingerprint of a loaded model (any family omnipress has an adapter for)."""
        from ..adapters import get_adapter

        adapter = get_adapter(model)
        if not name:
            config = getattr(model, "config", None)
            name = str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")
        return cls(
            name=name,
            family=adapter.family,
            num_layers=int(adapter.num_layers),
            num_heads=int(adapter.num_attention_heads),
            num_kv_heads=int(adapter.num_key_value_heads),
        )

    @classmethod
    def from_json(cls, data: Any, where: str = "profile") -> ModelFingerprint:
        if isinstance(data, str):  # version 0 files only kept a name
            return cls(name=data)
        if not isinstance(data, dict):
            raise ProfileError(f"{where}: 'model' must be an object, got {type(data).__name__}")
        try:
            return cls(
                name=str(data.get("name", "")),
                family=str(data.get("family", "")),
                num_layers=int(data.get("num_layers", 0)),
                num_heads=int(data.get("num_heads", 0)),
                num_kv_heads=int(data.get("num_kv_heads", 0)),
            )
        except (TypeError, ValueError) as err:
            raise ProfileError(f"{where}: bad 'model' entry {data!r}: {err}") from None

    def mismatch(self, other: ModelFingerprint) -> str | None:
        """Why a profile with this fingerprint cannot be used on `other` (`None` when it can). Fields unknown on
        either side (empty name or family, zero counts) are not compared."""
        if self.name and other.name and normalize_model_name(self.name) != normalize_model_name(other.name):
            return f"it was built for model {self.name!r}, not {other.name!r}"
        if self.family and other.family and self.family != other.family:
            return f"it was built for a {self.family} model, this is a {other.family} model"
        for key in ("num_layers", "num_heads", "num_kv_heads"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine and theirs and mine != theirs:
                return f"it has {key}={mine}, the model has {theirs}"
        return None

    def describe(self) -> str:
        shape = f"{self.num_layers} layers x {self.num_heads} heads ({self.num_kv_heads} KV)"
        return f"{self.name or '<unnamed>'} [{self.family or '?'}; {shape}]"


def normalize_model_name(name: str) -> str:
    """`openai/whisper-tiny.en`, `/models/whisper_tiny.en` and `whisper-tiny-en` all name the same model."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[._\s]+", "-", base)


@dataclass
class ProfileRecord:
    """One profile file's content: `data` is the kind-specific payload (JSON-ready: use `tensor_to_json`)."""

    kind: str
    model: ModelFingerprint
    data: dict[str, Any]
    calibration: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    omnipress_version: str = ""
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "model": asdict(self.model),
            "calibration": self.calibration,
            "settings": self.settings,
            "data": self.data,
            "omnipress_version": self.omnipress_version or __version__,
            "created": self.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def check_model(self, model: nn.Module | ModelFingerprint | str, where: str = "profile") -> None:
        """Raise `ProfileError` when this profile was built for another model than `model` (a loaded model, a
        fingerprint or a model name)."""
        if isinstance(model, str):
            model = ModelFingerprint(name=model)
        elif isinstance(model, nn.Module):
            model = ModelFingerprint.of(model)
        why = self.model.mismatch(model)
        if why is not None:
            raise ProfileError(
                f"{where} ({self.kind!r}) does not fit this model: {why}. Profile: {self.model.describe()}; "
                f"model: {model.describe()}. Measure a profile for this model (omnipress profile ...)."
            )


def save_profile(record: ProfileRecord, path: str | Path) -> Path:
    """Write `record` as a versioned JSON profile file (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_json(), indent=1) + "\n")
    return path


def read_profile_json(text: str, where: str = "profile") -> ProfileRecord:
    """Parse a profile file's text (any format version up to `FORMAT_VERSION`)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProfileError(f"{where} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} is not a profile (a JSON object), got {type(raw).__name__}")
    if "format_version" not in raw:  # version 0: {"kind", "model", "meta", "scores"}
        if "scores" not in raw:
            raise ProfileError(f"{where} is not an omnipress profile (no 'format_version', no 'scores')")
        meta = raw.get("meta", {})
        return ProfileRecord(
            kind=str(raw.get("kind", "generic")),
            model=ModelFingerprint.from_json(raw.get("model", ""), where),
            data={"scores": raw["scores"]},
            settings=dict(meta) if isinstance(meta, dict) else {},
            format_version=0,
        )
    version = raw["format_version"]
    if not isinstance(version, int) or version < 1:
        raise ProfileError(f"{where} has a bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ProfileError(
            f"{where} has profile format version {version}; this omnipress reads up to version {FORMAT_VERSION}: "
            f"upgrade omnipress (the file says it was written by omnipress {raw.get('omnipress_version', '?')})"
        )
    if raw.get("format") != FORMAT_NAME:
        raise ProfileError(f"{where} is not an omnipress profile (format {raw.get('format')!r})")
    for key in ("kind", "model", "data"):
        if key not in raw:
            raise ProfileError(f"{where} has no {key!r} entry")
    for key in ("data", "calibration", "settings"):
        if not isinstance(raw.get(key, {}), dict):
            raise ProfileError(f"{where}: {key!r} must be an object")
    return ProfileRecord(
        kind=str(raw["kind"]),
        model=ModelFingerprint.from_json(raw["model"], where),
        data=raw["data"],
        calibration=raw.get("calibration", {}),
        settings=raw.get("settings", {}),
        format_version=version,
        omnipress_version=str(raw.get("omnipress_version", "")),
        created=str(raw.get("created", "")),
    )


def load_profile(
    path: str | Path,
    *,
    kind: str | Collection[str] | None = None,
    model: nn.Module | ModelFingerprint | str | None = None,
) -> ProfileRecord:
    """Read a profile file.

    Parameters
    ----------
    path:
        The JSON file.
    kind:
        The kind (or kinds) the caller accepts; another kind is a `ProfileError`.
    model:
        The model it will be used with (a loaded model, a fingerprint or a name); a profile built for another
        model is a `ProfileError`.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"profile {path} does not exist") from None
    except UnicodeDecodeError:
        raise ProfileError(f"profile {path} is not a text (JSON) file") from None
    record = read_profile_json(text, f"profile {path}")
    check_kind(record, kind, f"profile {path}")
    if model is not None:
        record.check_model(model, f"profile {path}")
    return record


def check_kind(record: ProfileRecord, kind: str | Collection[str] | None, where: str = "profile") -> None:
    if kind is None:
        return
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if record.kind not in kinds:
        raise ProfileError(f"{where} is a {record.kind!r} profile; expected {' or '.join(map(repr, kinds))}")


def tensor_to_json(tensor: torch.Tensor) -> list:
    """A float tensor as nested lists (float32 values survive the JSON round trip exactly)."""
    return tensor.detach().float().cpu().tolist()


def tensor_from_json(value: Any, name: str, *, dim: int | None = None, where: str = "profile") -> torch.Tensor:
    """Nested lists back to a float32 tensor; a ragged or non-numeric table is a `ProfileError`."""
    try:
        tensor = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise ProfileError(f"{where}: {name!r} is not a numeric table: {err}") from None
    if dim is not None and tensor.dim() != dim:
        raise ProfileError(f"{where}: {name!r} must be a {dim}-D table, got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ProfileError(f"{where}: {name!r} has non-finite values")
    return tensor
