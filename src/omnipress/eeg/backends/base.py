"""One interface for every VLM backend: a :class:`Prompt` in, an :class:`Answer` out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from omnipress.eeg.prompts import Prompt


class BackendFatalError(RuntimeError):
    """An error no retry can fix (bad credentials, unknown model or URL): the run stops."""


@dataclass
class Answer:
    """What a backend returned for one prompt.

    Attributes
    ----------
    text : str or None
        The model's answer; ``None`` when the request failed (see ``error``).
    error : str or None
        Why the request failed after all retries (transport error, HTTP status, ...).
    latency_s : float
        Wall-clock seconds including retries.
    attempts : int
        Requests sent.
    usage : dict
        Token counts reported by the backend (``prompt_tokens``, ``completion_tokens``).
    info : dict
        Backend-specific measurements (prefill seconds, KV bytes, reused prefix tokens, finish reason).
    """

    text: str | None
    error: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    usage: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(ABC):
    """A vision-language model that answers interleaved text-and-image prompts.

    Subclasses implement :meth:`generate`. :meth:`map` answers many prompts and yields each answer as soon
    as it arrives (sequentially here; concurrently in backends that set ``concurrency > 1``).
    Transient failures are returned as ``Answer(text=None, error=...)``; only unrecoverable configuration
    errors raise :class:`BackendFatalError`.
    """

    name: str = "backend"

    @abstractmethod
    def generate(self, prompt: Prompt) -> Answer:
        """Answer one prompt."""

    def map(self, jobs: Iterable[tuple[Hashable, Prompt]]) -> Iterator[tuple[Hashable, Answer]]:
        """Answer ``(key, prompt)`` jobs; yields ``(key, answer)`` in completion order."""
        for key, prompt in jobs:
            yield key, self.generate(prompt)

    def describe(self) -> dict[str, Any]:
        """Settings recorded with a run (never secrets)."""
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing to release)
        """Release resources (connections, models)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Answer", "Backend", "BackendFatalError"]
