from __future__ import annotations

import numpy as np
import pytest

mne = pytest.importorskip("mne")

from omnipress.eeg.annotations import load_annotations  # noqa: E402
from omnipress.eeg.features import FEATURE_NAMES, signal_features, welch_psd  # noqa: E402
from omnipress.eeg.io import read_recording  # noqa: E402
from omnipress.eeg.montage import ELECTRODES_1020  # noqa: E402
from omnipress.eeg.synth import (  # noqa: E402
    SEIZURE_KINDS,
    PatientProfile,
    background,
    channel_names,
    read_manifest,
    seizure_signal,
    write_cohort,
)


def test_cohort_files_are_edf_plus_readable_by_mne(synth_cohort):
    manifest = read_manifest(synth_cohort)
    assert len(manifest["patients"]) == 8 and len(manifest["recordings"]) == 8
    assert {p["naming"] for p in manifest["patients"]} == {"new", "old", "tuh"}
    for entry in manifest["recordings"]:
        raw = mne.io.read_raw_edf(synth_cohort / entry["file"], preload=False, verbose="error")
        assert raw.info["sfreq"] == entry["sfreq"]
        assert raw.n_times == round(entry["duration"] * entry["sfreq"])
        seizures = [
            (onset, onset + duration, text)
            for onset, duration, text in zip(
                raw.annotations.onset, raw.annotations.duration, raw.annotations.description
            )
            if text.startswith("Seizure")
        ]
        expected = [(s["onset"], s["offset"], f"Seizure ({s['kind']})") for s in entry["seizures"]]
        assert len(seizures) == len(expected) >= 0
        for (on, off, text), (e_on, e_off, e_text) in zip(seizures, expected):
            assert text == e_text and on == pytest.approx(e_on, abs=1e-3) and off == pytest.approx(e_off, abs=1e-3)
        assert any("Post-ictal" in t for t in raw.annotations.description) == bool(entry["postictal"])
    assert sum(len(r["seizures"]) for r in manifest["recordings"]) >= 16  # 2-3 per patient


def test_read_back_through_our_reader_and_plain_csv(synth_cohort):
    table = load_annotations(synth_cohort / "seizures.csv")
    for entry in read_manifest(synth_cohort)["recordings"]:
        rec = read_recording(synth_cohort / entry["file"])
        assert rec.patient == entry["patient"]
        np.testing.assert_allclose(
            np.array(rec.seizures).reshape(-1, 2), np.array(table[entry["recording"]]), atol=1e-3
        )


def test_prepared_cohort_and_seizure_features_differ(synth_windows):
    ws = synth_windows
    assert len(ws.patients) == 8 and 0 < ws.label.mean() < 1
    features = signal_features(ws.data, ws.sfreq)
    column = FEATURE_NAMES.index("log_variance_max")
    for patient in ws.patients:
        rows = ws.patient == patient
        seizure = features[rows & (ws.label == 1), column]
        rest = features[rows & (ws.label == 0), column]
        effect = (seizure.mean() - rest.mean()) / features[rows, column].std()
        assert effect > 0.5, (patient, effect)


def _profile(**overrides) -> PatientProfile:
    base = dict(
        patient="p01", age_group="adult", sfreq=256.0, naming="new", background_uv=20.0, exponent=1.5,
        spatial_lambda=0.7, alpha_freq=10.0, alpha_uv=30.0, beta_uv=5.0, blink_rate=5.0, muscle_rate=1.0,
        pop_rate=0.5, line_freq=50.0, line_uv=3.0, seizure_kinds=("focal",), seizure_gain=1.0,
    )  # fmt: skip
    return PatientProfile(**{**base, **overrides})


def test_background_is_one_over_f_with_posterior_alpha():
    x = background(_profile(), 256 * 60, np.random.default_rng(0))
    assert x.shape == (19, 256 * 60) and np.isfinite(x).all()
    freqs, psd = welch_psd(x, 256.0)
    band = lambda lo, hi: psd[:, (freqs >= lo) & (freqs < hi)].mean(axis=1)  # noqa: E731
    o1, fp1 = ELECTRODES_1020.index("O1"), ELECTRODES_1020.index("Fp1")
    assert band(8, 12)[o1] > 3 * band(8, 12)[fp1]  # alpha is posterior
    assert band(1, 4)[fp1] > 5 * band(20, 30)[fp1]  # 1/f: slow activity dominates
    corr = np.corrcoef(x)
    assert corr[ELECTRODES_1020.index("C3"), ELECTRODES_1020.index("Cz")] > corr[fp1, o1]  # neighbours correlate more


@pytest.mark.parametrize("kind", SEIZURE_KINDS)
def test_each_seizure_kind(kind):
    x, focus = seizure_signal(kind, 256 * 20, 256.0, np.random.default_rng(1))
    assert x.shape == (19, 256 * 20) and np.isfinite(x).all()
    assert np.abs(x).max() > 50  # clearly above a 20 µV background
    assert (focus is not None) == (kind in ("focal", "neonatal"))
    if kind == "neonatal":  # confined to a few electrodes
        assert (np.abs(x).max(axis=1) > 0.2 * np.abs(x).max()).sum() <= 6
    if kind == "absence":  # ~3 Hz rhythm
        freqs, psd = welch_psd(x[ELECTRODES_1020.index("F3")], 256.0)
        assert 2.0 <= freqs[np.argmax(psd)] <= 4.5
    with pytest.raises(ValueError, match="unknown seizure kind"):
        seizure_signal("myoclonic-ish", 100, 256.0, np.random.default_rng(0))


def test_determinism_per_patient_and_options(tmp_path):
    one = write_cohort(tmp_path / "a", patients=1, seed=3, minutes_per_patient=2.0, recordings_per_patient=2)
    two = write_cohort(tmp_path / "b", patients=2, seed=3, minutes_per_patient=2.0, recordings_per_patient=2)
    assert [p.name for p in one] == ["p01_r01.edf", "p01_r02.edf"] and len(two) == 4
    assert one[0].read_bytes() == two[0].read_bytes()  # patient 1 does not depend on the cohort size
    other = write_cohort(tmp_path / "c", patients=1, seed=4, minutes_per_patient=2.0, recordings_per_patient=2)
    assert other[0].read_bytes() != one[0].read_bytes()
    assert channel_names("tuh")[7] == "EEG T3-REF" and channel_names("old")[12] == "T5"
    with pytest.raises(ValueError, match="at least 30 s"):
        write_cohort(tmp_path / "d", patients=1, minutes_per_patient=0.2)
    with pytest.raises(ValueError, match="seizures_per_patient"):
        write_cohort(tmp_path / "d", patients=1, seizures_per_patient=(3, 1))
    with pytest.raises(ValueError, match="cannot hold 5 seizures"):
        write_cohort(tmp_path / "d", patients=1, minutes_per_patient=1.0, seizures_per_patient=(5, 5))
    with pytest.raises(ValueError, match="naming"):
        write_cohort(tmp_path / "d", patients=1, naming="klingon")
