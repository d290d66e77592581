"""read_video on real footage, clear errors, and the Qwen-VL patch layout against references."""

from __future__ import annotations

import math
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
