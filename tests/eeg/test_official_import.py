"""`omnipress eeg import`: the official code's X.npy / y.npy / subject counts -> WindowSet -> every stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnipress.eeg.cli import main
from omnipress.eeg.montage import DOUBLE_BANANA
from omnipress.eeg.official import COHORTS, import_arrays, read_counts
from omnipress.eeg.run import RESULTS, read_jsonl
from omnipress.eeg.windows import WindowSet
from tests.eeg._fixtures import make_windowset
from tests.eeg.test_official_templates import OFFICIAL_STYLE

COUNTS = [12, 10, 12, 9]  # uneven, subject after subject, as the official arrays are stored


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """X.npy (float32, 43 windows x 18 channels x 4 s at 64 Hz) and y.npy (int64) made here, in a folder."""
    ws = make_windowset(patients=4, per_patient=12, seizure_rows=(4, 8), sfreq=64.0, duration=4.0, seed=3)
    rows = np.concatenate([np.arange(12 * p, 12 * p + c) for p, c in enumerate(COUNTS)])
    X, y = np.asarray(ws.data[rows], dtype=np.float32), ws.label[rows].astype(np.int64)
    folder = tmp_path_factory.mktemp("official")
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return folder, X, y


def test_import_round_trip_index_knn_and_a_local_run(arrays, tmp_path, capsys):
    folder, X, y = arrays
    out = tmp_path / "windows"
    counts = ",".join(map(str, COUNTS))
    assert main(["import", str(folder), "--out", str(out), "--counts", counts, "--sfreq", "64", "--quiet"]) == 0
    assert "43 windows x 18 channels x 4 s @ 64 Hz" in capsys.readouterr().out
    ws = WindowSet.load(out)
    np.testing.assert_array_equal(np.asarray(ws.data), X)
    np.testing.assert_array_equal(ws.label, y)
    assert ws.channels == DOUBLE_BANANA and ws.sfreq == 64.0
    assert ws.patient.tolist() == [f"sub_{i:02d}" for i, c in enumerate(COUNTS) for _ in range(c)]
    assert ws.start.tolist() == [4.0 * j for c in COUNTS for j in range(c)]  # one window length apart
    assert json.loads((out / "import.json").read_text())["X"]["path"].endswith("X.npy")
    assert main(["import", str(folder), "--out", str(out), "--counts", counts, "--sfreq", "64", "--quiet"]) == 0
    assert "is up to date" in capsys.readouterr().out  # the same import again: nothing to do

    index, knn = tmp_path / "index", tmp_path / "knn"
    assert main(["index", "--windows", str(out), "--out", str(index), "--quiet"]) == 0
    assert main(["knn", "--windows", str(out), "--index", str(index), "--out", str(knn), "--queries", "all",
                 "--quiet"]) == 0  # fmt: skip
    knn_rows = read_jsonl(knn / RESULTS)
    assert sorted(r["window"] for r in knn_rows) == list(range(43))
    assert {r["patient"] for r in knn_rows} == {"sub_00", "sub_01", "sub_02", "sub_03"}

    images, run, template = tmp_path / "images", tmp_path / "run", tmp_path / "prompt-style.txt"
    template.write_text(OFFICIAL_STYLE)  # the paper-reproduction setting: an official-format template
    assert main(["render", "--windows", str(out), "--out", str(images), "--kinds", "vlm", "--vlm-size", "112",
                 "--old-names", "--only-queries", "--limit", "2", "--workers", "1", "--quiet"]) == 0  # fmt: skip
    code = main(
        ["run", "--windows", str(out), "--images", str(images), "--index", str(index), "--out", str(run),
         "--backend", "local", "--model", "tiny:qwen2_vl", "--variant", "raicl", "--parse", "official",
         "--template", str(template),
         "--queries", "all_seizures", "--limit", "2", "--max-tokens", "4", "--quiet"]
    )  # fmt: skip
    assert code == 0
    rows = sorted(read_jsonl(run / RESULTS), key=lambda r: r["window"])
    # CHSZ protocol on official trial ids: every 10th row plus every seizure row, in row order
    expected = sorted({0, 10, 20, 30, 40} | set(np.flatnonzero(y == 1).tolist()))[:2]
    assert [r["window"] for r in rows] == expected
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["template"] == OFFICIAL_STYLE and meta["config"]["parse"] == "official"
    for row in rows:
        assert row["parse"] == "official" and len(row["references"]) == 4
        assert all(ref["patient"] != row["patient"] for ref in row["references"] if ref["label"] == 1)
        assert all(ref["patient"] == row["patient"] for ref in row["references"] if ref["label"] == 0)
        assert all(ref["window"] < row["window"] or row["window"] < 2 for ref in row["references"][2:])


def test_import_arrays_checks_and_one_line_errors(arrays, tmp_path, capsys):
    folder, X, _ = arrays
    out = str(tmp_path / "w")
    cases = [
        (["--counts", "12,10,12,8", "--sfreq", "64"], "the 4 subject counts sum to 42 but X holds 43 windows"),
        (["--counts", "12,10,0,21", "--sfreq", "64"], "subject counts must be positive integers"),
        (["--counts", "43"], "give the sampling rate and the subject counts"),
        (["--dataset", "CHSZ"], "CHSZ windows are 4 s at 250 Hz (1000 samples), but X holds 256 samples"),
        (["--dataset", "NICU", "--sfreq", "64"], "NICU is sampled at 256 Hz, not 64 Hz"),
        (["--counts", "43", "--sfreq", "64", "--channels", "a,b"], "X has 18 channels but 2 channel names"),
        (["--counts", "43", "--sfreq", "64", "--labels", str(tmp_path / "none.npy")], "no such file"),
        (["--counts", str(tmp_path / "counts.txt"), "--sfreq", "64"], "no counts file at"),
    ]
    for extra, message in cases:
        assert main(["import", str(folder), "--out", out, "--quiet", *extra]) == 1, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (extra, err)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "X.npy", X[:5])
    np.save(bad / "y.npy", np.array([0, 1, 2, 0, 1]))
    assert main(["import", str(bad), "--out", out, "--counts", "5", "--sfreq", "64", "--quiet"]) == 1
    assert "y must hold 0 (non-seizure) and 1 (seizure) only; found [0, 1, 2]" in capsys.readouterr().err
    np.save(bad / "y.npy", np.zeros(4))
    assert main(["import", str(bad), "--out", out, "--counts", "5", "--sfreq", "64", "--quiet"]) == 1
    assert "y has shape (4,) but X holds 5 windows" in capsys.readouterr().err
    np.save(bad / "X.npy", np.zeros((3, 18, 1000), dtype=np.float32))
    np.save(bad / "y.npy", np.zeros(3))
    assert main(["import", str(bad), "--out", out, "--dataset", "CHSZ", "--quiet"]) == 1
    assert "CHSZ has 21227 windows in 27 subjects, but X holds 3" in capsys.readouterr().err
    assert main(["import", str(bad), "--out", out, "--dataset", "CHSZ", "--counts", "1,2", "--quiet"]) == 0
    assert WindowSet.load(out).patient.tolist() == ["sub_00", "sub_01", "sub_01"]
    assert main(["import", str(bad), "--out", out, "--dataset", "CHSZ", "--counts", "2,1", "--quiet"]) == 1
    assert "already holds other windows; use --overwrite" in capsys.readouterr().err
    assert main(["import", str(bad), "--out", out, "--dataset", "CHSZ", "--counts", "2,1", "--overwrite"]) == 0
    assert WindowSet.load(out).patient.tolist() == ["sub_00", "sub_00", "sub_01"]
    with pytest.raises(ValueError, match="NaN or inf \\(first in window 1\\)"):
        nan = np.zeros((3, 18, 8), dtype=np.float32)
        nan[1, 4, 2] = np.nan
        import_arrays(nan, np.zeros(3), [3], sfreq=2.0)


def test_known_cohorts_and_count_files(tmp_path):
    assert (len(COHORTS["CHSZ"].subject_counts), COHORTS["CHSZ"].n_windows, COHORTS["CHSZ"].sfreq) == (27, 21227, 250)
    assert (len(COHORTS["NICU"].subject_counts), COHORTS["NICU"].n_windows, COHORTS["NICU"].sfreq) == (39, 54073, 256)
    assert COHORTS["CHSZ"].n_samples == 1000 and COHORTS["NICU"].n_samples == 1024
    assert read_counts("191, 41,121") == [191, 41, 121]
    (tmp_path / "c.txt").write_text("3\n4\n")
    (tmp_path / "c.json").write_text("[3, 4]")
    np.save(tmp_path / "c.npy", np.array([3, 4]))
    assert read_counts(tmp_path / "c.txt") == read_counts(tmp_path / "c.json") == read_counts(tmp_path / "c.npy")
    ws = import_arrays(np.zeros((7, 2, 8), dtype=np.float32), np.zeros(7), [3, 4], sfreq=4.0, channels=["a", "b"],
                       stride=1.0, names=["x", "y"])  # fmt: skip
    assert ws.start.tolist() == [0, 1, 2, 0, 1, 2, 3] and ws.recording.tolist() == ["x"] * 3 + ["y"] * 4
