"""Find audio-critical heads by ASR alignment on calibration (audio, transcript) pairs (AudioKV's phase A).

Each calibration sample is a model input with its reference transcript appended (teacher forcing): for
decoder-only audio LLMs (Qwen2-Audio, the Qwen2.5-Omni thinker) the transcript tokens follow the prompt in
`input_ids`; for Whisper they follow the decoder prompt in `decoder_input_ids`. One forward gives, for every
transcript token, each head's attention over the audio:

- Qwen2-Audio / Qwen2.5-Omni thinker: the LLM self-attention of the token's query (post-RoPE) over all keys
  (causal), sliced to the audio span (25 tokens per second);
- Whisper: the decoder's cross-attention over the encoder states, sliced to the positions holding audio
  (50 per second; the silence padding up to 30 s is left out).

`alignment.monotonicity_scores` (default) or, with word timestamps, `alignment.timestamp_scores` turn these into
one score per (layer, query head); scores are averaged over samples and over each GQA group (KV heads, the unit a
KV press budgets), giving a `HeadProfile` of kind `"audio_heads"`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters import get_adapter
from ..core.method import Method
from ..core.session import Listener, ModelSession
from .alignment import monotonicity_scores, timestamp_scores, token_windows
from .head_profile import HeadProfile
from .store import ModelFingerprint

KIND = "audio_heads"
SCORE_CHOICES = ("auto", "monotonicity", "hit", "mass")


@dataclass
class CalibrationSample:
    """One (audio, transcript) pair ready for teacher forcing.

    `inputs` are the model's inputs with the transcript's `num_target_tokens` tokens at the end of `input_ids`
    (decoder-only) or `decoder_input_ids` (Whisper); batch size 1. `word_times` optionally gives each of those
    tokens its word's `(start, end)` in seconds from the start of the audio (`alignment.words_to_tokens`).
    """

    inputs: dict[str, Any]
    num_target_tokens: int
    word_times: Sequence[tuple[float, float]] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.num_target_tokens, bool) or not isinstance(self.num_target_tokens, int):
            raise ValueError(f"num_target_tokens must be an int, got {self.num_target_tokens!r}")
        if self.num_target_tokens < 2:
            raise ValueError(f"a calibration transcript needs at least 2 tokens, got {self.num_target_tokens}")
        if self.word_times is not None and len(self.word_times) != self.num_target_tokens:
            raise ValueError(
                f"word_times has {len(self.word_times)} intervals for {self.num_target_tokens} transcript tokens"
            )


def calibration_sample(
    model: nn.Module,
    inputs: dict[str, Any],
    transcript_ids: Sequence[int] | torch.Tensor,
    *,
    word_times: Sequence[tuple[float, float]] | None = None,
    name: str = "",
) -> CalibrationSample:
    """Append `transcript_ids` to a prompt's inputs (`input_ids` + `attention_mask`, or Whisper's
    `decoder_input_ids`) and wrap them as a `CalibrationSample`."""
    ids = torch.as_tensor(transcript_ids, dtype=torch.long).reshape(1, -1)
    adapter = get_adapter(model)
    key = "decoder_input_ids" if adapter.is_encoder_decoder else "input_ids"
    prompt = inputs.get(key)
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[0] != 1:
        raise ValueError(f"calibration inputs need a (1, seq) {key!r} tensor (one sample at a time)")
    out = dict(inputs)
    out[key] = torch.cat([prompt, ids.to(prompt.device)], dim=1)
    mask_key = "decoder_attention_mask" if adapter.is_encoder_decoder else "attention_mask"
    mask = inputs.get(mask_key)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape == prompt.shape:
        out[mask_key] = torch.cat([mask, torch.ones_like(ids, dtype=mask.dtype, device=mask.device)], dim=1)
    return CalibrationSample(out, ids.shape[1], word_times, name)


# -- attention of the transcript tokens over the audio ---------------------------------------------------------------
class _CrossCapture(Method):
    """Records the query and keys of every decoder cross-attention call (encoder-decoder models)."""

    stage = "kv"

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}

    def attach(self, session: ModelSession) -> Listener:
        capture = self

        class _Listener(Listener):
            def after_attention(self, session, module, query, key, value, kwargs, layer):
                route = session.route_of(module)
                if route is not None and route[0] == "cross":
                    scaling = float(kwargs.get("scaling") or getattr(module, "scaling", query.shape[-1] ** -0.5))
                    capture.layers[route[1]] = (query.detach(), key.detach(), scaling)

        return _Listener()


def _softmax_rows(
    query: torch.Tensor, keys: torch.Tensor, scaling: float, positions: torch.Tensor | None
) -> torch.Tensor:
    """`(Hq, T, N)` softmax attention of `query` `(Hq, T, D)` over `keys` `(Hkv, N, D)`; with `positions` `(T,)`
    the query at position `p` sees keys `<= p` (causal)."""
    q_heads, kv_heads = query.shape[0], keys.shape[0]
    k = keys.float().repeat_interleave(q_heads // kv_heads, dim=0)
    logits = (query.float() @ k.transpose(-1, -2)) * scaling  # (Hq, T, N)
    if positions is not None:
        hidden = torch.arange(keys.shape[1], device=keys.device).view(1, -1) > positions.view(-1, 1)
        logits = logits.masked_fill(hidden.unsqueeze(0), float("-inf"))
    return logits.softmax(-1)


def transcript_audio_attention(model: nn.Module, sample: CalibrationSample) -> tuple[torch.Tensor, float]:
    """`(layers, q_heads, T, N_a)` attention of the transcript tokens on the audio positions, and the audio
    positions per second (25 for the Qwen audio LLMs, 50 for Whisper's encoder states)."""
    from ..kv.cross import audio_positions
    from ..kv.session import capture_prefill

    adapter = get_adapter(model)
    t = sample.num_target_tokens
    if adapter.is_encoder_decoder:
        features = sample.inputs.get("input_features")
        if not isinstance(features, torch.Tensor) or features.dim() != 3 or features.shape[0] != 1:
            raise ValueError("a Whisper calibration sample needs (1, mel bins, frames) input_features")
        n_audio = audio_positions(adapter, features, sample.inputs.get("attention_mask"))[0]
        capture = _CrossCapture()
        with torch.no_grad(), capture(model):
            model(**sample.inputs, use_cache=False)
        rows = []
        for idx in range(adapter.num_layers):
            query, keys, scaling = capture.layers[idx]
            if query.shape[2] < t:
                raise ValueError(f"the decoder sequence has {query.shape[2]} tokens, fewer than the {t} targets")
            rows.append(_softmax_rows(query[0, :, -t:], keys[0], scaling, None)[..., :n_audio])
        return torch.stack(rows), 50.0
    capture, _ = capture_prefill(model, **sample.inputs)
    assert capture.spans is not None
    audio = capture.spans.mask("audio")
    if not bool(audio.any()):
        raise ValueError(f"a calibration sample has no audio tokens: {capture.spans.summary()}")
    n = audio.shape[0]
    targets = torch.arange(n - t, n)
    if bool((targets <= int(audio.nonzero().max())).any()):
        raise ValueError("the transcript tokens must come after the audio (append them to the prompt)")
    columns = audio.nonzero().squeeze(-1)
    rows = [
        _softmax_rows(q[0, :, -t:], k[0], scaling, targets.to(k.device))[..., columns.to(k.device)]
        for q, k, _, scaling in capture.layers
    ]
    return torch.stack(rows), 25.0


def sample_head_scores(
    model: nn.Module, sample: CalibrationSample, *, score: str = "monotonicity", tolerance: float = 0.15
) -> torch.Tensor:
    """`(layers, q_heads)` alignment scores of one calibration sample."""
    attention, rate = transcript_audio_attention(model, sample)
    if score == "monotonicity":
        return monotonicity_scores(attention)
    if sample.word_times is None:
        raise ValueError(f"score={score!r} needs word_times for every calibration sample")
    windows = token_windows(sample.word_times, attention.shape[-1], rate, tolerance)
    return timestamp_scores(attention, windows, score)


def audio_head_profile(
    model: nn.Module,
    samples: Iterable[CalibrationSample],
    *,
    score: str = "auto",
    tolerance: float = 0.15,
    gqa: str = "mean",
    name: str = "",
    calibration: dict[str, Any] | None = None,
) -> HeadProfile:
    """Audio-critical head scores `(layers, kv_heads)` from ASR calibration samples.

    Parameters
    ----------
    model : nn.Module
        Qwen2-Audio, a Qwen2.5-Omni thinker or Whisper.
    samples : iterable of CalibrationSample
        Teacher-forced (audio, transcript) pairs (`calibration_sample`).
    score : {"auto", "monotonicity", "hit", "mass"}
        `"auto"`: `"hit"` when every sample has word timestamps, else the timestamp-free `"monotonicity"`.
    tolerance : float
        Seconds added on both sides of a word interval (timestamp scores).
    gqa : {"mean", "max"}
        Query heads to KV heads.
    name : str
        Model name stored in the profile (default: the model's `name_or_path`).
    calibration : dict
        Description of the calibration data, stored in the file.
    """
    from ..kv.scoring import reduce_gqa

    if score not in SCORE_CHOICES:
        raise ValueError(f"score must be one of {SCORE_CHOICES}, got {score!r}")
    adapter = get_adapter(model)
    if adapter.family not in ("qwen2_audio", "qwen2_5_omni", "whisper"):
        raise ValueError(
            f"audio-head profiling runs on Qwen2-Audio, the Qwen2.5-Omni thinker and Whisper, not {adapter.family}"
        )
    samples = list(samples)
    if not samples:
        raise ValueError("give at least one calibration sample")
    if score == "auto":
        score = "hit" if all(s.word_times is not None for s in samples) else "monotonicity"
    total = torch.zeros(adapter.num_layers, adapter.num_attention_heads)
    for sample in samples:
        total += sample_head_scores(model, sample, score=score, tolerance=tolerance).cpu()
    per_query_head = total / len(samples)
    table = reduce_gqa(per_query_head, adapter.num_key_value_heads, how=gqa)  # (layers, kv_heads)
    fingerprint = ModelFingerprint.of(model, name)
    return HeadProfile(
        table,
        kind=KIND,
        model=fingerprint.name,
        fingerprint=fingerprint,
        calibration={"samples": len(samples), **(calibration or {})},
        settings={
            "score": score,
            "tolerance_s": tolerance if score != "monotonicity" else None,
            "gqa": gqa,
            "attention": "decoder cross-attention" if adapter.is_encoder_decoder else "LLM self-attention",
        },
        meta={"query_head_scores": per_query_head.tolist()},
    )
