"""Transcribe speech with Whisper under an omnipress method, measuring decode time per token and KV bytes.

`transcribe(model, processor, audio, method=op.SnapKV(compression_ratio=0.4))` runs the processor's features and
frame attention mask through `generate` (5 beams by default, Whisper's usual setting) inside `with method(model):`.
The attention mask tells the methods where the audio ends in Whisper's 30 s window, so compression ratios count the
positions that hold audio, not the padding.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..cache.accounting import cache_kv_bytes


class _InternalWhisperNotice(logging.Filter):
    """Drops two notices transformers' own Whisper `generate` triggers on every call: it passes `suppress_tokens`
    beside `generation_config` to itself (transformers PR #48108), and Whisper's generation config carries
    `max_length=448`, so a `max_new_tokens` cap is reported as a clash (the cap is what we asked for)."""

    NOTICES = ("together with generation-related arguments", "`max_new_tokens` will take precedence")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


@contextlib.contextmanager
def _quiet_whisper_generate() -> Any:
    logger = logging.getLogger("transformers.generation.utils")
    notice = _InternalWhisperNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


@dataclass
class Transcription:
    """One clip's transcript and what decoding it cost.

    `decode_seconds` sums the decoder forwards after the first (one per generated position, all beams at once);
    `kv_bytes` / `cross_kv_bytes` are the physical bytes of the cache when decoding ended (self- plus
    cross-attention, all beams) and of its cross-attention part.
    """

    text: str
    token_ids: list[int]
    audio_positions: int
    decode_steps: int
    decode_seconds: float
    generate_seconds: float
    kv_bytes: int
    cross_kv_bytes: int
    report: Any = field(default=None, repr=False)

    @property
    def decode_ms_per_token(self) -> float:
        return 1000.0 * self.decode_seconds / self.decode_steps if self.decode_steps else float("nan")


class _DecoderMeter:
    """Times the decoder's forwards (hooks on the decoder) and keeps the cache it decodes with. On CUDA each timed
    forward is bracketed by a synchronisation (a measurement needs it; the library's decode path has none)."""

    def __init__(self, decoder: nn.Module, device: torch.device) -> None:
        self.sync = torch.cuda.synchronize if device.type == "cuda" else None
        self.steps = 0
        self.seconds = 0.0
        self.cache: Any = None
        self._start = 0.0
        self._step = False
        self._handles = [
            decoder.register_forward_pre_hook(self._before, with_kwargs=True),
            decoder.register_forward_hook(self._after, with_kwargs=True),
        ]

    def _before(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            self.cache = cache
        self._step = cache is not None and cache.get_seq_length() > 0
        if self.sync is not None:
            self.sync()
        self._start = time.perf_counter()

    def _after(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        if self._step:
            if self.sync is not None:
                self.sync()
            self.steps += 1
            self.seconds += time.perf_counter() - self._start

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def whisper_features(processor: Any, audio: np.ndarray, sampling_rate: int = 16000) -> dict[str, torch.Tensor]:
    """`input_features` `(1, mel bins, 3000)` and the frame `attention_mask` `(1, 3000)` of one clip."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"audio must be a non-empty 1-D array of samples, got shape {samples.shape}")
    extractor = getattr(processor, "feature_extractor", processor)
    max_samples = int(extractor.n_samples)
    if samples.size > max_samples:
        raise ValueError(
            f"the clip lasts {samples.size / sampling_rate:.1f} s; Whisper reads at most "
            f"{max_samples / sampling_rate:.0f} s at once: split it into shorter clips"
        )
    encoded = extractor(samples, sampling_rate=sampling_rate, return_attention_mask=True, return_tensors="pt")
    return {"input_features": encoded["input_features"], "attention_mask": encoded["attention_mask"]}


def transcribe(
    model: nn.Module,
    processor: Any,
    audio: np.ndarray,
    *,
    method: Any = None,
    num_beams: int = 5,
    max_new_tokens: int | None = None,
    sampling_rate: int = 16000,
) -> Transcription:
    """Transcribe one clip (16 kHz mono samples, at most 30 s) with a Whisper model under `method` (None: as is).

    Returns the text (special tokens removed), the generated ids, the timing of the decode steps and the cache's
    physical bytes at the end. Raises `ValueError` for a non-Whisper model, an empty or too long clip.
    """
    adapter = get_adapter(model)
    if adapter.family != "whisper":
        raise ValueError(f"transcribe runs Whisper models; got a {adapter.family} model ({type(model).__name__})")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive int, got {num_beams!r}")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = whisper_features(processor, audio, sampling_rate)
    inputs = {
        "input_features": inputs["input_features"].to(device=device, dtype=dtype),
        "attention_mask": inputs["attention_mask"].to(device),
    }
    positions = adapter.audio_encoder_positions(feature_attention_mask=inputs["attention_mask"])[0]
    meter = _DecoderMeter(adapter.language_model, device)
    context = method(model) if method is not None else contextlib.nullcontext()
    try:
        start = time.perf_counter()
        with torch.no_grad(), context, _quiet_whisper_generate():
            out = model.generate(**inputs, num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens)
        elapsed = time.perf_counter() - start
    finally:
        meter.close()
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    ids = [int(t) for t in sequences[0].tolist()]
    tokenizer = getattr(processor, "tokenizer", processor)
    cache = meter.cache
    cross = getattr(cache, "cross_attention_cache", None)
    return Transcription(
        text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
        token_ids=ids,
        audio_positions=positions,
        decode_steps=meter.steps,
        decode_seconds=meter.seconds,
        generate_seconds=elapsed,
        kv_bytes=cache_kv_bytes(cache) if cache is not None else 0,
        cross_kv_bytes=cache_kv_bytes(cross) if cross is not None else 0,
        report=getattr(method, "report", None),
    )
