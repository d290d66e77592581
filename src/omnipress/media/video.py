"""Video reading with PyAV and the tensors video-LLMs expect.

`read_video` decodes lazily and samples frames at a target rate, from a file (its own timestamps, an optional
`[start, end)` window reached by seeking) or from a live source: any iterable of frames, or a URL / device / pipe
that PyAV opens (wall-clock timestamps). A file that decodes to fewer frames than its container declares (a copy
cut short) gives a `TruncatedMediaWarning`; one that decodes to none raises `ValueError`. A live PyAV source that
stops with an error after some frames ends the iteration with a `StreamInterruptedWarning`.
The tensor helpers build the same pixel layout as the `transformers` video processors (which need torchvision,
unavailable here): Qwen-VL / Qwen2.5-Omni patches and LLaVA-OneVision frame stacks.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import stat
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
_EPS = 1e-6  # seconds: timestamps this close count as equal
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*://|pipe:)")  # rtsp://, http://, file://, ..., pipe:0
_USERINFO = re.compile(r"(?<=://)[^/@]*@")  # rtsp://user:password@host -> kept out of messages

Frame = Image.Image | np.ndarray
"""A live frame: an image (converted to RGB) or an `(H, W, 3)` uint8 RGB array."""


class TruncatedMediaWarning(UserWarning):
    """A media file decoded to less than its container declares (frames and seconds read vs declared)."""


class StreamInterruptedWarning(UserWarning):
    """A live video source failed after some frames were read; the iteration ended there."""


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


class _Window:
    """Which timestamps to keep: those in `[start, end)`, at most one per `1 / fps` step of a grid from `start`."""

    def __init__(self, fps: float | None, start: float | None, end: float | None) -> None:
        self.fps, self.start, self.end = fps, start or 0.0, end
        self.next_time = self.start

    def ended(self, t: float) -> bool:
        return self.end is not None and t + _EPS >= self.end

    def keep(self, t: float) -> bool:
        if t + _EPS < self.next_time:
            return False
        if self.fps is not None:
            self.next_time = self.start + (math.floor((t - self.start) * self.fps + _EPS) + 1) / self.fps
        return True


def read_video(
    source: str | os.PathLike | Iterable[Frame | tuple[float, Frame]],
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    live: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
    format: str | None = None,
    options: Mapping[str, str] | None = None,
    timeout: float | tuple[float, float] | None = None,
) -> Iterator[tuple[float, Image.Image]]:
    """Decode a video lazily into `(timestamp_seconds, RGB PIL frame)` pairs.

    Parameters
    ----------
    source:
        A file path (any container/codec FFmpeg reads); a URL PyAV opens (``rtsp://``, ``http://``, ``file://``,
        ``pipe:0``, ...), a FIFO or a device node, read live; or an iterable of live frames: PIL images, `(H, W, 3)`
        uint8 RGB arrays, or `(seconds, frame)` pairs.
    fps:
        Sampling rate. `None` yields every frame; otherwise the first frame at or after each `start + k / fps`
        seconds (so a 79.5 s clip gives 80 frames at `fps=1`); frames that come faster are dropped.
    max_frames:
        Stop after this many frames.
    start, end:
        Keep only frames with `start <= t < end` (seconds, the same timeline as the timestamps). A file is seeked
        to the key frame before `start` and decoded forward; `end` past the end of the video just ends. `None`:
        from the beginning / to the end.
    live:
        `None` (default): URLs, FIFOs, devices and iterables are live, file paths are not. `True` reads a path
        live; `False` reads a URL as a file (its own timestamps, seeking, truncation check).
    clock:
        Seconds of a monotonic clock (live sources only; inject a fake one in tests).
    format, options, timeout:
        Passed to `av.open` (e.g. ``format="v4l2"`` for a camera, ``options={"rtsp_transport": "tcp"}``,
        ``timeout=5.0`` seconds to wait for a network source).

    Returns
    -------
    Iterator[tuple[float, Image.Image]]
        For a file: seconds from the start of the file (`start=10` gives timestamps from 10). For a live source:
        wall-clock seconds (`clock`) since `read_video` opened it, or the given seconds of `(seconds, frame)`
        pairs. A live source that ends ends the iteration.

    Warns
    -----
    TruncatedMediaWarning
        When decoding reaches the end of a file with fewer frames (or seconds) than the container declares: the
        file was cut short. Checked only when the file is decoded to its end (not after `max_frames` or `end`),
        and only for containers that declare a length (MP4, AVI, Matroska/WebM do; MPEG-TS and raw streams do not).
    StreamInterruptedWarning
        A live PyAV source failed after frames were read (a network stream that broke off).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The source cannot be opened or decoded as video, or a file decodes to no frame (the message names the
        source), or a bad argument (`start >= end`, negative times, `start` past a file's declared end). Raised when
        iteration starts for problems found while decoding.
    TypeError
        `source` is none of the above, or a live item is not a frame.
    MissingExtraError
        PyAV is needed (files, URLs) and not installed (the message names the ``media`` extra).

    Notes
    -----
    An exception raised by a live iterable propagates unchanged, with a note naming the source and how many frames
    it had given (Python 3.11+ shows notes).
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None, got {fps!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be >= 0 seconds or None, got {value!r}")
    if end is not None and (start or 0.0) >= end:
        raise ValueError(f"start must be before end, got start={start or 0.0!r} >= end={end!r}")
    window = _Window(fps, start, end)

    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        is_url = bool(_URL.match(text))
        if live is None:
            live = is_url or _is_stream_node(text)
        if not is_url and not live and not Path(text).is_file():
            raise FileNotFoundError(f"video file not found: {text}")
        name = _USERINFO.sub("***@", text)
        av = require("av", extra="media", purpose="reading video")
        try:
            container = av.open(text, format=format, options=dict(options or {}), timeout=timeout)
        except (av.error.FFmpegError, OSError) as err:
            message = _USERINFO.sub("***@", f"cannot open video {text}: {err}")
            raise ValueError(message) from (err if name == text else None)  # no password in the chained error
        if not container.streams.video:
            container.close()
            raise ValueError(f"{name} has no video stream")
        if live:
            return _decode_live(av, container, name, window, max_frames, clock, clock())
        declared = _declared(container)
        if start is not None and declared.seconds is not None and start >= declared.seconds:
            container.close()
            raise ValueError(f"start={start} s is at or past the end of {name} ({declared.describe()})")
        return _decode_frames(av, container, name, declared, window, start, max_frames)

    if isinstance(source, (bytes, Image.Image)) or (isinstance(source, np.ndarray) and source.ndim != 4):
        raise TypeError(f"source must be a path, a URL or an iterable of frames, got {type(source).__name__}")
    try:
        items = iter(source)
    except TypeError:
        raise TypeError(f"source must be a path, a URL or an iterable of frames, got {type(source).__name__}") from None
    if live is False:
        raise ValueError("an iterable of frames is always read live; live=False is for paths and URLs")
    return _iterate_live(items, _describe(source), window, max_frames, clock, clock())


def _is_stream_node(path: str) -> bool:
    """A FIFO or a device node (read live), not a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _describe(source: object) -> str:
    """A live iterable's name for messages: `generator frames` (its function), else its type (`list`)."""
    if hasattr(source, "gi_code"):
        return f"generator {source.__qualname__}"  # type: ignore[attr-defined]
    return type(source).__name__


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


def _origin(container: Any, stream: Any) -> float | None:
    """The file's time 0 in the stream's clock: the stream's start time, else the container's, else unknown."""
    if stream.start_time is not None and stream.time_base:
        return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / 1_000_000
    return None


def _frames_from(av: Any, container: Any, stream: Any, target: float | None) -> Iterator[Any]:
    """Decoded frames from the key frame at or before `target` seconds of the stream's clock (`None`: the start).

    Falls back to decoding from the start where the container cannot seek or lands past `target`.
    """
    if target is not None and stream.time_base:
        try:
            container.seek(math.floor((target - _EPS) / stream.time_base), stream=stream, backward=True)
        except av.error.FFmpegError:
            pass  # not seekable: the position has not moved
        else:
            frames = container.decode(stream)
            first = next(frames, None)
            if first is not None and (first.time is None or first.time <= target + _EPS):
                yield first
                yield from frames
                return
            container.seek(0)  # landed past the target (or at the end): back to the start
    yield from container.decode(stream)


def _decode_frames(
    av: Any,
    container: Any,
    name: str,
    declared: _Declared,
    window: _Window,
    start: float | None,
    max_frames: int | None,
) -> Iterator[tuple[float, Image.Image]]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    origin = _origin(container, stream)
    seek = start is not None and start > 0
    if seek and origin is None:
        origin = 0.0
    last = 0.0
    produced = 0
    decoded = 0  # frames decoded in the window, or all decoded frames without `start`
    seen = timed = False  # any frame decoded at all, any with a timestamp
    try:
        try:
            for frame in _frames_from(av, container, stream, origin + start if seek else None):
                seen = True
                if frame.time is None:
                    if start is None:
                        decoded += 1
                    continue
                if origin is None or (not seek and not timed and frame.time < origin):
                    origin = frame.time  # no declared start, or the first frame comes before it
                timed = True
                t = frame.time - origin
                if t + _EPS < window.start:
                    continue
                if window.ended(t):
                    return
                decoded += 1
                last = t
                if not window.keep(t):
                    continue
                yield t, frame.to_image().convert("RGB")
                produced += 1
                if max_frames is not None and produced >= max_frames:
                    return
        except av.error.FFmpegError as err:
            raise ValueError(f"cannot decode video {name}: {err}") from err
        if not seen:
            raise ValueError(
                f"no video frame could be decoded from {name} (the container declares {declared.describe()}); the "
                "file is empty, truncated or damaged"
            )
        _warn_if_truncated(name, declared, decoded, last, start)
    finally:
        container.close()


def _warn_if_truncated(name: str, declared: _Declared, decoded: int, last_time: float, start: float | None) -> None:
    """Warn when a fully decoded stream ended before the declared duration (or, without one, frame count).

    Time is compared first: some files (AVI with dropped frames) declare frames that are never stored, yet cover
    their whole duration.
    """
    step = 1.0 / declared.rate if declared.rate else 0.0
    read_seconds = max(last_time + step, start or 0.0)  # the last frame lasts one frame interval
    if declared.seconds is not None:
        short = read_seconds < declared.seconds - max(_MISSING_SECONDS, _MISSING_FRAMES * step)
    elif declared.frames is not None and start is None:
        short = decoded < declared.frames - _MISSING_FRAMES
    else:
        return  # nothing declared (MPEG-TS, raw streams): nothing to compare with
    if short:
        frames = f"{decoded} frame" + ("" if decoded == 1 else "s")
        read = (
            f"{frames} ({read_seconds:.1f} s)"
            if start is None
            else f"up to {read_seconds:.1f} s ({frames} from {start:.1f} s)"
        )
        warnings.warn(
            f"{name}: truncated video: decoded {read} of the {declared.describe()} that the container declares; the "
            "rest of the file is missing",
            TruncatedMediaWarning,
            stacklevel=3,
        )


def _decode_live(
    av: Any,
    container: Any,
    name: str,
    window: _Window,
    max_frames: int | None,
    clock: Callable[[], float],
    opened: float,
) -> Iterator[tuple[float, Image.Image]]:
    stream = container.streams.video[0]
    produced = decoded = 0
    t = 0.0
    try:
        for frame in container.decode(stream):
            decoded += 1
            t = clock() - opened
            if t + _EPS < window.start:
                continue
            if window.ended(t):
                return
            if not window.keep(t):
                continue
            yield t, frame.to_image().convert("RGB")
            produced += 1
            if max_frames is not None and produced >= max_frames:
                return
    except av.error.FFmpegError as err:
        if decoded == 0:
            raise ValueError(f"cannot decode video {name}: {err}") from err
        warnings.warn(
            f"{name}: live video stopped after {decoded} frames ({t:.1f} s): {err}; iteration ended",
            StreamInterruptedWarning,
            stacklevel=2,
        )
    finally:
        container.close()


def _iterate_live(
    items: Iterator[Any],
    name: str,
    window: _Window,
    max_frames: int | None,
    clock: Callable[[], float],
    opened: float,
) -> Iterator[tuple[float, Image.Image]]:
    produced = received = 0
    t: float | None = None
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except Exception as err:
            since = "" if t is None else f", the last at {t:.2f} s"
            note = f"raised by the live video source {name} after {received} frames{since}"
            if hasattr(err, "add_note"):  # Python 3.11+
                err.add_note(note)
            raise
        received += 1
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], numbers.Real):
            t, frame = float(item[0]), item[1]
        else:
            t, frame = clock() - opened, item
        if t + _EPS < window.start:
            continue
        if window.ended(t):
            return
        if not window.keep(t):
            continue
        yield t, _as_image(frame, name, received)
        produced += 1
        if max_frames is not None and produced >= max_frames:
            return


def _as_image(frame: Any, name: str, index: int) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, np.ndarray):
        if frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8:
            return Image.fromarray(frame)
        raise ValueError(
            f"frame {index} of {name}: arrays must be (H, W, 3) uint8 RGB, got shape {frame.shape} {frame.dtype}"
        )
    raise TypeError(
        f"frame {index} of {name}: expected a PIL image, an (H, W, 3) uint8 array or a (seconds, frame) pair, got "
        f"{type(frame).__name__}"
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


def video_duration(path: str | os.PathLike) -> float | None:
    """Seconds of the video file `path` as its container declares them (`None`: not declared or not a file)."""
    av = require("av", extra="media", purpose="reading video")

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            return _declared(container).seconds
    except (av.error.FFmpegError, OSError):
        return None
