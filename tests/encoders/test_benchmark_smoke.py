"""Smoke test of `benchmarks/streaming_encoder.py`: its whole path on tiny towers and real video, in seconds."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def se():
    with benchmark_module("streaming_encoder.py") as module:
        yield module


def test_streaming_encoder_benchmark_runs_on_tiny_towers(se, tmp_path, capsys):
    out = tmp_path / "streaming_encoder.json"
    assert se.main(["--tiny", "--frames", "2", "--qwen-layers", "2", "--out", str(out), "--threads", "1"]) == 0
    results = json.loads(out.read_text())
    siglip = results["towers"]["siglip (2 layers)"]["methods"]
    qwen = results["towers"]["qwen2_5_vl (2 layers)"]["methods"]
    assert list(siglip) == ["dense", "STC-Cacher (r=0.25, N=2)", "ToMe (merge 50%)"]
    assert list(qwen) == ["dense", "STC-Cacher (r=0.25, N=2)"]  # ToMe does not apply to the Qwen ViT
    for rows in (siglip, qwen):
        assert rows["dense"]["relative_error"] == 0.0 and len(rows["dense"]["ms_all_frames"]) == 2
        cacher = rows["STC-Cacher (r=0.25, N=2)"]
        assert cacher["relative_error_all_frames"][0] == pytest.approx(0.0, abs=1e-6)  # frame 0 is a refresh frame
        assert cacher["relative_error_all_frames"][1] > 0.0  # frame 1 is selective
        assert 0.25 < cacher["recomputed_fraction"] < 1.0
    assert 0 < siglip["ToMe (merge 50%)"]["tokens_out"] < 64
    table = capsys.readouterr().out
    assert "| siglip (2 layers, 64 patches) | STC-Cacher (r=0.25, N=2) |" in table
    assert results["commands"][0].startswith("python benchmarks/streaming_encoder.py --tiny")
    cacher = siglip["STC-Cacher (r=0.25, N=2)"]
    assert cacher["ms_refresh_frames"] == pytest.approx(cacher["ms_all_frames"][0])
    assert cacher["ms_selective_frames"] == pytest.approx(cacher["ms_all_frames"][1])
    assert se.table(results) in table
    assert se.main(["--table", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == se.table(results).strip()
    # --append adds a run's towers to the file
    argv = ["--tiny", "--towers", "siglip", "--siglip-layers", "1", "--frames", "2", "--out", str(out), "--append"]
    assert se.main(argv) == 0
    appended = json.loads(out.read_text())
    assert list(appended["towers"]) == ["siglip (2 layers)", "qwen2_5_vl (2 layers)", "siglip (1 layers)"]
    assert len(appended["commands"]) == 2


def test_qwen_patches_pack_like_the_processor(se):
    import torch

    pair = torch.arange(2 * 3 * 28 * 56, dtype=torch.float32).reshape(2, 3, 28, 56)
    patches, grid = se.qwen_patches(pair)
    assert grid.tolist() == [[1, 2, 4]] and patches.shape == (8, 3 * 2 * 14 * 14)
    # the first patch row is the top-left 14x14 patch of both frames, channel-major then time
    expected = pair[:, :, :14, :14].permute(1, 0, 2, 3).reshape(-1)
    assert torch.equal(patches[0], expected)
    # merge groups of 2x2 patches come together: rows 0..3 are patches (0,0), (0,1), (1,0), (1,1)
    assert torch.equal(patches[2], pair[:, :, 14:28, :14].permute(1, 0, 2, 3).reshape(-1))
