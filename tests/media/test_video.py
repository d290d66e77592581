"""read_video on real footage, clear errors, and the Qwen-VL patch layout against references."""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from omnipress.media import TruncatedMediaWarning, frames_to_tensor, normalize_frames, qwen_video_patches, read_video
from omnipress.media.video import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from omnipress.testing import data_dir, real_image

VTEST = data_dir() / "video" / "vtest.avi"
needs_vtest = pytest.mark.skipif(not VTEST.is_file(), reason=f"real video {VTEST} not present")


@needs_vtest
def test_fps_sampling_on_real_footage():
    import av

    with av.open(str(VTEST)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)  # 795 frames at 10 fps: 79.5 s
        width, height = stream.codec_context.width, stream.codec_context.height
    frames = list(read_video(VTEST, fps=1.0))
    assert len(frames) == math.floor(duration) + 1 == 80  # one frame at 0, 1, ..., 79 s
    times = [t for t, _ in frames]
    assert times == pytest.approx([float(k) for k in range(80)], abs=0.051)
    assert all(isinstance(f, Image.Image) and f.mode == "RGB" and f.size == (width, height) for _, f in frames)
    # consecutive real frames differ (people walk), identical decoding is deterministic
    a, b = (np.asarray(frames[k][1], dtype=np.int16) for k in (10, 11))
    assert np.abs(a - b).mean() > 1.0


@needs_vtest
def test_max_frames_and_every_frame():
    first = list(read_video(VTEST, max_frames=5))
    assert [round(t, 3) for t, _ in first] == [0.0, 0.1, 0.2, 0.3, 0.4]
    half = list(read_video(VTEST, fps=2.0, max_frames=3))
    assert [round(t, 3) for t, _ in half] == [0.0, 0.5, 1.0]


def test_read_video_is_lazy_and_validates_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("missing.mp4")):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="fps"):
        read_video(tmp_path / "x.mp4", fps=0)


def test_corrupt_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00garbage, not a video\xff" * 64)
    with pytest.raises(ValueError, match=re.escape("broken.mp4")):
        next(iter(read_video(bad)))


def test_audio_only_file_has_no_video_stream():
    speech = data_dir() / "speech" / "harvard_01.wav"
    if not speech.is_file():
        pytest.skip(f"{speech} not present")
    with pytest.raises(ValueError, match="no video stream"):
        read_video(speech)


def reference_patches(frames, patch, merge, tps):
    """Loop version of the Qwen-VL patch order: temporal patch, merge window (row-major), position in the window;
    each patch flattened as (channel, time, row, column)."""
    t_total, _, height, width = frames.shape
    rows = []
    for gt in range(t_total // tps):
        for bh in range(height // patch // merge):
            for bw in range(width // patch // merge):
                for mh in range(merge):
                    for mw in range(merge):
                        y = (bh * merge + mh) * patch
                        x = (bw * merge + mw) * patch
                        block = frames[gt * tps : (gt + 1) * tps, :, y : y + patch, x : x + patch]  # (tps, C, p, p)
                        rows.append(block.permute(1, 0, 2, 3).reshape(-1))
    return torch.stack(rows)


def test_qwen_video_patches_match_a_loop_reference():
    frames = torch.rand(4, 3, 56, 84)
    patches, grid = qwen_video_patches(frames, patch_size=14, merge_size=2, temporal_patch_size=2)
    assert grid.tolist() == [2, 4, 6]
    expected = reference_patches(normalize_frames(frames, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), 14, 2, 2)
    torch.testing.assert_close(patches, expected)


def test_odd_frame_count_repeats_the_last_frame():
    frames = torch.rand(3, 3, 32, 32)
    patches, grid = qwen_video_patches(
        frames, patch_size=16, merge_size=2, temporal_patch_size=2, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    padded = torch.cat([frames, frames[-1:]])
    assert grid.tolist() == [2, 2, 2]
    torch.testing.assert_close(patches, reference_patches((padded - 0.5) / 0.5, 16, 2, 2))


def test_two_identical_frames_equal_the_image_processor():
    """A still image is a 2-frame video to Qwen2-VL: the image processor output is the reference."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = real_image("astronaut", (112, 168))  # already a multiple of 28: no resize on either side
    expected = Qwen2VLImageProcessorPil()(images=[image], return_tensors="pt")
    frames = frames_to_tensor([image, image], (112, 168))
    patches, grid = qwen_video_patches(frames)
    assert grid.tolist() == expected["image_grid_thw"][0].tolist()
    torch.testing.assert_close(patches, expected["pixel_values"], atol=1e-5, rtol=1e-5)


def test_bad_frame_sizes_are_rejected():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        qwen_video_patches(torch.rand(2, 3, 50, 56))
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        qwen_video_patches(torch.rand(3, 56, 56))
    with pytest.raises(ValueError, match="at least one frame"):
        frames_to_tensor([], (28, 28))


# --------------------------------------------------------------------------------------------------
# Truncated files: what the container declares against what was decoded
# --------------------------------------------------------------------------------------------------
def _cut(source, tmp_path, size: int, name: str = "cut.avi"):
    """The first `size` bytes of a real file (a copy cut short, as an interrupted download leaves it)."""
    out = tmp_path / name
    out.write_bytes(source.read_bytes()[:size])
    return out


def _transcode(tmp_path, name: str, container: str, frames: int = 40):
    """The first `frames` frames of the real vtest footage, downscaled, re-encoded (MPEG-4 Part 2) into `container`."""
    import av

    out = tmp_path / name
    with av.open(str(VTEST)) as src, av.open(str(out), "w", format=container) as dst:
        stream = dst.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 192, 144, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            for packet in stream.encode(frame.reformat(width=192, height=144, format="yuv420p")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out


@needs_vtest
def test_a_truncated_video_warns_with_frames_and_seconds_read_and_declared(tmp_path):
    half = _cut(VTEST, tmp_path, VTEST.stat().st_size // 2)  # the AVI header still declares 795 frames, 79.5 s
    with pytest.warns(TruncatedMediaWarning, match=r"decoded 399 frames \(39\.9 s\) of the 795 frames / 79\.5 s"):
        frames = list(read_video(half, fps=1.0))
    assert len(frames) == 40 and frames[-1][0] == pytest.approx(39.0, abs=0.051)
    tiny = _cut(VTEST, tmp_path, 20_000, "first_20kb.avi")  # the case: one frame instead of 795
    with pytest.warns(TruncatedMediaWarning, match=r"first_20kb\.avi.*decoded 1 frame \(0\.1 s\) of the 795 frames"):
        assert len(list(read_video(tiny))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedMediaWarning)
        assert len(list(read_video(VTEST, fps=1.0))) == 80  # the whole file: no warning
        assert len(list(read_video(half, max_frames=3))) == 3  # stopped early: the end was not reached, no claim


@needs_vtest
def test_truncation_by_declared_duration_and_containers_that_declare_nothing(tmp_path):
    mkv = _transcode(tmp_path, "clip.mkv", "matroska")  # Matroska declares a duration (4 s), no frame count
    ts = _transcode(tmp_path, "clip.ts", "mpegts")  # MPEG-TS declares no length at all
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedMediaWarning)
        assert len(list(read_video(mkv))) == len(list(read_video(ts))) == 40
        cut_ts = _cut(ts, tmp_path, ts.stat().st_size * 3 // 4, "cut.ts")
        assert 0 < len(list(read_video(cut_ts))) < 40  # shorter, but nothing declared to compare with: no warning
    cut_mkv = _cut(mkv, tmp_path, mkv.stat().st_size * 3 // 4, "cut.mkv")
    with pytest.warns(
        TruncatedMediaWarning, match=r"cut\.mkv: truncated video: decoded \d+ frames \(\d\.\d s\) of the 4\.0 s"
    ):
        assert 0 < len(list(read_video(cut_mkv))) < 40


@needs_vtest
def test_a_video_that_yields_no_frame_is_refused_by_read_video_and_generate(tmp_path):
    from omnipress.generation import generate
    from omnipress.testing import tiny_model, tiny_processor

    data = VTEST.read_bytes()
    first_chunk = data.index(b"00dc", data.index(b"movi"))  # the first video frame's chunk in the AVI
    header_only = _cut(VTEST, tmp_path, first_chunk + 8, "header_only.avi")  # its header, none of its data
    with pytest.raises(ValueError, match=r"no video frame could be decoded from .*header_only\.avi .*795 frames"):
        list(read_video(header_only))
    model = tiny_model("qwen2_vl")
    with pytest.raises(ValueError, match=r"header_only\.avi"):
        generate(model, tiny_processor("qwen2_vl"), text="What happens?", video=header_only, max_new_tokens=1)


def test_without_pyav_reading_names_the_media_extra(monkeypatch, tmp_path):
    import sys

    from omnipress.extras import MissingExtraError
    from omnipress.media import read_audio

    for name in [m for m in sys.modules if m == "av" or m.startswith("av.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if PyAV were not installed
    monkeypatch.setitem(sys.modules, "av", None)
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"RIFF")
    for read in (read_video, read_audio):
        with pytest.raises(
            MissingExtraError, match=re.escape('needs the `av` package: pip install "omnipress[media]"')
        ):
            read(clip)


# --------------------------------------------------------------------------------------------------
# Windows (start/end) on real files, against the container's own frame times
# --------------------------------------------------------------------------------------------------
VIDEOS = {name: data_dir() / "video" / name for name in ("vtest.avi", "tree.avi")}


def _real(name: str):
    path = VIDEOS[name]
    if not path.is_file():
        pytest.skip(f"real video {path} not present")
    return path


@functools.cache
def _container_times(path) -> list[float]:
    """Every frame's time, in seconds from the start of the file, as PyAV decodes it (tree.avi: 68 irregular
    frames of the 444 its header declares)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = float(stream.start_time * stream.time_base)
        return [frame.time - origin for frame in container.decode(stream)]


def _container_frames(path, times) -> dict[float, np.ndarray]:
    import av

    wanted, found = {round(t, 6) for t in times}, {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):  # up to the last wanted frame
            if round(frame.time, 6) in wanted:
                found[round(frame.time, 6)] = frame.to_ndarray(format="rgb24")
                if len(found) == len(wanted):
                    break
    return found


def _expected_sampling(times, fps, start=0.0, end=math.inf):
    """The first frame at or after each `start + k / fps`, inside `[start, end)`, stated as a search per grid point."""
    times = [t for t in times if start - 1e-6 <= t < end - 1e-6]
    picks, k = [], 0
    while times and start + k / fps <= times[-1] + 1e-6:
        first = next(t for t in times if t >= start + k / fps - 1e-6)
        if not picks or first != picks[-1]:
            picks.append(first)
        k += 1
    return picks


@pytest.mark.parametrize(("name", "fps"), [("vtest.avi", 2.0), ("tree.avi", 3.0)])
def test_real_files_decode_at_the_requested_fps_with_the_containers_times(name, fps):
    path = _real(name)
    times = _container_times(path)
    frames = list(read_video(path, fps=fps))
    got = [t for t, _ in frames]
    assert got == pytest.approx(_expected_sampling(times, fps), abs=1e-6)
    if name == "vtest.avi":  # 10 fps, every frame stored: one frame per step of the grid
        assert len(got) == math.floor(times[-1] * fps) + 1
    check = [frames[0], frames[len(frames) // 2], frames[-1]]
    reference = _container_frames(path, [t for t, _ in check])
    for t, image in check:
        np.testing.assert_array_equal(np.asarray(image), reference[round(t, 6)])


@pytest.mark.parametrize(
    ("name", "start", "end", "fps"),
    [
        ("vtest.avi", 10.0, 12.0, None),  # seeks (key frames at 0, ~20, ~40, ~60 s) and decodes forward
        ("vtest.avi", 65.25, None, 1.0),  # to the end; grid from start: 65.3, 66.3, ...
        ("vtest.avi", 78.0, 500.0, None),  # end past the end just ends
        ("tree.avi", 10.0, 20.0, 2.0),
        ("tree.avi", 1.2, 1.5, None),  # between two stored frames: empty
    ],
)
def test_start_end_windows_keep_the_files_own_timestamps(name, start, end, fps):
    path = _real(name)
    times = _container_times(path)
    in_window = [t for t in times if start - 1e-6 <= t < (end or math.inf) - 1e-6]
    expected = in_window if fps is None else _expected_sampling(times, fps, start, end or math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedMediaWarning)
        frames = list(read_video(path, fps=fps, start=start, end=end))
    assert [t for t, _ in frames] == pytest.approx(expected, abs=1e-6)
    if frames:
        reference = _container_frames(path, [frames[0][0]])
        np.testing.assert_array_equal(np.asarray(frames[0][1]), reference[round(frames[0][0], 6)])


@needs_vtest
def test_start_and_end_with_truncated_files_and_bad_arguments(tmp_path):
    half = _cut(VTEST, tmp_path, VTEST.stat().st_size // 2)  # ends at 39.9 s of 79.5 s
    with pytest.warns(TruncatedMediaWarning, match=r"decoded up to 39\.9 s \(99 frames from 30\.0 s\) of the 795"):
        assert len(list(read_video(half, start=30.0, fps=1.0))) == 10
    with pytest.warns(TruncatedMediaWarning, match=r"up to 50\.0 s \(0 frames from 50\.0 s\)"):
        assert list(read_video(half, start=50.0)) == []  # frames were decoded, none reach the window
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedMediaWarning)
        assert len(list(read_video(half, start=20.0, end=21.0))) == 10  # the window ends before the cut
    with pytest.raises(
        ValueError, match=r"start=80\.0 s is at or past the end of .*vtest\.avi \(795 frames / 79\.5 s\)"
    ):
        read_video(VTEST, start=80.0)
    for kwargs, message in [
        ({"start": 5.0, "end": 5.0}, "start must be before end"),
        ({"start": -1.0}, "start must be >= 0"),
        ({"end": -0.5}, "end must be >= 0"),
        ({"end": 0.0}, "start must be before end"),
    ]:
        with pytest.raises(ValueError, match=message):
            read_video(VTEST, **kwargs)


class _SeekProxy:
    """A PyAV container that records its seeks, and makes them land 3 s past the target or fail (`mode`)."""

    def __init__(self, container, mode: str, seeks: list):
        self._container, self._mode, self._seeks = container, mode, seeks

    def __getattr__(self, name):
        return getattr(self._container, name)

    def seek(self, offset, *, stream=None, **kwargs):
        import av

        self._seeks.append(float(offset * stream.time_base) if stream is not None else None)
        if stream is None:
            return self._container.seek(offset, **kwargs)
        if self._mode == "fail":
            raise av.error.PermissionError(1, "seeking not supported")
        if self._mode == "overshoot":
            offset += int(3 / stream.time_base)
        return self._container.seek(offset, stream=stream, **kwargs)


@needs_vtest
@pytest.mark.parametrize(("mode", "seeks"), [("exact", [2.0]), ("overshoot", [2.0, None]), ("fail", [2.0])])
def test_start_seeks_and_windows_stay_exact_where_seeking_fails_or_overshoots(monkeypatch, tmp_path, mode, seeks):
    import av

    clip = _transcode(tmp_path, "clip.mkv", "matroska")
    real_open, done = av.open, []
    monkeypatch.setattr(av, "open", lambda *a, **k: _SeekProxy(real_open(*a, **k), mode, done))
    assert [round(t, 3) for t, _ in read_video(clip, start=2.0, end=2.5)] == [2.0, 2.1, 2.2, 2.3, 2.4]
    assert done == [pytest.approx(s, abs=0.01) if s else None for s in seeks]  # to 2 s; after overshooting, to 0


# --------------------------------------------------------------------------------------------------
# Live sources: iterables of frames, PyAV URLs and pipes
# --------------------------------------------------------------------------------------------------
class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0  # any origin: timestamps count from the time read_video opened the source

    def __call__(self) -> float:
        return self.now


def _camera(clock: FakeClock, count: int, rate: float = 30.0, pulled: list | None = None):
    """A live camera at `rate` frames per second: frame k arrives at k / rate seconds after opening."""
    for k in range(count):
        clock.now = 100.0 + k / rate
        if pulled is not None:
            pulled.append(k)
        yield np.full((24, 32, 3), k, dtype=np.uint8)


def test_a_live_iterator_is_stamped_by_the_clock_sampled_and_lazy():
    clock, pulled = FakeClock(), []
    frames = read_video(_camera(clock, 90, pulled=pulled), fps=10.0, clock=clock)
    assert pulled == []  # nothing read before iteration
    t0, first = next(frames)
    assert t0 == 0.0 and first.mode == "RGB" and first.size == (32, 24) and pulled == [0]
    t1, second = next(frames)
    assert t1 == pytest.approx(0.1) and np.asarray(second)[0, 0, 0] == 3 and pulled == [0, 1, 2, 3]  # 1, 2 dropped
    rest = list(frames)  # the camera stops after 3 s: the iteration ends cleanly
    assert [t for t, _ in rest] == pytest.approx([k / 10 for k in range(2, 30)])
    clock = FakeClock()
    window = list(read_video(_camera(clock, 90), start=1.0, end=1.2, clock=clock))
    assert [int(np.asarray(f)[0, 0, 0]) for _, f in window] == [30, 31, 32, 33, 34, 35]
    clock = FakeClock()
    assert len(list(read_video(_camera(clock, 90), max_frames=4, clock=clock))) == 4


def test_live_pairs_use_their_own_seconds_and_images_are_accepted():
    images = [Image.new("L", (16, 8), color=k) for k in range(10)]
    pairs = [(0.25 * k, image) for k, image in enumerate(images)]  # 4 frames per second
    got = list(read_video(iter(pairs), fps=2.0))
    assert [t for t, _ in got] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [np.asarray(f)[0, 0].tolist() for _, f in got] == [[k, k, k] for k in (0, 2, 4, 6, 8)]
    assert [t for t, _ in read_video(pairs, start=1.0, end=1.6)] == [1.0, 1.25, 1.5]  # a list is an iterable too


def test_a_live_source_that_raises_propagates_its_error_with_the_source_named():
    clock = FakeClock()

    def unplugged():
        yield from _camera(clock, 3)
        raise OSError("camera unplugged")

    frames = read_video(unplugged(), clock=clock)
    assert len([next(frames) for _ in range(3)]) == 3
    with pytest.raises(OSError, match="camera unplugged") as caught:
        next(frames)
    if hasattr(caught.value, "add_note"):
        notes = "\n".join(caught.value.__notes__)
        assert re.search(r"live video source generator .*unplugged after 3 frames, the last at 0\.07 s", notes)
    with pytest.raises(ValueError, match=r"frame 2 of .*\(H, W, 3\) uint8 RGB, got shape \(4, 4\) float64"):
        list(read_video([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4))]))
    with pytest.raises(TypeError, match=r"frame 1 of .*expected a PIL image.*got str"):
        list(read_video(["not a frame"]))
    with pytest.raises(TypeError, match="source must be a path, a URL or an iterable of frames, got int"):
        read_video(42)
    with pytest.raises(ValueError, match="always read live"):
        read_video([], live=False)


@needs_vtest
def test_a_url_is_read_live_with_wall_clock_timestamps(tmp_path):
    clip = _transcode(tmp_path, "clip.mkv", "matroska")  # 40 frames
    offline = list(read_video(clip))
    ticks = itertools.chain([0], itertools.count())
    clock = lambda: 0.05 * next(ticks)  # noqa: E731  (opened at 0; frame k is decoded at 0.05 * k s)
    live = list(read_video(f"file://{clip}", fps=10.0, clock=clock))
    assert [t for t, _ in live] == pytest.approx([0.05 * k for k in range(0, 40, 2)])  # every other frame
    for (_, a), (_, b) in zip(live, offline[::2]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(list(read_video(clip, live=True))) == 40  # a path read live: the real clock, every frame


@needs_vtest
def test_a_pipe_written_by_pyav_is_read_live_and_ends_cleanly(tmp_path):
    import threading

    import av

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    fifo = tmp_path / "camera.ts"
    os.mkfifo(fifo)

    def camera(frames: int):  # an encoder streaming MPEG-TS into the pipe, then hanging up
        with av.open(str(fifo), "w", format="mpegts") as out:
            stream = out.add_stream("mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for k in range(frames):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * k, np.uint8), format="rgb24")
                for packet in stream.encode(image):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)

    writer = threading.Thread(target=camera, args=(30,), daemon=True)
    writer.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = list(read_video(fifo, format="mpegts"))  # a FIFO is live without asking
    writer.join(timeout=10)
    times = [t for t, _ in frames]
    assert len(frames) == 30 and times == sorted(times) and times[0] >= 0 and times[-1] < 5.0
    assert [int(np.asarray(f).mean().round()) for _, f in frames[:3]] == pytest.approx([0, 5, 10], abs=2)

    ts = _transcode(tmp_path, "clip.ts", "mpegts")  # a network stream that stops mid-packet
    data = ts.read_bytes()
    cut = tmp_path / "cut.ts"
    os.mkfifo(cut)
    writer = threading.Thread(target=lambda: cut.write_bytes(data[: len(data) * 3 // 5 + 77]), daemon=True)
    writer.start()
    assert 0 < len(list(read_video(cut))) < 40
    writer.join(timeout=10)


class _FailingDecode:
    """A PyAV container whose stream breaks off with a decoding error after 5 frames."""

    def __init__(self, container):
        self._container = container

    def __getattr__(self, name):
        return getattr(self._container, name)

    def decode(self, *args, **kwargs):
        import av

        for k, frame in enumerate(self._container.decode(*args, **kwargs)):
            if k == 5:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield frame


@needs_vtest
def test_a_live_stream_that_breaks_off_ends_with_a_warning_and_bad_urls_are_named(monkeypatch, tmp_path):
    import av

    from omnipress.media import StreamInterruptedWarning

    clip = _transcode(tmp_path, "clip.mkv", "matroska", frames=10)
    real_open = av.open
    with monkeypatch.context() as patch:
        patch.setattr(av, "open", lambda *a, **k: _FailingDecode(real_open(*a, **k)))
        with pytest.warns(StreamInterruptedWarning, match=r"clip\.mkv: live video stopped after 5 frames"):
            assert len(list(read_video(f"file://{clip}"))) == 5
    with pytest.raises(ValueError, match=r"cannot open video file:///nonexistent/clip\.mp4"):
        read_video("file:///nonexistent/clip.mp4")
    with pytest.raises(ValueError, match=r"cannot open video rtsp://\*\*\*@127\.0\.0\.1:1/cam") as caught:
        read_video("rtsp://user:secret@127.0.0.1:1/cam", timeout=2.0)  # nothing listens on port 1
    assert "secret" not in str(caught.value)
