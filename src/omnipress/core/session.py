"""Per-model state while omnipress methods are active: one dispatcher, many listeners.

`ModelSession.of(model)` is created when the first method enters on a model and dropped when the last one leaves.
While it lives it owns everything omnipress changes on the model, and restores all of it on exit:

- the language model's attention implementation is switched to `omnipress:<base>` (`omnipress.core.dispatch`),
  and each decoder attention module (self- and, for encoder-decoder models, cross-attention) is routed to this
  session;
- a forward pre-hook on the generating model records its inputs (`session.inputs`: `input_ids`, attention mask,
  media tensors), from which methods compute per-row modality spans;
- forward pre/post hooks on the language model record the cache and the call (`session.call`) and bind any ragged
  cache layer to this session, so the layer can refuse to be decoded outside an omnipress context.

Methods register a `Listener` (their callbacks) and may add hooks of their own through it; the session calls the
listeners in the order the methods entered. No state lives in module globals except the weak module -> session
routing table the registered attention function needs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

from ..adapters import get_adapter
from ..cache.ragged import RaggedLayer
from . import dispatch

if TYPE_CHECKING:
    from .method import Method

_SESSIONS: WeakKeyDictionary[nn.Module, ModelSession] = WeakKeyDictionary()


@dataclass
class LMCall:
    """One forward of the language model, as the session saw it before it ran."""

    batch_size: int
    num_tokens: int  # new tokens in this call
    past_length: int  # logical cache length before the call
    cache: Any
    input_ids: torch.Tensor | None  # (batch, num_tokens) when the LM got ids
    attention_mask: torch.Tensor | None  # the 2-D mask the LM received, (batch, past + num_tokens)
    use_cache: bool

    @property
    def is_prefill(self) -> bool:
        """A prompt of more than one token on an empty cache."""
        return self.past_length == 0 and self.num_tokens > 1


class Listener:
    """Callbacks of one active method; override what you need.

    Hooks a method adds while it attaches should go through `session.hook_forward_pre` / `session.hook_forward`: the
    session gives them to the listener the method returns, or removes them if the entry fails. Hooks added later
    with the listener's own `hook_*` are removed on detach too.
    """

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # callbacks (the session calls them in the order the methods entered)
    def transform_lm_inputs(self, session: ModelSession, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """Before each language-model forward, before `before_lm`: may return new keyword arguments for it (e.g. a
        token pruner drops columns of `inputs_embeds`, `attention_mask` and `position_ids`). None keeps them."""
        return None

    def before_lm(self, session: ModelSession, call: LMCall) -> None:
        """Before each language-model forward."""

    def before_attention(self, session: ModelSession, module: nn.Module, query: torch.Tensor, layer: Any) -> Any:
        """Before the attention of a routed module, after its cache layer took the new keys and values: may return
        a `RaggedLayer` that replaces `layer` in the current cache and is attended instead (a streaming session
        brings retrieved blocks back this way). None keeps `layer`."""
        return None

    def after_attention(
        self,
        session: ModelSession,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kwargs: dict[str, Any],
        layer: Any,
    ) -> None:
        """After the attention of a routed module ran; `layer` is its cache layer (ragged or not, or None)."""

    def after_lm(self, session: ModelSession, call: LMCall, output: Any) -> None:
        """After each language-model forward."""

    # hooks owned by the listener
    def hook_forward_pre(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = True) -> None:
        self._handles.append(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))

    def hook_forward(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = True) -> None:
        self._handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def close(self) -> None:
        """Remove every hook this listener added (idempotent)."""
        while self._handles:
            self._handles.pop().remove()


class ModelSession:
    """What omnipress changed on one model while methods are active (see module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.adapter = get_adapter(model)  # raises UnsupportedModelError for other models
        weight = next(model.parameters(), None)
        if weight is not None and weight.device.type == "meta":
            raise ValueError(
                f"{type(model).__name__}'s weights are on the meta device (created without data, e.g. under "
                "init_empty_weights or device_map='meta'): load the real weights before applying omnipress"
            )
        self.methods: list[Method] = []
        self.listeners: list[Listener] = []
        self._by_method: dict[int, Listener] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._saved_impl: str | None = None
        self._routes: dict[nn.Module, tuple[str, int]] = {}
        self._bound: Any = None
        self.inputs: dict[str, Any] | None = None
        self.call: LMCall | None = None
        self.cache: Any = None
        # per-row spans of the current language-model call when a method changed its tokens (a pruner); methods that
        # need spans read `prompt_spans` instead of recomputing them from the recorded inputs
        self.prompt_spans: list[Any] | None = None
        self._entering: list[torch.utils.hooks.RemovableHandle] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @classmethod
    def of(cls, model: nn.Module) -> ModelSession:
        """The model's live session, or a new (not yet installed) one."""
        session = _SESSIONS.get(model)
        return session if session is not None else cls(model)

    @classmethod
    def active_on(cls, model: nn.Module) -> ModelSession | None:
        """The model's session while a method is active on it, else None."""
        return _SESSIONS.get(model)

    @property
    def active(self) -> bool:
        return bool(self.methods)

    def enter(self, method: Method) -> None:
        """Attach `method`; on any failure everything it and this call changed is undone before re-raising."""
        if any(m is method for m in self.methods):
            raise ValueError(f"{method.name} is already active on this model")
        for other in self.methods:
            if other.stage == method.stage and (other.exclusive or method.exclusive):
                raise ValueError(
                    f"{method.name} and {other.name} are both {method.stage}-stage methods and cannot be active on one "
                    "model at the same time"
                    + (" (wrap the host in MixKV(...) to combine KV scorings)" if method.stage == "kv" else "")
                )
        first = not self.methods
        if first:
            self._install()
        self._entering = []
        try:
            listener = method.attach(self)
            if not isinstance(listener, Listener):
                raise TypeError(f"{type(method).__name__}.attach must return a Listener")
        except BaseException:
            while self._entering:
                self._entering.pop().remove()
            self._entering = None
            if first:
                self._uninstall()
            raise
        listener._handles.extend(self._entering)
        self._entering = None
        self.methods.append(method)
        self.listeners.append(listener)
        self._by_method[id(method)] = listener

    def exit(self, method: Method) -> None:
        """Detach `method`; the last one out restores the model."""
        listener = self._by_method.pop(id(method), None)
        if listener is None:
            return
        try:
            listener.close()
        finally:
            self.methods = [m for m in self.methods if m is not method]
            self.listeners = [item for item in self.listeners if item is not listener]
            if not self.methods:
                self._uninstall()

    def listener_of(self, method: Method) -> Listener | None:
        return self._by_method.get(id(method))

    def hook_forward_pre(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = True) -> None:
        """A forward pre-hook owned by the method being attached (removed on its exit or failed entry)."""
        self._own(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))

    def hook_forward(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = True) -> None:
        """A forward hook owned by the method being attached (removed on its exit or failed entry)."""
        self._own(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def replace_submodule(self, parent: nn.Module, name: str, replacement: nn.Module) -> None:
        """Put `replacement` in place of `parent.<name>` (a child module, or an index of an `nn.ModuleList`) for as
        long as the method being attached is active; the original is put back on its exit or failed entry.

        This is how a method changes what a block computes (the STC-Cacher's selective encoder layers) without
        patching any class: the replacement is a module of its own that holds the original.
        """
        original = parent[int(name)] if isinstance(parent, nn.ModuleList) else getattr(parent, name)
        if isinstance(parent, nn.ModuleList):
            parent[int(name)] = replacement
        else:
            setattr(parent, name, replacement)
        self._own(_SwapHandle(parent, name, original, replacement))

    def _own(self, handle: Any) -> None:
        if self._entering is None:
            handle.remove()
            raise RuntimeError("session hooks are added while a method attaches; later, use the listener's hook_*")
        self._entering.append(handle)

    def _install(self) -> None:
        if not getattr(self.adapter, "has_language_model", True):  # a bare encoder: only its methods' own hooks
            _SESSIONS[self.model] = self
            return
        adapter = self.adapter
        config = adapter.text_config
        try:
            self._saved_impl = config._attn_implementation
            config._attn_implementation = dispatch.wrapped_name(self._saved_impl)
            for module in adapter.attention_modules:
                self._route(module, "self")
            for module in getattr(adapter, "cross_attention_modules", []) or []:
                self._route(module, "cross")
            generator = adapter.generation_model
            self._handles.append(generator.register_forward_pre_hook(self._record_inputs, with_kwargs=True))
            lm = adapter.language_model
            self._handles.append(lm.register_forward_pre_hook(self._before_lm, with_kwargs=True))
            self._handles.append(lm.register_forward_hook(self._after_lm, with_kwargs=True))
            # a language model called with use_cache=True and no cache creates one inside its forward: the first
            # decoder layer receives it
            first_layer = adapter.decoder_layers[0]
            self._handles.append(first_layer.register_forward_pre_hook(self._record_layer_cache, with_kwargs=True))
        except BaseException:
            self._uninstall()
            raise
        _SESSIONS[self.model] = self

    def _route(self, module: nn.Module, kind: str) -> None:
        other = dispatch.ROUTES.get(module)
        if other is not None and other is not self:
            raise RuntimeError("this attention module is already routed to another omnipress session")
        dispatch.ROUTES[module] = self
        self._routes[module] = (kind, int(module.layer_idx))

    def _uninstall(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        for module in self._routes:
            if dispatch.ROUTES.get(module) is self:
                del dispatch.ROUTES[module]
        self._routes.clear()
        has_lm = getattr(self.adapter, "has_language_model", True)
        if has_lm and (
            self._saved_impl is not None or self.adapter.text_config._attn_implementation.startswith(dispatch.PREFIX)
        ):
            self.adapter.text_config._attn_implementation = self._saved_impl
        self._saved_impl = None
        if _SESSIONS.get(self.model) is self:
            del _SESSIONS[self.model]
        self.inputs = self.call = self.cache = self._bound = None

    # -- hooks ---------------------------------------------------------------------------------------------------
    def _record_inputs(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        _check_token_ids(ids)
        self.inputs = {"input_ids": ids, **{k: v for k, v in kwargs.items() if k != "input_ids"}}

    def _before_lm(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
        changed = False
        for listener in self.listeners:
            new = listener.transform_lm_inputs(self, kwargs)
            if new is not None:
                kwargs, changed = new, True
        self._lm_call(args, kwargs)
        return (args, kwargs) if changed else None

    def _lm_call(self, args: tuple, kwargs: dict[str, Any]) -> None:
        embeds = kwargs.get("inputs_embeds")
        input_ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        _check_token_ids(input_ids)
        ref = embeds if embeds is not None else input_ids
        cache = kwargs.get("past_key_values")
        if cache is None:
            cache = kwargs.get("cache")
        self.cache = cache
        self._bind(cache)
        if ref is None:
            self.call = None
            return
        mask = kwargs.get("attention_mask")
        past = cache.get_seq_length() if cache is not None else 0
        self.call = LMCall(
            batch_size=int(ref.shape[0]),
            num_tokens=int(ref.shape[1]),
            past_length=int(past),
            cache=cache,
            input_ids=input_ids if isinstance(input_ids, torch.Tensor) else None,
            attention_mask=mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None,
            use_cache=kwargs.get("use_cache") is not False,
        )
        for listener in self.listeners:
            listener.before_lm(self, self.call)

    def _record_layer_cache(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        cache = kwargs.get("cache")
        if cache is None:
            cache = kwargs.get("past_key_values")
        if cache is not None and cache is not self.cache:
            self.cache = cache
            if self.call is not None:
                self.call.cache = cache
            self._bind(cache)

    def _bind(self, cache: Any) -> None:
        """Let the ragged layers of `cache` be decoded through this session (once per cache object)."""
        if cache is None or (self._bound is not None and self._bound() is cache):
            return
        for layer in iter_cache_layers(cache):
            if isinstance(layer, RaggedLayer):
                layer.session = self
        try:
            self._bound = weakref.ref(cache)
        except TypeError:  # not weak-referenceable: bind again next time
            self._bound = None

    def _after_lm(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        call = self.call
        try:
            if call is not None:
                for listener in self.listeners:
                    listener.after_lm(self, call, output)
        finally:  # hold no reference to the cache or the inputs between calls
            self.call = self.cache = self.inputs = self.prompt_spans = None

    # -- attention (called by the registered dispatcher) ---------------------------------------------------------
    def cache_layer(self, module: nn.Module) -> Any:
        """The cache layer `module` reads in the current forward (self- or cross-attention), or None."""
        route = self._routes.get(module)
        cache = self.cache
        if route is None or cache is None:
            return None
        kind, idx = route
        if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache
            cache = cache.cross_attention_cache if kind == "cross" else cache.self_attention_cache
        layers = getattr(cache, "layers", None)
        if layers is None or idx >= len(layers):
            return None
        return layers[idx]

    def replace_layer(self, module: nn.Module, layer: Any) -> None:
        """Put `layer` in place of `module`'s cache layer in the current cache (and bind it if ragged)."""
        kind, idx = self._routes[module]
        cache = self.cache
        if hasattr(cache, "self_attention_cache"):
            cache = cache.cross_attention_cache if kind == "cross" else cache.self_attention_cache
        if isinstance(layer, RaggedLayer):
            layer.session = self
        cache.layers[idx] = layer

    def attention(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        layer = self.cache_layer(module)
        for listener in self.listeners:
            replacement = listener.before_attention(self, module, query, layer)
            if replacement is not None:
                self.replace_layer(module, replacement)
                layer = replacement
        if isinstance(layer, RaggedLayer):
            causal = self._routes[module][0] == "self"
            out = dispatch.attend_ragged(module, query, layer, kwargs, causal=causal)
        else:
            out = dispatch.base_attention(module)(module, query, key, value, attention_mask, **kwargs)
        for listener in self.listeners:
            listener.after_attention(self, module, query, key, value, kwargs, layer)
        return out

    def route_of(self, module: nn.Module) -> tuple[str, int] | None:
        """`("self" | "cross", layer_idx)` for a routed attention module."""
        return self._routes.get(module)


class _SwapHandle:
    """Puts an original submodule back (if the replacement is still the one in place)."""

    def __init__(self, parent: nn.Module, name: str, original: nn.Module, replacement: nn.Module) -> None:
        self.parent, self.name, self.original, self.replacement = parent, name, original, replacement

    def remove(self) -> None:
        parent = self.parent
        if parent is None:
            return
        if isinstance(parent, nn.ModuleList):
            if parent[int(self.name)] is self.replacement:
                parent[int(self.name)] = self.original
        elif getattr(parent, self.name) is self.replacement:
            setattr(parent, self.name, self.original)
        self.parent = None


def _check_token_ids(ids: Any) -> None:
    if isinstance(ids, torch.Tensor) and (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool):
        raise TypeError(f"input_ids must be integer token ids (torch.long), got a {ids.dtype} tensor")


def iter_cache_layers(cache: Any) -> list[Any]:
    """Every layer of a transformers cache, self- and cross-attention (EncoderDecoderCache) alike."""
    if cache is None:
        return []
    if hasattr(cache, "self_attention_cache"):
        return [*getattr(cache.self_attention_cache, "layers", []), *getattr(cache.cross_attention_cache, "layers", [])]
    return list(getattr(cache, "layers", []))
