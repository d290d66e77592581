"""Memory policies of a streaming session: which frame blocks the live cache keeps as the stream grows.

- `FullMemory`: every block stays (memory grows with the stream).
- `WindowMemory`: the prompt prefix, the first `sinks` blocks (attention sinks, StreamingLLM-style) and the `frames`
  most recent blocks stay; older blocks are evicted from the live cache after each append.
- `RetrievalMemory` (ReKV, Di et al. 2025, https://arxiv.org/abs/2503.00540): the same live window, but a block
  leaving it is first copied to host memory (`BlockStore`); before answering, each layer brings back the `retrieve`
  offloaded blocks most relevant to the question (mean attention logit of the question to the block's mean key).

A *block* is one frame for LLaVA-OneVision and one temporal patch (`temporal_patch_size` frames, 2) for Qwen-VL.
Under window and retrieval the live cache holds at most `prefix + (sinks + frames) * block` entries per KV head (and
retrieval's answering cache `retrieve` blocks more), however long the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

POLICIES = ("full", "window", "retrieval")


@dataclass(frozen=True)
class FullMemory:
    """Keep every frame block in the live cache."""

    kind: ClassVar[str] = "full"


@dataclass(frozen=True)
class WindowMemory:
    """Keep the prefix, the first `sinks` blocks and the last `frames` blocks; evict the others.

    Parameters
    ----------
    frames : int
        Most recent blocks kept (>= 1).
    sinks : int
        First blocks of the stream kept for good (attention sinks, >= 0).
    """

    frames: int = 16
    sinks: int = 1

    kind: ClassVar[str] = "window"

    def __post_init__(self) -> None:
        _check_int("frames", self.frames, 1)
        _check_int("sinks", self.sinks, 0)

    def evictable(self, live: list[int]) -> list[int]:
        """Of the live non-sink block indices `live` (ascending), those that leave the window."""
        return live[: max(0, len(live) - self.frames)]


@dataclass(frozen=True)
class RetrievalMemory(WindowMemory):
    """`WindowMemory` whose evicted blocks go to host memory and come back per question (module docstring).

    Parameters
    ----------
    frames, sinks : int
        The live window, as in `WindowMemory`.
    retrieve : int
        Offloaded blocks brought back per layer for each question (ReKV retrieves 64 frame blocks).
    """

    frames: int = 8
    sinks: int = 1
    retrieve: int = 8

    kind: ClassVar[str] = "retrieval"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("retrieve", self.retrieve, 1)


MemoryPolicy = FullMemory | WindowMemory | RetrievalMemory


def memory_policy(memory: str | MemoryPolicy) -> MemoryPolicy:
    """A policy from its name (`"full"`, `"window"`, `"retrieval"`, default knobs) or a policy instance."""
    if isinstance(memory, FullMemory | WindowMemory):
        return memory
    defaults = {"full": FullMemory, "window": WindowMemory, "retrieval": RetrievalMemory}
    if not isinstance(memory, str) or memory not in defaults:
        raise ValueError(
            f"unknown memory policy {memory!r}; use one of {POLICIES} or FullMemory(), WindowMemory(frames=, sinks=), "
            "RetrievalMemory(frames=, sinks=, retrieve=)"
        )
    return defaults[memory]()


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
