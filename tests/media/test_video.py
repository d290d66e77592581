"""read_video on real footage, clear errors, and the Qwen-VL patch layout against references."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from omnipress.media import frames_to_tensor, normalize_frames, qwen_video_patches, read_video
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
