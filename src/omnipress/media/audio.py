"""Audio reading with PyAV: any container FFmpeg can decode, as mono float32 at a target rate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from omnipress.extras import require


def read_audio(path: str | os.PathLike, *, sampling_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of `path` into a mono float32 array at `sampling_rate` Hz.

    Channels are averaged by FFmpeg's resampler (`layout="mono"`), which also converts the rate.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file cannot be opened or decoded as audio (the message names the file), or a bad argument.
    MissingExtraError
        PyAV is not installed (the message names the ``media`` extra).
    """
    if not (isinstance(sampling_rate, int) and sampling_rate > 0):
        raise ValueError(f"sampling_rate must be a positive int, got {sampling_rate!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    av = require("av", extra="media", purpose="reading audio")

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot open audio {path}: {err}") from err
    try:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(audio=0):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except av.error.FFmpegError as err:
            raise ValueError(f"cannot decode audio {path}: {err}") from err
    finally:
        container.close()
    if not chunks:
        raise ValueError(f"no decodable audio samples in {path}")
    return np.concatenate(chunks).astype(np.float32, copy=False)
