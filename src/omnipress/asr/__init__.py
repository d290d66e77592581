"""Speech recognition and audio-QA evaluation: WER with Whisper-style normalisation, manifests, resumable results,
multiple-choice answer parsing, transcription with Whisper under any omnipress method, and the method registry the
`omnipress transcribe` / `eval-asr` commands and `benchmarks/audio.py` use.
Names load lazily (the CLI parses method specs without importing torch)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MethodSummary": "evaluate",
    "evaluate_asr": "evaluate",
    "summarize": "evaluate",
    "summary_table": "evaluate",
    "ManifestItem": "manifest",
    "load_audio": "manifest",
    "read_manifest": "manifest",
    "MCQResult": "mcq",
    "answer_index": "mcq",
    "format_mcq_prompt": "mcq",
    "parse_choice": "mcq",
    "score_mcq": "mcq",
    "METHODS": "methods",
    "MethodSpec": "methods",
    "MethodUnavailableError": "methods",
    "build_method": "methods",
    "parse_method_list": "methods",
    "parse_method_spec": "methods",
    "load_asr_model": "models",
    "normalize_english": "normalize",
    "ResultsFile": "results",
    "Transcription": "transcription",
    "transcribe": "transcription",
    "whisper_features": "transcription",
    "WERResult": "wer",
    "word_error_rate": "wer",
}

__all__ = [
    "METHODS",
    "MCQResult",
    "ManifestItem",
    "MethodSpec",
    "MethodSummary",
    "MethodUnavailableError",
    "ResultsFile",
    "Transcription",
    "WERResult",
    "answer_index",
    "build_method",
    "evaluate_asr",
    "format_mcq_prompt",
    "load_asr_model",
    "load_audio",
    "normalize_english",
    "parse_choice",
    "parse_method_list",
    "parse_method_spec",
    "read_manifest",
    "score_mcq",
    "summarize",
    "summary_table",
    "transcribe",
    "whisper_features",
    "word_error_rate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .evaluate import MethodSummary, evaluate_asr, summarize, summary_table
    from .manifest import ManifestItem, load_audio, read_manifest
    from .mcq import MCQResult, answer_index, format_mcq_prompt, parse_choice, score_mcq
    from .methods import (
        METHODS,
        MethodSpec,
        MethodUnavailableError,
        build_method,
        parse_method_list,
        parse_method_spec,
    )
    from .models import load_asr_model
    from .normalize import normalize_english
    from .results import ResultsFile
    from .transcription import Transcription, transcribe, whisper_features
    from .wer import WERResult, word_error_rate
