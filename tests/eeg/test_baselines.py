from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

from omnipress.eeg.baselines import (
    balance_prior,
    balanced_accuracy,
    leave_one_patient_out,
    normalize_per_patient,
)
from omnipress.eeg.features import signal_features
from omnipress.eeg.windows import WindowSet


def _windowset(patients: int = 4, per_patient: int = 30, seed: int = 0) -> WindowSet:
    rng = np.random.default_rng(seed)
    n = patients * per_patient
    return WindowSet(
        data=rng.normal(size=(n, 2, 16)).astype(np.float32),
        channels=["a", "b"],
        sfreq=16.0,
        patient=np.repeat([f"p{i}" for i in range(patients)], per_patient),
        recording=np.repeat([f"p{i}_r" for i in range(patients)], per_patient),
        start=np.tile(np.arange(per_patient, dtype=float), patients),
        label=rng.integers(0, 2, n).astype(np.int8),
        seizure_fraction=np.zeros(n),
    )


def test_lopo_never_trains_on_the_held_out_patient():
    ws = _windowset()
    # Unique random features and random labels: a 1-nearest-neighbour model that had seen the held-out windows
    # would recall every label exactly (BCA 1.0); trained only on other patients it is at chance.
    features = np.random.default_rng(1).normal(size=(len(ws), 5))
    result = leave_one_patient_out(ws, KNeighborsClassifier(n_neighbors=1), features=features)
    memorised = KNeighborsClassifier(n_neighbors=1).fit(features, ws.label).predict(features)
    assert balanced_accuracy(ws.label, memorised) == 1.0
    assert result.pooled_bca < 0.7
    assert len(result.folds) == 4
    for fold in result.folds:
        assert fold.patient not in fold.train_patients
        assert set(ws.patient[fold.train_index]) == set(ws.patients) - {fold.patient}
        assert set(ws.patient[fold.test_index]) == {fold.patient}
        assert not set(fold.train_index) & set(fold.test_index)
    tested = np.concatenate([f.test_index for f in result.folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(len(ws)))  # every window predicted exactly once
    assert np.isfinite(result.probability).all()
    np.testing.assert_array_equal(result.window_id, ws.window_id)


@pytest.mark.parametrize("model", ["logreg", "gboost"])
def test_baselines_beat_chance_on_synthetic_cohort(synth_windows, model, tmp_path):
    features = signal_features(synth_windows.data, synth_windows.sfreq)
    result = leave_one_patient_out(synth_windows, model, features=features)
    assert result.macro_bca > 0.65, result.per_patient_bca()
    assert result.sensitivity > 0.5 and result.specificity > 0.5
    assert set(result.per_patient_bca()) == set(synth_windows.patients)
    summary = result.summary()
    assert summary["model"] == model and summary["patients"] == len(synth_windows.patients)
    result.to_csv(tmp_path / "pred.csv")
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0] == "window_id,patient,label,probability,prediction" and len(lines) == len(synth_windows) + 1


def test_metric_helpers():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    assert balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
    assert balanced_accuracy(np.zeros(4), np.array([0, 0, 1, 1])) == 0.5  # one class present
    np.testing.assert_allclose(balance_prior(np.array([0.2, 0.5, 0.9]), 0.5), [0.2, 0.5, 0.9])
    # trained with 10 % positives, p = 0.1 is the prior: with balanced classes it becomes 0.5
    assert balance_prior(np.array([0.1]), 0.1)[0] == pytest.approx(0.5)
    features = rng.normal(5, 3, (6, 2))
    z = normalize_per_patient(features, np.array(["a", "a", "a", "b", "b", "b"]))
    np.testing.assert_allclose(z[:3].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z[3:].std(0), 1)


def test_lopo_errors():
    ws = _windowset(patients=1)
    with pytest.raises(ValueError, match="at least 2 patients"):
        leave_one_patient_out(ws, features=np.zeros((len(ws), 2)))
    ws = _windowset(patients=2)
    ws.label[ws.patient == "p1"] = 0
    ws.label[ws.patient == "p0"] = 1
    with pytest.raises(ValueError, match="single class"):
        leave_one_patient_out(ws, features=np.zeros((len(ws), 2)))
    with pytest.raises(ValueError, match="unknown baseline model"):
        leave_one_patient_out(_windowset(), "svm", features=np.zeros((120, 2)))
    with pytest.raises(ValueError, match="rows"):
        leave_one_patient_out(_windowset(), features=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="normalize"):
        leave_one_patient_out(_windowset(), normalize="global")
