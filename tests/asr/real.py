"""The real Whisper tiny.en, loaded once per test session (the conversion takes a few seconds)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from omnipress.weights_whisper import whisper_model_dir

SPEECH = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "speech"

try:
    whisper_model_dir()
    MISSING = None
except FileNotFoundError as error:
    MISSING = str(error)

#: real-weights tests run where the weights are installed, and must run in CI (OMNIPRESS_REQUIRE_WEIGHTS=1)
needs_weights = pytest.mark.skipif(
    MISSING is not None and os.environ.get("OMNIPRESS_REQUIRE_WEIGHTS") != "1", reason=f"{MISSING}"
)
needs_speech = pytest.mark.skipif(not SPEECH.is_dir(), reason=f"speech data not found at {SPEECH}")


@functools.lru_cache(maxsize=1)
def whisper_tiny_en_cached():
    from omnipress.weights_whisper import whisper_tiny_en

    return whisper_tiny_en()
