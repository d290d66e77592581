"""Truncated EDF files (a copy cut short): refused with the seconds declared vs read, or kept on request."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import numpy as np
import pytest

from omnipress.eeg.cli import main
from omnipress.eeg.io import TruncatedRecordingError, TruncatedRecordingWarning, declared_seconds, read_recording
from omnipress.eeg.prepare import prepare


def _cut(path, out, fraction: float):
    """`path` cut to `fraction` of its bytes, written to `out` (what an interrupted copy leaves)."""
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


@pytest.fixture
def cohort(synth_cohort, tmp_path):
    """Two recordings of the synthetic cohort (90 s each, written by `omnipress eeg synth`'s writer); the second cut
    to 68 % of its size."""
    folder = tmp_path / "edf"
    folder.mkdir()
    shutil.copy(synth_cohort / "p01_r01.edf", folder)
    _cut(synth_cohort / "p02_r01.edf", folder / "p02_r01.edf", 0.68)
    return folder


def test_read_recording_compares_the_header_with_the_signal(cohort, synth_cohort):
    whole = read_recording(cohort / "p01_r01.edf")
    assert whole.duration == whole.declared_duration == 90.0 and whole.truncation is None
    cut = cohort / "p02_r01.edf"
    assert declared_seconds(cut) == 90.0
    with pytest.raises(
        TruncatedRecordingError, match=r"p02_r01\.edf: truncated file: the header declares 90 s"
    ) as info:
        read_recording(cut)
    t = info.value.truncation
    assert t.declared_seconds == 90.0 and 55 < t.read_seconds < 65 and not t.kept
    assert f"the file holds {t.read_seconds:g} s ({t.lost_seconds:g} s missing)" in str(info.value)
    with pytest.warns(
        TruncatedRecordingWarning, match=rf"kept {t.read_seconds:g} s of the 90 s .*\({t.lost_seconds:g} s lost\)"
    ):
        kept = read_recording(cut, allow_truncated=True)
    assert kept.duration == t.read_seconds and kept.declared_duration == 90.0 and kept.truncation.kept
    # a recording never closed declares no record count (-1): nothing to compare, read whole without complaint
    unclosed = cohort.parent / "unclosed.edf"
    data = bytearray((synth_cohort / "p01_r01.edf").read_bytes())
    data[236:244] = b"-1      "  # the header's number of data records
    unclosed.write_bytes(bytes(data))
    assert declared_seconds(unclosed) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedRecordingWarning)
        assert read_recording(unclosed).duration == 90.0


def test_prepare_lists_a_truncated_file_as_a_failure_or_keeps_it_on_request(cohort, tmp_path):
    result = prepare(cohort, tmp_path / "w", progress=False)
    assert len(result.windows) == 90 // 4 and set(result.windows.patient) == {"p01"}  # p02 is not read as whole
    [(file, message)] = result.failures
    assert file.endswith("p02_r01.edf") and "TruncatedRecordingError" in message
    with (tmp_path / "w" / "failures.csv").open() as f:
        [row] = list(csv.DictReader(f))
    read = result.truncated[0].read_seconds
    assert row["file"] == file and float(row["declared_s"]) == 90.0 and float(row["read_s"]) == read
    assert "90 s" in row["error"] and "truncated" in row["error"]
    with pytest.warns(TruncatedRecordingWarning, match=r"p02_r01\.edf: truncated file: kept"):
        kept = prepare(cohort, tmp_path / "w2", allow_truncated=True, progress=False)
    assert not kept.failures and kept.truncated[0].kept
    assert (kept.windows.patient == "p02").sum() == int(read // 4)  # the windows of the seconds that are there
    summary = json.loads((tmp_path / "w2" / "prepare.json").read_text())
    assert summary["truncated"][0]["kept"] and summary["truncated"][0]["declared_seconds"] == 90.0


def test_cli_prepare_reports_truncation_in_one_line_each(cohort, tmp_path, capsys):
    assert main(["prepare", str(cohort), "--out", str(tmp_path / "w"), "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("skipped: TruncatedRecordingError: p02_r01.edf: truncated file") for line in err)
    assert main(["prepare", str(cohort), "--out", str(tmp_path / "w"), "--quiet", "--allow-truncated"]) == 0
    out, err = capsys.readouterr()
    assert "2 patients" in out
    [line] = [line for line in err.splitlines() if "p02_r01" in line]
    assert line.startswith("warning: p02_r01.edf: truncated file: kept") and "s lost)" in line


def test_prepare_again_reuses_unchanged_recordings(cohort, tmp_path):
    first = prepare(cohort, tmp_path / "w", progress=False)
    again = prepare(cohort, tmp_path / "w", progress=False)
    assert sorted(again.reused) == sorted(str(p) for p in cohort.glob("*.edf"))  # the failure is reused too
    assert again.failures == first.failures and len(again.truncated) == 1
    np.testing.assert_array_equal(again.windows.data, first.windows.data)
    shutil.copy(cohort / "p01_r01.edf", cohort / "p03_r01.edf")  # a new recording: only it is read
    third = prepare(cohort, tmp_path / "w", progress=False)
    assert third.reused == [str(cohort / "p01_r01.edf"), str(cohort / "p02_r01.edf")]
    assert list(third.windows.patient).count("p03") == list(third.windows.patient).count("p01")
    redone = prepare(cohort, tmp_path / "w", overwrite=True, progress=False)
    assert not redone.reused and len(redone.windows) == len(third.windows)
