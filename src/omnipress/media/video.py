"""Video reading with PyAV and the tensors video-LLMs expect.

`read_video` decodes lazily and samples frames at a target rate. A file that decodes to fewer frames than its
container declares (a copy cut short) gives a `TruncatedMediaWarning`; one that decodes to none raises `ValueError`.
The tensor helpers build the same pixel layout as the `transformers` video processors (which need torchvision,
unavailable here): Qwen-VL / Qwen2.5-Omni patches and LLaVA-OneVision frame stacks.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from omnipress.extras import require

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_MISSING_FRAMES = 2  # decoded frames may fall this short of the declared count before a file counts as truncated
_MISSING_SECONDS = 0.5  # decoded video may end this much before the declared duration (or 2 frames, if longer)


class TruncatedMediaWarning(UserWarning):
    """A media file decoded to less than its container declares (frames and seconds read vs declared)."""


@dataclass(frozen=True)
class _Declared:
    """What a container says about its video stream's length (``None``: not said)."""

    frames: int | None
    seconds: float | None
    rate: float | None  # frames per second, when known

    def describe(self) -> str:
        parts = [f"{self.frames} frames"] if self.frames else []
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        return " / ".join(parts) or "no length"


def read_video(
    path: str | os.PathLike, *, fps: float | None = None, max_frames: int | None = None
) -> Iterator[tuple[float, Image.Image]]:
    """Decode a video lazily into `(timestamp_seconds, RGB PIL frame)` pairs.

    Parameters
    ----------
    path:
        Any container/codec FFmpeg (PyAV) can read.
    fps:
        Sampling rate. `None` yields every decoded frame; otherwise the first frame at or after each multiple of
        `1 / fps` seconds (timestamps relative to the stream start), so a 79.5 s clip gives 80 frames at `fps=1`.
    max_frames:
        Stop after this many frames.

    Warns
    -----
    TruncatedMediaWarning
        When decoding reaches the end of the file with fewer frames (or seconds) than the container declares: the
        file was cut short. Checked only when the whole file is decoded (not after `max_frames`), and only for
        containers that declare a length (MP4, AVI, Matroska/WebM do; MPEG-TS and raw streams do not).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file cannot be opened or decoded as video, or decodes to no frame (the message names the file), or a bad
        argument. Raised when iteration starts for problems found while decoding.
    MissingExtraError
        PyAV is not installed (the message names the ``media`` extra).
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None, got {fps!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    av = require("av", extra="media", purpose="reading video")

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot open video {path}: {err}") from err
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    return _decode_frames(av, container, path, fps, max_frames)


def _declared(container: Any) -> _Declared:
    """The video stream's length as the container declares it: frame count, else duration (stream, then file)."""
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    rate = float(rate) if rate else None
    frames = int(stream.frames) if stream.frames and stream.frames > 0 else None
    if frames is not None and rate:
        return _Declared(frames, frames / rate, rate)
    if stream.duration and stream.time_base:
        return _Declared(frames, float(stream.duration * stream.time_base), rate)
    if container.duration:
        return _Declared(frames, container.duration / 1_000_000, rate)  # in AV_TIME_BASE units (microseconds)
    return _Declared(frames, None, rate)


def _decode_frames(
    av: Any, container: Any, path: Path, fps: float | None, max_frames: int | None
) -> Iterator[tuple[float, Image.Image]]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    declared = _declared(container)
    start: float | None = None
    last = 0.0
    next_time = 0.0
    produced = 0
    decoded = 0
    try:
        try:
            for frame in container.decode(stream):
                decoded += 1
                if frame.time is None:
                    continue
                if start is None:
                    start = frame.time
                t = last = frame.time - start
                if fps is not None:
                    if t + 1e-6 < next_time:
                        continue
                    next_time = (math.floor(t * fps + 1e-6) + 1) / fps
                yield t, frame.to_image().convert("RGB")
                produced += 1
                if max_frames is not None and produced >= max_frames:
                    return
        except av.error.FFmpegError as err:
            raise ValueError(f"cannot decode video {path}: {err}") from err
        if produced == 0:
            raise ValueError(
                f"no video frame could be decoded from {path} (the container declares {declared.describe()}); the "
                "file is empty, truncated or damaged"
            )
        _warn_if_truncated(path, declared, decoded, last)
    finally:
        container.close()


def _warn_if_truncated(path: Path, declared: _Declared, decoded: int, last_time: float) -> None:
    """Warn when a fully decoded stream ended before the declared duration (or, without one, frame count).

    Time is compared first: some files (AVI with dropped frames) declare frames that are never stored, yet cover
    their whole duration.
    """
    step = 1.0 / declared.rate if declared.rate else 0.0
    read_seconds = last_time + step  # the last frame lasts one frame interval
    if declared.seconds is not None:
        short = read_seconds < declared.seconds - max(_MISSING_SECONDS, _MISSING_FRAMES * step)
    elif declared.frames is not None:
        short = decoded < declared.frames - _MISSING_FRAMES
    else:
        return  # nothing declared (MPEG-TS, raw streams): nothing to compare with
    if short:
        frames = f"{decoded} frame" + ("" if decoded == 1 else "s")
        warnings.warn(
            f"{path}: truncated video: decoded {frames} ({read_seconds:.1f} s) of the {declared.describe()} that the "
            "container declares; the rest of the file is missing",
            TruncatedMediaWarning,
            stacklevel=3,
        )


def frames_to_tensor(frames: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
    """RGB frames resized (bicubic) to `size = (height, width)`, as a float tensor `(T, 3, H, W)` in `[0, 1]`."""
    if len(frames) == 0:
        raise ValueError("need at least one frame")
    height, width = size
    arrays = [np.asarray(f.convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.float32) for f in frames]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0  # (T, 3, H, W)


def normalize_frames(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel `(x - mean) / std` of a `(T, 3, H, W)` tensor."""
    mean_t = torch.tensor(mean, dtype=frames.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=frames.dtype).view(1, -1, 1, 1)
    return (frames - mean_t) / std_t


def qwen_video_patches(
    frames: torch.Tensor,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten frames into the Qwen-VL vision patches (what `Qwen2VLVideoProcessor` returns).

    Parameters
    ----------
    frames:
        `(T, 3, H, W)` floats in `[0, 1]`, with `H` and `W` multiples of `patch_size * merge_size`. `T` is padded to
        a multiple of `temporal_patch_size` by repeating the last frame, as the processors do.

    Returns
    -------
    pixel_values_videos:
        `(grid_t * grid_h * grid_w, 3 * temporal_patch_size * patch_size**2)`, patches ordered by temporal patch,
        then by merge window (row-major), then inside the window, which is the order the vision merger expects.
    video_grid_thw:
        `(3,)` long tensor `[grid_t, grid_h, grid_w]` in patches (the LLM sees `grid_t * grid_h * grid_w /
        merge_size**2` tokens).
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got shape {tuple(frames.shape)}")
    _, channels, height, width = frames.shape
    factor = patch_size * merge_size
    if height % factor or width % factor:
        raise ValueError(f"frame size {height}x{width} must be a multiple of patch_size * merge_size = {factor}")
    pad = (-frames.shape[0]) % temporal_patch_size
    if pad:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)], dim=0)
    x = normalize_frames(frames, mean, std)
    grid_t, grid_h, grid_w = x.shape[0] // temporal_patch_size, height // patch_size, width // patch_size
    x = x.reshape(
        grid_t, temporal_patch_size, channels,
        grid_h // merge_size, merge_size, patch_size,
        grid_w // merge_size, merge_size, patch_size,
    )  # fmt: skip
    # -> (grid_t, blocks_h, blocks_w, merge_h, merge_w, channels, temporal, patch_h, patch_w)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = x.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return patches, torch.tensor([grid_t, grid_h, grid_w])
