"""The method base every omnipress method derives from, its reversible context, and `compose`.

A method is a small dataclass of knobs. Applying it to a model is a context manager::

    with press(model):                        # one method
        model.generate(...)
    with cacher(model), pruner(model), press(model):   # several, any order, any nesting
        model.generate(...)
    with op.compose(cacher, pruner, press)(model):      # the same, as one object
        model.generate(...)

Entering a method attaches it to the model's `ModelSession` (created on the first method, removed with the last);
the method registers listeners and hooks there. Leaving it, normally or by an exception, removes exactly what it
added. A method whose entry fails leaves the model as it found it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

if TYPE_CHECKING:
    from .session import Listener, ModelSession

STAGES = ("encoder", "tokens", "kv")


class Method(ABC):
    """Base of every omnipress method (encoder, token and KV-cache stages).

    Subclasses set `stage` and implement `attach`, which registers the method's listener on a `ModelSession` and
    returns it. `exclusive` methods refuse a second active method of the same stage on one model (two KV presses
    would fight over the same cache: combine them with `MixKV(host)` or a scoring plug-in instead).
    """

    stage: ClassVar[str] = "kv"
    exclusive: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def attach(self, session: ModelSession) -> Listener:
        """Register this method on `session` and return its listener (the session detaches it on exit)."""

    def __call__(self, model: nn.Module) -> MethodContext:
        """Context manager applying this method to `model` (undone on exit, even after an exception)."""
        return MethodContext(self, model)


class MethodContext:
    """`with method(model):` — attaches the method to the model's session on enter, detaches it on exit."""

    def __init__(self, method: Method, model: nn.Module) -> None:
        self.method, self.model = method, model
        self._session: ModelSession | None = None

    def __enter__(self) -> Any:
        from .session import ModelSession

        session = ModelSession.of(self.model)
        session.enter(self.method)  # leaves no trace if it raises
        self._session = session
        return self.method

    def __exit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.exit(self.method)


@dataclass(frozen=True)
class Composed:
    """Several methods applied together, in order: `op.compose(a, b, c)(model)` equals `with a(model), b(model),
    c(model):`. Entering stops at the first failure and undoes the methods already entered."""

    methods: tuple[Method, ...]

    @property
    def name(self) -> str:
        return " + ".join(m.name for m in self.methods)

    def __call__(self, model: nn.Module) -> _ComposedContext:
        return _ComposedContext(self, model)

    def __iter__(self):
        return iter(self.methods)


class _ComposedContext:
    def __init__(self, composed: Composed, model: nn.Module) -> None:
        self.composed, self.model = composed, model
        self._entered: list[MethodContext] = []

    def __enter__(self) -> Composed:
        try:
            for method in self.composed.methods:
                context = method(self.model)
                context.__enter__()
                self._entered.append(context)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.composed

    def __exit__(self, *exc: object) -> None:
        while self._entered:
            self._entered.pop().__exit__(*exc)


def compose(*methods: Method | Composed | Sequence[Method]) -> Composed:
    """Apply several methods as one: `with op.compose(cacher, pruner, press)(model): ...`."""
    flat: list[Method] = []
    for item in methods:
        if isinstance(item, Composed):
            flat.extend(item.methods)
        elif isinstance(item, Method):
            flat.append(item)
        elif isinstance(item, Sequence) and not isinstance(item, str):
            flat.extend(compose(*item).methods)
        else:
            raise TypeError(f"compose() takes omnipress methods, got {type(item).__name__}")
    if not flat:
        raise ValueError("compose() needs at least one method")
    return Composed(tuple(flat))
