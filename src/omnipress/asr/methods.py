"""Method specs for ASR evaluation: `"full"`, `"snapkv:0.4"`, `"headrouter:0.7"` -> an omnipress method.

The number after the colon is the **compression ratio** (fraction of the audio's KV entries removed) for KV presses
and the **retained share** of audio tokens for token pruners, as the papers report them. Every factory imports its
method lazily, so a method whose module is missing (or not importable) only fails when it is asked for, with a
`MethodUnavailableError` that names it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class MethodUnavailableError(ImportError):
    """A registered method's implementation cannot be imported in this installation."""


@dataclass(frozen=True)
class MethodKind:
    """One registry entry: where the class lives, what the ratio means, how to build it."""

    name: str
    target: str  # "module:Class"; "module:Host+Wrapper" wraps the host (MixKV)
    stage: str  # "kv" (ratio = compression) or "tokens" (ratio = retained share)
    defaults: tuple[tuple[str, Any], ...] = ()

    @property
    def ratio_meaning(self) -> str:
        return "compression" if self.stage == "kv" else "retain"


#: name -> method (the keys `--methods` accepts, besides "full")
METHODS: dict[str, MethodKind] = {
    kind.name: kind
    for kind in (
        MethodKind("snapkv", "omnipress.kv:SnapKV", "kv"),
        MethodKind("adakv", "omnipress.kv:AdaKV", "kv"),
        MethodKind("pyramidkv", "omnipress.kv:PyramidKV", "kv"),
        MethodKind("h2o", "omnipress.kv:H2O", "kv"),
        MethodKind("streamingllm", "omnipress.kv:StreamingLLM", "kv"),
        MethodKind("knorm", "omnipress.kv:KNorm", "kv"),
        MethodKind("random", "omnipress.kv:RandomPress", "kv"),
        MethodKind("mixkv", "omnipress.kv:SnapKV+MixKV", "kv"),
        MethodKind("audiokv", "omnipress.kv:AudioKV", "kv"),
        MethodKind("headrouter", "omnipress.tokens.headrouter:HeadRouter", "tokens"),
        MethodKind("fastv", "omnipress.tokens.inllm:FastV", "tokens"),
        MethodKind("dart", "omnipress.tokens.inllm:DART", "tokens"),
        MethodKind("frame", "omnipress.tokens.inllm:FrameAudioPruner", "tokens"),
        MethodKind("random-tokens", "omnipress.tokens.inllm:RandomAudioPruner", "tokens"),
    )
}
KV_METHODS = tuple(n for n, k in METHODS.items() if k.stage == "kv")
TOKEN_METHODS = tuple(n for n, k in METHODS.items() if k.stage == "tokens")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed `name[:ratio]`; `name == "full"` is the untouched model (no ratio)."""

    name: str
    ratio: float | None = None

    @property
    def label(self) -> str:
        return self.name if self.ratio is None else f"{self.name}:{self.ratio:g}"

    @property
    def kind(self) -> MethodKind | None:
        return METHODS.get(self.name)


def parse_method_spec(text: str) -> MethodSpec:
    """`"full"` or `"name:ratio"` (ratio in [0, 1) for KV presses, (0, 1] for token pruners). `ValueError` names the
    known methods on an unknown name and says what the ratio means on a bad one."""
    raw = text.strip()
    name, sep, value = raw.partition(":")
    name = name.strip().lower()
    if name == "full":
        if sep:
            raise ValueError(f"'full' takes no ratio, got {raw!r}")
        return MethodSpec("full")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: full, {', '.join(METHODS)}")
    kind = METHODS[name]
    if not sep:
        raise ValueError(f"{name} needs a ratio: {name}:<{kind.ratio_meaning}>, e.g. {name}:0.4")
    try:
        ratio = float(value)
    except ValueError:
        raise ValueError(f"{raw!r}: the ratio must be a number") from None
    if kind.stage == "kv" and not 0.0 <= ratio < 1.0:
        raise ValueError(f"{raw!r}: a KV press's ratio is the compression (fraction removed), in [0, 1)")
    if kind.stage == "tokens" and not 0.0 < ratio <= 1.0:
        raise ValueError(f"{raw!r}: a token pruner's ratio is the retained share of audio tokens, in (0, 1]")
    return MethodSpec(name, ratio)


def parse_method_list(text: str) -> list[MethodSpec]:
    """Comma-separated specs (`"full,audiokv:0.4,headrouter:0.7"`), without duplicates."""
    specs = [parse_method_spec(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError("no method given")
    labels = [s.label for s in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"methods listed twice: {', '.join(duplicates)}")
    return specs


def method_class(name: str) -> Callable[..., Any]:
    """The class a registry name builds (imported now); `MethodUnavailableError` if it cannot be imported."""
    kind = METHODS.get(name)
    if kind is None:
        raise ValueError(f"unknown method {name!r}; known: full, {', '.join(METHODS)}")
    module_name, _, attr = kind.target.partition(":")
    attr = attr.split("+")[-1]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as error:
        raise MethodUnavailableError(
            f"method {name!r} ({module_name}.{attr}) is not available in this installation: {error}"
        ) from error


def build_method(spec: MethodSpec | str, **options: Any) -> Any:
    """The omnipress method for `spec` (None for `"full"`).

    KV presses get `compression_ratio=ratio`, token pruners `retain=ratio`. `options` (for example `profile=` for
    AudioKV or `profiles=` for HeadRouter, `window=`) are passed to the method when its class takes them, and
    ignored otherwise, so one option set can serve a whole method list.
    """
    if isinstance(spec, str):
        spec = parse_method_spec(spec)
    if spec.name == "full":
        return None
    kind = METHODS[spec.name]
    cls = method_class(spec.name)
    ratio_field = "compression_ratio" if kind.stage == "kv" else "retain"
    if "+" in kind.target:  # a wrapper around a host press: the host takes the ratio
        host_name = kind.target.partition(":")[2].split("+")[0]
        host = getattr(importlib.import_module(kind.target.partition(":")[0]), host_name)
        inner = host(**{ratio_field: spec.ratio}, **_accepted(host, options))
        return cls(inner)
    return cls(**{ratio_field: spec.ratio}, **dict(kind.defaults), **_accepted(cls, options))


def _accepted(cls: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(cls).parameters
    return {k: v for k, v in options.items() if k in parameters and v is not None}


def shipped_method_options(model: Any) -> dict[str, Any]:
    """Profiles shipped in the package (`omnipress/profiles/data/`) that fit `model`: `{"profile": HeadProfile}`
    for AudioKV and `{"profiles": RouterProfiles}` for HeadRouter, each only when one loads for this model."""
    from importlib import resources

    from ..profiles import HeadProfile
    from ..profiles.head_profile import shipped_profiles
    from ..profiles.router import RouterProfiles

    folder = resources.files("omnipress.profiles").joinpath("data")
    found: dict[str, Any] = {}
    for _, file in sorted(shipped_profiles().items()):
        for key, cls in (("profile", HeadProfile), ("profiles", RouterProfiles)):
            if key in found:
                continue
            try:
                found[key] = cls.load(str(folder.joinpath(file)), model=model)
            except (ValueError, KeyError, TypeError):
                continue  # another kind of profile, or one for another model
    return found
