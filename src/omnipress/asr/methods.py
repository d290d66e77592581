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
        MethodKind("audiokv-topk", "omnipress.kv:AudioKV", "kv", (("coverage", 0.0),)),
        MethodKind("headrouter", "omnipress.tokens.headrouter:HeadRouter", "tokens"),
        MethodKind("headrouter-topk", "omnipress.tokens.headrouter:HeadRouter", "tokens", (("segments", 0),)),
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
    """A parsed `name[knob=value;...]:ratio`; `name == "full"` is the untouched model (no ratio, no knobs).

    `knobs` are keyword arguments of the method's class (`audiokv[coverage=0]:0.4` is
    `AudioKV(compression_ratio=0.4, coverage=0.0)`), sorted by name; they are part of the label."""

    name: str
    ratio: float | None = None
    knobs: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        name = self.name
        if self.knobs:
            name += "[" + ";".join(f"{key}={_knob_text(value)}" for key, value in self.knobs) + "]"
        return name if self.ratio is None else f"{name}:{self.ratio:g}"

    @property
    def kind(self) -> MethodKind | None:
        return METHODS.get(self.name)


def _knob_text(value: Any) -> str:
    """A knob value as a spec writes it (`true`, `none`, `0.5`)."""
    return str(value).lower() if value is None or isinstance(value, bool) else str(value)


def _knob_value(text: str) -> Any:
    """A knob value: an int, a float, true/false/none, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def _parse_knobs(raw: str, text: str) -> tuple[tuple[str, Any], ...]:
    knobs: dict[str, Any] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or not value.strip():
            raise ValueError(f"{raw!r}: knobs are name=value pairs separated by ';', e.g. audiokv[coverage=0]:0.4")
        if key in ("compression_ratio", "retain"):
            raise ValueError(f"{raw!r}: the ratio goes after the colon, not in a {key} knob")
        if key in knobs:
            raise ValueError(f"{raw!r}: knob {key!r} given twice")
        knobs[key] = _knob_value(value)
    return tuple(sorted(knobs.items()))


def parse_method_spec(text: str) -> MethodSpec:
    """`"full"` or `"name:ratio"` / `"name[knob=value;...]:ratio"` (ratio in [0, 1) for KV presses, (0, 1] for token
    pruners; knobs are keyword arguments of the method). `ValueError` names the known methods on an unknown name and
    says what the ratio means on a bad one."""
    raw = text.strip()
    head, sep, value = raw.rpartition(":") if "]" in raw else raw.partition(":")
    if "]" in raw and not sep:
        head, value = raw, ""
    knobs: tuple[tuple[str, Any], ...] = ()
    if "[" in head or "]" in head:
        name, bracket, rest = head.partition("[")
        if not bracket or not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1]:
            raise ValueError(f"{raw!r}: write knobs as name[knob=value;...]:ratio")
        knobs = _parse_knobs(raw, rest[:-1])
    else:
        name = head
    name = name.strip().lower()
    if name == "full":
        if sep or knobs:
            raise ValueError(f"'full' takes no ratio and no knobs, got {raw!r}")
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
    return MethodSpec(name, ratio, knobs)


def parse_method_list(text: str) -> list[MethodSpec]:
    """Comma-separated specs (`"full,audiokv:0.4,audiokv[coverage=0]:0.4,headrouter:0.7"`), without duplicates."""
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
    ignored otherwise, so one option set can serve a whole method list. The spec's knobs override both the
    registry's defaults and `options`; a knob the class does not take is a `ValueError`.
    """
    if isinstance(spec, str):
        spec = parse_method_spec(spec)
    if spec.name == "full":
        return None
    kind = METHODS[spec.name]
    cls = method_class(spec.name)
    ratio_field = "compression_ratio" if kind.stage == "kv" else "retain"
    knobs = dict(spec.knobs)
    if "+" in kind.target:  # a wrapper around a host press: the host takes the ratio
        host_name = kind.target.partition(":")[2].split("+")[0]
        host = getattr(importlib.import_module(kind.target.partition(":")[0]), host_name)
        _check_knobs(spec, cls, knobs)
        inner = host(**{ratio_field: spec.ratio}, **_accepted(host, options))
        return cls(inner, **knobs)
    _check_knobs(spec, cls, knobs)
    return cls(**{ratio_field: spec.ratio, **dict(kind.defaults), **_accepted(cls, options), **knobs})


def check_knobs(spec: MethodSpec) -> None:
    """`ValueError` when a knob of `spec` is not a keyword argument of its class (imports the class)."""
    if spec.name != "full":
        _check_knobs(spec, method_class(spec.name), dict(spec.knobs))


def _check_knobs(spec: MethodSpec, cls: Callable[..., Any], knobs: dict[str, Any]) -> None:
    parameters = inspect.signature(cls).parameters
    unknown = sorted(k for k in knobs if k not in parameters)
    if unknown:
        known = ", ".join(k for k in parameters if k not in ("compression_ratio", "retain", "host"))
        raise ValueError(f"{cls.__name__} takes no {', '.join(unknown)}; its knobs: {known}")


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
