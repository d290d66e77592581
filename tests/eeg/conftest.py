"""Shared EEG fixtures: a small synthetic EDF+ cohort and its prepared windows (built once per test session).

`synth_cohort` is a folder of 8 patients x 1 recording x 90 s written by `omnipress.eeg.synth.write_cohort`
(mixed channel naming, 250/256 Hz, 2-3 seizures each, ``manifest.json`` and ``seizures.csv`` beside).
`synth_windows` is that cohort through `prepare` with the defaults (18-ch double banana, 0.5-40 Hz, 256 Hz, 4-s
windows, "any" rule). Both are read-only for tests: copy before modifying.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mne")
pytest.importorskip("edfio")

SYNTH_PATIENTS = 8


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory) -> Path:
    from omnipress.eeg.synth import write_cohort

    out = tmp_path_factory.mktemp("synth_cohort")
    write_cohort(
        out, patients=SYNTH_PATIENTS, seed=0, minutes_per_patient=1.5, recordings_per_patient=1,
        seizures_per_patient=(2, 3),
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def synth_windows(synth_cohort, tmp_path_factory):
    from omnipress.eeg.prepare import prepare

    result = prepare(synth_cohort, tmp_path_factory.mktemp("synth_windows"), progress=False)
    assert not result.failures, result.failures
    return result.windows
