from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mne")

from omnipress.eeg.io import Recording, infer_patient, read_recording
from omnipress.eeg.montage import DOUBLE_BANANA, ELECTRODES_1020
from omnipress.eeg.prepare import find_recordings, prepare
from omnipress.eeg.preprocess import bandpass, notch, preprocess, resample
from omnipress.eeg.synth import write_edf
from omnipress.eeg.windows import WindowSet


def _signals(n_channels: int, seconds: float, sfreq: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sfreq)) / sfreq
    return 40 * np.sin(2 * np.pi * 7 * t)[None] + rng.normal(0, 15, (n_channels, t.size))


def _write_bdf(path, data_uv: np.ndarray, labels: list[str], sfreq: int) -> None:
    """A minimal BDF (24-bit BioSemi) writer, one-second data records, ±1000 µV physical range."""
    n_ch, n = data_uv.shape
    records = n // sfreq
    phys, dig = 1000.0, 8388607

    def field(value, width):
        return str(value).ljust(width)[:width].encode("ascii")

    header = b"\xffBIOSEMI" + field("X X X X", 80) + field("Startdate 01-JAN-2020 X X X", 80)
    header += field("01.01.20", 8) + field("10.00.00", 8) + field(256 * (n_ch + 1), 8) + field("24BIT", 44)
    header += field(records, 8) + field(1, 8) + field(n_ch, 4)
    for key, width in (("label", 16), ("transducer", 80), ("dim", 8), ("pmin", 8), ("pmax", 8), ("dmin", 8),
                       ("dmax", 8), ("prefilter", 80), ("ns", 8), ("reserved", 32)):  # fmt: skip
        values = {
            "label": labels, "transducer": ["AgAgCl"] * n_ch, "dim": ["uV"] * n_ch, "pmin": [-phys] * n_ch,
            "pmax": [phys] * n_ch, "dmin": [-dig - 1] * n_ch, "dmax": [dig] * n_ch, "prefilter": [""] * n_ch,
            "ns": [sfreq] * n_ch, "reserved": [""] * n_ch,
        }[key]  # fmt: skip
        header += b"".join(field(v, width) for v in values)
    digital = np.round(data_uv[:, : records * sfreq] / phys * dig).astype(np.int32)
    body = bytearray()
    for r in range(records):
        for c in range(n_ch):
            chunk = digital[c, r * sfreq : (r + 1) * sfreq].astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
            body += chunk.tobytes()
    path.write_bytes(header + bytes(body))


def test_read_edf_plus_with_annotations(tmp_path):
    data = _signals(3, 20, 200.0)
    notes = [(2.0, 3.5, "Seizure (focal)"), (6.0, 4.0, "Post-ictal slowing"), (0.0, 0.0, "Recording start")]
    path = write_edf(tmp_path / "p07_r02.edf", data, ["Fp1", "T3", "ECG"], 200.0, notes)
    rec = read_recording(path)
    assert isinstance(rec, Recording)
    assert (rec.patient, rec.recording, rec.channels, rec.sfreq) == ("p07", "p07_r02", ["Fp1", "T3", "ECG"], 200.0)
    assert rec.data.dtype == np.float32 and rec.data.shape == (3, 4000)
    step = np.ptp(data) / 65535  # EDF stores 16-bit integers over the physical range
    np.testing.assert_allclose(rec.data, data, atol=step)
    assert rec.seizures == [(2.0, 5.5)]  # the post-ictal event is not a seizure
    assert rec.duration == 20.0 and rec.source == str(path)

    assert read_recording(path, patient="someone").patient == "someone"
    assert read_recording(path, annotations=[(1, 2), (3, 4)]).seizures == [(1.0, 2.0), (3.0, 4.0)]
    assert read_recording(path, annotations={"p07_r02.edf": [(7, 9)]}).seizures == [(7.0, 9.0)]
    assert read_recording(path, annotations={"other": [(7, 9)]}).seizures == []
    csv = tmp_path / "sz.csv"
    csv.write_text("file,onset,offset\np07_r02.edf,11,12.5\n")
    assert read_recording(path, annotations=csv).seizures == [(11.0, 12.5)]


def test_sidecar_annotations_are_used(tmp_path):
    data = _signals(2, 10, 100.0)
    path = write_edf(tmp_path / "aaaaaajy_s001_t000.edf", data, ["Fp1", "F7"], 100.0, [(1.0, 1.0, "seizure")])
    (tmp_path / "aaaaaajy_s001_t000.csv_bi").write_text(
        "# bname = aaaaaajy_s001_t000\nchannel,start_time,stop_time,label,confidence\nTERM,4.0,6.0,seiz,1.0\n"
    )
    rec = read_recording(path)
    assert rec.patient == "aaaaaajy" and rec.seizures == [(4.0, 6.0)]
    chb = write_edf(tmp_path / "chb05_02.edf", data, ["FP1-F7", "F7-T7"], 100.0, [])
    (tmp_path / "chb05-summary.txt").write_text(
        "File Name: chb05_02.edf\nNumber of Seizures in File: 1\nSeizure Start Time: 3 seconds\n"
        "Seizure End Time: 8 seconds\n"
    )
    assert read_recording(chb).seizures == [(3.0, 8.0)]


def test_read_bdf(tmp_path):
    data = _signals(2, 6, 128.0, seed=1)
    path = tmp_path / "b1_r1.bdf"
    _write_bdf(path, data, ["Cz", "Pz"], 128)
    rec = read_recording(path, annotations=[(1.0, 2.0)])
    assert rec.channels == ["Cz", "Pz"] and rec.sfreq == 128.0 and rec.data.shape == (2, 768)
    np.testing.assert_allclose(rec.data, data, atol=1e-3)


def test_bad_files_fail_clearly(tmp_path):
    garbage = tmp_path / "broken.edf"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"broken\.edf: not a readable EDF file"):
        read_recording(garbage)
    with pytest.raises(FileNotFoundError, match="EEG file not found"):
        read_recording(tmp_path / "absent.edf")
    other = tmp_path / "x.txt"
    other.write_text("hi")
    with pytest.raises(ValueError, match="unsupported EEG file type"):
        read_recording(other)
    path = write_edf(tmp_path / "q.edf", _signals(1, 5, 100.0), ["Cz"], 100.0, [(1.0, 0.0, "seizure onset")])
    with pytest.raises(ValueError, match=r"q\.edf: bad seizure annotations.*no matching end marker"):
        read_recording(path)
    assert infer_patient("chb01_03") == "chb01" and infer_patient("eeg12") == "eeg12"


def test_filters_and_resampling():
    sfreq = 250.0
    t = np.arange(int(20 * sfreq)) / sfreq
    x = np.stack([np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 50 * t) + 2.0, np.sin(2 * np.pi * 0.1 * t)])
    y = bandpass(x, sfreq, 0.5, 40.0)
    core = slice(1000, -1000)
    assert np.std(y[0, core]) == pytest.approx(np.std(np.sin(2 * np.pi * 10 * t[core])), rel=0.02)  # 10 Hz kept
    assert np.abs(y[1, core]).max() < 0.05  # 0.1 Hz and DC removed
    z = notch(np.sin(2 * np.pi * 50 * t)[None], sfreq, 50.0)
    assert np.abs(z[0, core]).max() < 0.02
    r, new = resample(x, sfreq, 256.0)
    assert new == 256.0 and r.shape == (2, (20 * 256))
    with pytest.raises(ValueError, match="Nyquist"):
        bandpass(x, 64.0, 0.5, 40.0)
    with pytest.raises(ValueError, match="too short"):
        bandpass(x[:, :100], sfreq, 0.5, 40.0)
    rec = Recording("p", "p_r", x.astype(np.float32), ["a", "b"], sfreq, [(1.0, 2.0)])
    out = preprocess(rec, band=(0.5, 40.0), notch_freq=50.0, sfreq=128.0)
    assert out.sfreq == 128.0 and out.data.shape == (2, 2560) and out.seizures == [(1.0, 2.0)]
    assert preprocess(rec, band=None, sfreq=None).data is not None


def test_prepare_collects_failures_and_goes_on(tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    rng = np.random.default_rng(0)
    good = []
    for i, sfreq in enumerate((250.0, 256.0)):
        data = rng.normal(0, 20, (19, int(60 * sfreq)))
        good.append(write_edf(folder / f"p{i}_r1.edf", data, list(ELECTRODES_1020), sfreq, [(10.0, 2.0, "Seizure")]))
    (folder / "p8_r1.edf").write_bytes(rng.bytes(3000))  # corrupt
    missing = [e for e in ELECTRODES_1020 if e not in ("O1", "Pz")]
    write_edf(folder / "p9_r1.edf", rng.normal(0, 20, (17, 60 * 256)), missing, 256.0, [])
    result = prepare(folder, tmp_path / "out", progress=False, stride=2.0)
    ws = result.windows
    assert ws.channels == DOUBLE_BANANA and ws.sfreq == 256.0 and ws.data.shape[1:] == (18, 1024)
    assert set(ws.patient) == {"p0", "p1"} and len(ws) == 2 * 29
    assert ws.label.sum() == 2 * 2  # seizure [10, 12) s: the windows starting at 8 and 10 s
    failures = dict((p.split("/")[-1], m) for p, m in result.failures)
    assert set(failures) == {"p8_r1.edf", "p9_r1.edf"}
    assert "not a readable EDF file" in failures["p8_r1.edf"]
    assert "missing derivations" in failures["p9_r1.edf"] and "'O1'" in failures["p9_r1.edf"]
    assert "'Pz'" in failures["p9_r1.edf"]
    assert result.windows_per_second > 0
    back = WindowSet.load(tmp_path / "out")
    np.testing.assert_array_equal(back.label, ws.label)
    assert "p8_r1.edf" in (tmp_path / "out" / "failures.csv").read_text()
    assert (tmp_path / "out" / "prepare.json").is_file()

    csv = tmp_path / "sz.csv"
    csv.write_text("file,onset,offset\np0_r1.edf,30,40\n")
    with_csv = prepare(good, None, annotations=csv, progress=False)
    assert with_csv.unannotated == ["p1_r1"]
    assert with_csv.windows.subset(with_csv.windows.patient == "p1").label.sum() == 0
    with pytest.raises(ValueError, match="name none of"):
        prepare(good, None, annotations={"zzz": [(1, 2)]}, progress=False)
    with pytest.raises(ValueError, match=r"no recording could be prepared.*p8_r1\.edf"):
        prepare([folder / "p8_r1.edf"], None, progress=False)
    with pytest.raises(FileNotFoundError):
        find_recordings(tmp_path / "nope")


def test_package_import_is_light():
    code = (
        "import sys, omnipress.eeg as e; heavy = [m for m in ('mne', 'matplotlib', 'sklearn') if m in sys.modules];"
        "assert not heavy, heavy; e.WindowSet; e.prepare; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
