"""What a streaming session returns: the answer and a small report."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StreamReport:
    """State of the stream when a question was answered.

    Attributes
    ----------
    frames:
        Frames appended so far (pending ones included).
    frames_in_cache:
        Frames whose entries the live cache holds (evicted and offloaded frames excluded).
    frames_pending:
        Frames waiting for the rest of their block (Qwen-VL takes frames in temporal patches of 2).
    stream_tokens:
        Language-model tokens prefilled into the stream so far (after token pruning), prefix included.
    question_tokens:
        Tokens prefilled for this question (end of video, question, assistant turn).
    kv_bytes:
        Physical key/value bytes of the live cache (spare capacity included), as the stream goes on.
    kv_bytes_kept:
        Bytes of the stored entries alone.
    answer_kv_bytes:
        Physical bytes of the cache the answer was decoded from, measured after the question's prefill (retrieval:
        the live cache plus the blocks brought back).
    offloaded_bytes:
        Host bytes of offloaded blocks (retrieval memory).
    retrieved:
        Retrieval memory: per layer, the start time (seconds) of each block brought back for this question.
    prefill_s, decode_s:
        Wall time of the question's prefill (retrieval included) and of decoding.
    """

    frames: int
    frames_in_cache: int
    frames_pending: int
    stream_tokens: int
    question_tokens: int
    kv_bytes: int
    kv_bytes_kept: int
    answer_kv_bytes: int
    offloaded_bytes: int = 0
    retrieved: dict[int, list[float]] = field(default_factory=dict)
    prefill_s: float = 0.0
    decode_s: float = 0.0


@dataclass
class PromptReport:
    """How a whole prompt was answered with prefix reuse (`StreamingSession.generate`).

    Attributes
    ----------
    prompt_tokens:
        Tokens of the prompt.
    reused_tokens:
        Leading tokens taken from the cached prefix of earlier prompts.
    prefilled_tokens:
        Tokens prefilled now (`prompt_tokens - reused_tokens`).
    kv_bytes, kv_bytes_kept:
        Physical / stored key-value bytes of the cache the answer was decoded from (after the prompt's prefill).
    compressed:
        Whether the session's KV press removed entries of this prompt's prefix (now or when it was cached).
    prefill_s, decode_s:
        Wall times.
    """

    prompt_tokens: int
    reused_tokens: int
    prefilled_tokens: int
    kv_bytes: int
    kv_bytes_kept: int
    compressed: bool
    prefill_s: float = 0.0
    decode_s: float = 0.0


@dataclass
class StreamAnswer:
    """An answer of a streaming session.

    Attributes
    ----------
    text:
        The decoded answer (special tokens skipped).
    token_ids:
        The generated ids (an eos token included, as `generate` returns it).
    time:
        Stream time (seconds) the answer refers to: the timestamp of the newest frame in the stream's cache
        (None before any frame, and for prompts).
    report:
        A `StreamReport` (`ask`) or a `PromptReport` (`generate`).
    logits:
        `(vocab,)` logits of the first answer token (after the question's prefill).
    """

    text: str
    token_ids: list[int]
    time: float | None
    report: StreamReport | PromptReport
    logits: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class StreamStats:
    """Running totals of a stream (reset with the session).

    Attributes
    ----------
    frames, blocks:
        Frames and frame blocks encoded and prefilled so far (pending frames excluded).
    encode_s, prefill_s, memory_s:
        Wall time in the vision path (encoder methods included), in the language model's prefill (token pruning
        and KV compression included), and in the memory policy (eviction, offloading).
    """

    frames: int = 0
    blocks: int = 0
    encode_s: float = 0.0
    prefill_s: float = 0.0
    memory_s: float = 0.0

    def add(self, *, frames: int, blocks: int, encode_s: float, prefill_s: float, memory_s: float) -> None:
        self.frames += frames
        self.blocks += blocks
        self.encode_s += encode_s
        self.prefill_s += prefill_s
        self.memory_s += memory_s

    def ms_per_frame(self) -> dict[str, float]:
        """Milliseconds per frame of each stage."""
        n = max(self.frames, 1)
        return {
            "encode": 1e3 * self.encode_s / n,
            "prefill": 1e3 * self.prefill_s / n,
            "memory": 1e3 * self.memory_s / n,
        }
