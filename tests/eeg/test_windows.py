from __future__ import annotations

import numpy as np
import pytest

from omnipress.eeg.io import Recording
from omnipress.eeg.windows import WindowSet, label_windows, make_windows, seizure_overlap


def _recording(seconds: float = 40.0, sfreq: float = 100.0, seizures=((10.0, 21.0),)) -> Recording:
    n = int(seconds * sfreq)
    data = np.arange(3 * n, dtype=np.float32).reshape(3, n)
    return Recording("pa", "pa_r1", data, ["A-B", "B-C", "C-D"], sfreq, list(seizures))


def test_windows_are_slices_of_the_recording():
    rec = _recording()
    ws = make_windows(rec, length=4.0, stride=2.5)
    starts = np.arange(0, 40 - 4 + 1e-9, 2.5)
    assert len(ws) == len(starts) == 15
    np.testing.assert_allclose(ws.start, starts)
    for i, s in enumerate(starts):
        a = round(s * 100)
        np.testing.assert_array_equal(ws.data[i], rec.data[:, a : a + 400])
    assert ws.data.shape == (15, 3, 400) and ws.data.dtype == np.float32
    assert ws.duration == 4.0 and ws.sfreq == 100.0 and ws.channels == rec.channels
    assert set(ws.patient) == {"pa"} and set(ws.recording) == {"pa_r1"}
    assert ws.window_id[0] == "pa_r1:0" and ws.window_id[1] == "pa_r1:2.5"
    assert len(set(ws.window_id)) == len(ws)
    default = make_windows(rec)  # stride defaults to the length: 10 non-overlapping windows
    np.testing.assert_allclose(default.start, np.arange(10) * 4.0)


# seizure [10, 21) s, 4-s windows; columns: start, fraction, any, majority, center, fraction>=0.75
BOUNDARY_TABLE = [
    (6.0, 0.0, 0, 0, 0, 0),  # ends exactly at the onset
    (7.0, 0.25, 1, 0, 0, 0),  # centre 9 before onset
    (8.0, 0.5, 1, 1, 1, 0),  # half inside: majority ties count; centre 10 == onset (inside)
    (9.0, 0.75, 1, 1, 1, 1),
    (12.0, 1.0, 1, 1, 1, 1),
    (18.0, 0.75, 1, 1, 1, 1),
    (19.0, 0.5, 1, 1, 0, 0),  # centre 21 == offset (outside, half-open)
    (20.0, 0.25, 1, 0, 0, 0),
    (21.0, 0.0, 0, 0, 0, 0),  # starts exactly at the offset
]


@pytest.mark.parametrize("rule, column", [("any", 2), ("majority", 3), ("center", 4), ("fraction", 5)])
def test_labels_at_seizure_boundaries(rule, column):
    rec = _recording()
    ws = make_windows(rec, length=4.0, stride=1.0, rule=rule, min_fraction=0.75)
    by_start = {float(s): (float(f), int(lab)) for s, f, lab in zip(ws.start, ws.seizure_fraction, ws.label)}
    for row in BOUNDARY_TABLE:
        fraction, label = by_start[row[0]]
        assert fraction == pytest.approx(row[1]), row
        assert label == row[column], (rule, row)


def test_overlap_with_several_seizures_and_errors():
    frac = seizure_overlap(np.array([0.0, 4.0]), 4.0, [(1.0, 2.0), (3.0, 5.0)])
    np.testing.assert_allclose(frac, [0.5, 0.25])
    with pytest.raises(ValueError, match="labelling rule"):
        label_windows(np.zeros(1), 4.0, [], rule="mostly")
    with pytest.raises(ValueError, match="min_fraction"):
        label_windows(np.zeros(1), 4.0, [], rule="fraction", min_fraction=0.0)
    with pytest.raises(ValueError, match="positive"):
        make_windows(_recording(), length=0.0)


def test_short_recording_gives_no_window():
    ws = make_windows(_recording(seconds=3.0), length=4.0)
    assert len(ws) == 0 and ws.data.shape == (0, 3, 400)


def test_save_load_roundtrip_mmap_and_float16(tmp_path):
    ws = make_windows(_recording(), length=4.0, stride=1.5)
    ws.save(tmp_path / "w")
    assert {p.name for p in (tmp_path / "w").iterdir()} == {"windows.npz", "windows.csv"}
    back = WindowSet.load(tmp_path / "w")
    assert isinstance(back.data.base, np.memmap) or isinstance(back.data, np.memmap)
    np.testing.assert_array_equal(back.data, ws.data)
    for name in ("patient", "recording", "start", "label", "seizure_fraction"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ws, name))
    np.testing.assert_array_equal(back.window_id, ws.window_id)
    assert back.channels == ws.channels and back.sfreq == ws.sfreq
    in_memory = WindowSet.load(tmp_path / "w", mmap=False)
    np.testing.assert_array_equal(in_memory.data, ws.data)

    ws.save(tmp_path / "h", dtype="float16")
    half = WindowSet.load(tmp_path / "h")
    assert half.data.dtype == np.float32
    np.testing.assert_allclose(half.data, ws.data, rtol=1e-3)
    assert (tmp_path / "h" / "windows.npz").stat().st_size < (tmp_path / "w" / "windows.npz").stat().st_size
    with pytest.raises(ValueError, match="dtype"):
        ws.save(tmp_path / "x", dtype="int16")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no WindowSet directory"):
        WindowSet.load(tmp_path / "nothing")
    ws = make_windows(_recording(), length=4.0)
    ws.save(tmp_path / "w")
    (tmp_path / "w" / "windows.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"windows\.csv is missing"):
        WindowSet.load(tmp_path / "w")
    ws.save(tmp_path / "w")
    (tmp_path / "w" / "windows.npz").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="corrupt"):
        WindowSet.load(tmp_path / "w")
    ws.save(tmp_path / "w")
    lines = (tmp_path / "w" / "windows.csv").read_text().splitlines()
    (tmp_path / "w" / "windows.csv").write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(ValueError, match="rows"):
        WindowSet.load(tmp_path / "w")


def test_subset_concatenate_and_validation():
    a = make_windows(_recording(), length=4.0)
    b = make_windows(Recording("pb", "pb_r1", np.ones((3, 1200)), ["A-B", "B-C", "C-D"], 100.0), length=4.0)
    both = WindowSet.concatenate([a, b])
    assert len(both) == len(a) + len(b) and both.patients == ["pa", "pb"]
    mask = both.patient == "pb"
    sub = both.subset(mask)
    np.testing.assert_array_equal(sub.data, b.data)
    picked = both.subset([0, 2])
    np.testing.assert_array_equal(picked.start, a.start[[0, 2]])
    with pytest.raises(ValueError, match="boolean mask"):
        both.subset(mask[:-1])
    with pytest.raises(ValueError, match="cannot concatenate"):
        WindowSet.concatenate([a, make_windows(_recording(sfreq=50.0), length=4.0)])
    with pytest.raises(ValueError, match="channel names"):
        WindowSet(a.data, ["x"], 100.0, a.patient, a.recording, a.start, a.label, a.seizure_fraction)
    with pytest.raises(ValueError, match="shape"):
        WindowSet(a.data, a.channels, 100.0, a.patient[:-1], a.recording, a.start, a.label, a.seizure_fraction)
