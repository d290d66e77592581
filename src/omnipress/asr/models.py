"""ASR models by name: `"whisper-tiny-en"` (real weights offline, `omnipress.weights_whisper`) or a local folder
holding a saved Whisper model and processor (`save_pretrained`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..weights_whisper import WHISPER_TINY_EN

MODEL_NAMES = (WHISPER_TINY_EN,)


def load_asr_model(name: str = WHISPER_TINY_EN, attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """`(model, processor)` for `name`; `FileNotFoundError` when it is neither a known name nor a folder."""
    if name == WHISPER_TINY_EN:
        from ..weights_whisper import whisper_tiny_en

        return whisper_tiny_en(attn_implementation=attn_implementation)
    folder = Path(name)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model {name!r} is neither {', '.join(MODEL_NAMES)} nor a local folder with a saved Whisper model"
        )
    import transformers as T

    model = T.WhisperForConditionalGeneration.from_pretrained(folder, attn_implementation=attn_implementation).eval()
    processor = T.WhisperProcessor.from_pretrained(folder)
    return model, processor
