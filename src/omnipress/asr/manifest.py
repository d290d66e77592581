"""ASR manifests: JSON lines of `{"audio": path, "text": reference, ...}`, paths relative to the manifest's folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ManifestItem:
    """One utterance: `audio` (absolute path), reference `text`, a stable `key` (the audio path as written in the
    manifest) and the line's other fields in `meta`."""

    audio: Path
    text: str
    key: str
    meta: dict[str, Any] = field(default_factory=dict)


def read_manifest(path: str | os.PathLike, *, check_files: bool = True) -> list[ManifestItem]:
    """Read a JSONL manifest. Each non-empty line is an object with `audio` (a path, relative to the manifest's
    folder unless absolute) and `text`; other fields go to `meta`.

    Raises `FileNotFoundError` for a missing manifest (or, with `check_files`, a missing audio file, naming its line)
    and `ValueError` for a line that is not JSON, lacks `audio`/`text`, or repeats an audio path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    items: list[ManifestItem] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON object ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        audio, text = row.get("audio"), row.get("text")
        if not isinstance(audio, str) or not audio:
            raise ValueError(f"{path}:{number}: `audio` must be a non-empty path string")
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number}: `text` (the reference transcript) must be a string")
        if audio in seen:
            raise ValueError(f"{path}:{number}: audio {audio!r} is listed twice")
        seen.add(audio)
        file = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        if check_files and not file.is_file():
            raise FileNotFoundError(f"{path}:{number}: audio file not found: {file}")
        meta = {k: v for k, v in row.items() if k not in ("audio", "text")}
        items.append(ManifestItem(audio=file, text=text, key=audio, meta=meta))
    if not items:
        raise ValueError(f"{path}: the manifest lists no utterance")
    return items


def load_audio(item: ManifestItem | str | os.PathLike, *, sampling_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples of an item's audio at `sampling_rate` (PyAV; any format FFmpeg reads).

    Raises `FileNotFoundError` (missing) or `ValueError` (corrupt, empty or silent-length file), naming the file.
    """
    from ..media.audio import read_audio

    path = item.audio if isinstance(item, ManifestItem) else Path(item)
    samples = read_audio(path, sampling_rate=sampling_rate)
    if samples.size == 0:
        raise ValueError(f"{path} decodes to no audio samples")
    if not np.isfinite(samples).all():
        raise ValueError(f"{path} decodes to non-finite samples")
    return samples
