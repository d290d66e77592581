"""Calibration samples from (audio, transcript) pairs: the model's transcription prompt with the reference
transcript appended, for `audio_head_profile`.

- Whisper: the log-mel features and frame mask of the clip, the decoder prompt the model's generation config
  starts with (`<|startoftranscript|>` [language, task] `<|notimestamps|>`), then the transcript's tokens (with
  Whisper's leading space).
- Qwen2-Audio / the Qwen2.5-Omni thinker: a chat turn holding the clip and `instruction`, the assistant header,
  then the transcript's tokens (`omnipress.generation.build_inputs` lays the audio span out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from .audio_heads import CalibrationSample, calibration_sample

INSTRUCTION = "Transcribe the audio."


def whisper_prompt_ids(model: nn.Module) -> list[int]:
    """The decoder prompt Whisper's generation config gives an English transcription without timestamps."""
    gen = model.generation_config
    ids = [int(gen.decoder_start_token_id)]
    if getattr(gen, "is_multilingual", False):
        lang = getattr(gen, "lang_to_id", {}).get("<|en|>")
        task = getattr(gen, "task_to_id", {}).get("transcribe")
        ids += [int(t) for t in (lang, task) if t is not None]
    if getattr(gen, "no_timestamps_token_id", None) is not None:
        ids.append(int(gen.no_timestamps_token_id))
    return ids


def speech_sample(
    model: nn.Module,
    processor: Any,
    audio: np.ndarray,
    text: str,
    *,
    instruction: str = INSTRUCTION,
    word_times: Sequence[tuple[float, float]] | None = None,
    name: str = "",
) -> CalibrationSample:
    """One teacher-forced calibration sample of `audio` (16 kHz mono samples) with its reference `text`.

    `word_times`, when given, has one `(start, end)` per transcript *token* (`alignment.words_to_tokens`).
    """
    adapter = get_adapter(model)
    tokenizer = getattr(processor, "tokenizer", processor)
    samples = np.asarray(audio, dtype=np.float32)
    if adapter.family == "whisper":
        extractor = getattr(processor, "feature_extractor", None)
        if extractor is None:
            raise ValueError("Whisper calibration needs a WhisperProcessor (feature extractor and tokenizer)")
        encoded = extractor(samples, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
        prompt = torch.tensor([whisper_prompt_ids(model)])
        inputs = {
            "input_features": encoded["input_features"],
            "attention_mask": encoded["attention_mask"],
            "decoder_input_ids": prompt,
        }
        transcript = tokenizer(" " + text.strip(), add_special_tokens=False).input_ids
        return calibration_sample(model, inputs, transcript, word_times=word_times, name=name)
    if adapter.family not in ("qwen2_audio", "qwen2_5_omni"):
        raise ValueError(f"speech calibration samples are built for Whisper and Qwen audio LLMs, not {adapter.family}")
    from ..generation import build_inputs

    inputs = build_inputs(model, processor, text=instruction, audio=[samples])
    transcript = tokenizer(text.strip(), add_special_tokens=False).input_ids
    return calibration_sample(model, dict(inputs), transcript, word_times=word_times, name=name)


def token_word_index(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """The word (whitespace-separated, counted from 0) each token of `ids` belongs to: a token whose text starts
    with a space opens a new word; the others continue the current one (sub-words, punctuation)."""
    out, word = [], 0
    for position, token in enumerate(ids):
        piece = tokenizer.decode([int(token)])
        if position > 0 and piece[:1].isspace() and piece.strip():
            word += 1
        out.append(word)
    return out


def transcript_token_times(
    tokenizer: Any, text: str, words: Sequence[tuple[float, float]], *, leading_space: bool
) -> list[tuple[float, float]]:
    """Per-token `(start, end)` of a transcript from its per-word timings (one per whitespace-separated word)."""
    from .alignment import words_to_tokens

    n_words = len(text.split())
    if len(words) != n_words:
        raise ValueError(f"{len(words)} word timings for {n_words} words in {text!r}")
    ids = tokenizer((" " if leading_space else "") + text.strip(), add_special_tokens=False).input_ids
    index = token_word_index(tokenizer, ids)
    if index and index[-1] != n_words - 1:
        raise ValueError(f"cannot match the tokens of {text!r} to its {n_words} words")
    return words_to_tokens(words, index)
