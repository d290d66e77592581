"""Classical baselines on the same windows: logistic regression and gradient boosting on `signal_features`,
evaluated leave-one-patient-out (LOPO).

Every window is predicted by a model fitted on the windows of all *other* patients, matching RAICL's cross-patient
use of seizure examples. The score reported by RAICL is the per-patient balanced accuracy (mean of
sensitivity and specificity), macro-averaged over patients (`BaselineResult.macro_bca`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnipress.eeg.features import signal_features
from omnipress.eeg.progress import progress_bar
from omnipress.eeg.windows import WindowSet
from omnipress.extras import require

MODELS = ("logreg", "gboost")


def balanced_accuracy(label: np.ndarray, prediction: np.ndarray) -> float:
    """Mean recall over the classes present in ``label`` (sklearn's convention for one-class subsets)."""
    label, prediction = np.asarray(label), np.asarray(prediction)
    recalls = [float(np.mean(prediction[label == c] == c)) for c in np.unique(label)]
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass(frozen=True)
class LopoFold:
    """One LOPO fold: the held-out patient and what the model was trained on."""

    patient: str
    train_patients: tuple[str, ...]
    train_index: np.ndarray
    test_index: np.ndarray


@dataclass
class BaselineResult:
    """Per-window LOPO predictions of one model."""

    model: str
    window_id: np.ndarray
    patient: np.ndarray
    label: np.ndarray
    probability: np.ndarray  # (n,) float32, P(seizure)
    prediction: np.ndarray  # (n,) int8, probability >= 0.5
    folds: list[LopoFold] = field(default_factory=list)

    def per_patient_bca(self) -> dict[str, float]:
        """Balanced accuracy of each patient's windows."""
        return {
            str(p): balanced_accuracy(self.label[self.patient == p], self.prediction[self.patient == p])
            for p in dict.fromkeys(self.patient.tolist())
        }

    @property
    def macro_bca(self) -> float:
        """Per-patient balanced accuracy averaged over patients (RAICL's metric)."""
        return float(np.mean(list(self.per_patient_bca().values())))

    @property
    def pooled_bca(self) -> float:
        """Balanced accuracy over all windows together."""
        return balanced_accuracy(self.label, self.prediction)

    @property
    def sensitivity(self) -> float:
        positive = self.label == 1
        return float(np.mean(self.prediction[positive] == 1)) if positive.any() else float("nan")

    @property
    def specificity(self) -> float:
        negative = self.label == 0
        return float(np.mean(self.prediction[negative] == 0)) if negative.any() else float("nan")

    def summary(self) -> dict[str, float | str | int]:
        return {
            "model": self.model,
            "windows": len(self.label),
            "patients": len(self.folds),
            "macro_bca": self.macro_bca,
            "pooled_bca": self.pooled_bca,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
        }

    def to_csv(self, path: str | Path) -> None:
        """One row per window: ``window_id,patient,label,probability,prediction``."""
        with Path(path).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["window_id", "patient", "label", "probability", "prediction"])
            for row in zip(self.window_id, self.patient, self.label, self.probability, self.prediction):
                writer.writerow([row[0], row[1], int(row[2]), f"{float(row[3]):.6g}", int(row[4])])


def make_model(model: str | Any, seed: int = 0) -> Any:
    """A fresh scikit-learn classifier: ``"logreg"`` (standardised, class-balanced logistic regression),
    ``"gboost"`` (histogram gradient boosting, unweighted: `leave_one_patient_out` balances its probabilities with
    `balance_prior`, because sample weights make scikit-learn's binning ~10x slower), or a clone of an estimator."""
    purpose = "the classical baselines"
    clone = require("sklearn.base", extra="eeg", purpose=purpose).clone
    HistGradientBoostingClassifier = require("sklearn.ensemble", purpose=purpose).HistGradientBoostingClassifier
    LogisticRegression = require("sklearn.linear_model", purpose=purpose).LogisticRegression
    make_pipeline = require("sklearn.pipeline", purpose=purpose).make_pipeline
    StandardScaler = require("sklearn.preprocessing", purpose=purpose).StandardScaler

    if not isinstance(model, str):
        return clone(model)
    if model == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    if model == "gboost":
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=False, random_state=seed)
    raise ValueError(f"unknown baseline model {model!r}; expected one of {MODELS} or a scikit-learn estimator")


def balance_prior(probability: np.ndarray, prior: float) -> np.ndarray:
    """Re-weight P(seizure) learnt under a training seizure rate ``prior`` to what it would be with balanced classes
    (Bayes' rule with the class prior swapped), so that thresholding at 0.5 targets balanced accuracy."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-12, 1 - 1e-12)
    odds = (p / prior) / ((1 - p) / (1 - prior))
    return odds / (1 + odds)


def normalize_per_patient(features: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Z-score every feature within each patient (unsupervised; uses the held-out patient's unlabelled windows)."""
    out = np.empty_like(features, dtype=np.float64)
    for p in np.unique(patient):
        rows = patient == p
        mean = features[rows].mean(axis=0)
        std = features[rows].std(axis=0)
        out[rows] = (features[rows] - mean) / np.where(std > 0, std, 1.0)
    return out


def leave_one_patient_out(
    windows: WindowSet,
    model: str | Any = "logreg",
    *,
    features: np.ndarray | None = None,
    normalize: str = "none",
    seed: int = 0,
    n_threads: int | None = 1,
    progress: bool = False,
) -> BaselineResult:
    """Predict every window with a model trained on all other patients.

    Parameters
    ----------
    windows : WindowSet
        At least two patients, both classes among the training patients of every fold.
    model : {"logreg", "gboost"} or scikit-learn estimator
        Classifier (cloned for every fold).
    features : np.ndarray, optional
        ``(n_windows, n_features)`` precomputed features; default `signal_features` of the windows.
    normalize : {"none", "patient"}
        ``"patient"`` z-scores the features within each patient before fitting (a common cross-patient trick;
        transductive, since it uses the test patient's unlabelled windows). Default none (strict).
    seed : int
        Random state of the gradient-boosting model.
    n_threads : int or None
        OpenMP/BLAS threads per fit (``None``: library default). One is the default because these fits are small
        and OpenMP start-up dominates them; on a busy machine more threads were 50x slower here.
    progress : bool
        Show a progress bar over folds.
    """
    from threadpoolctl import threadpool_limits

    if normalize not in ("none", "patient"):
        raise ValueError(f"normalize must be 'none' or 'patient', got {normalize!r}")
    if features is None:
        features = signal_features(windows.data, windows.sfreq)
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] != len(windows):
        raise ValueError(f"features have {features.shape[0]} rows for {len(windows)} windows")
    if normalize == "patient":
        features = normalize_per_patient(features, windows.patient)
    patients = windows.patients
    if len(patients) < 2:
        raise ValueError(f"leave-one-patient-out needs at least 2 patients, got {patients}")
    probability = np.full(len(windows), np.nan, dtype=np.float32)
    folds: list[LopoFold] = []
    label = model if isinstance(model, str) else type(model).__name__
    for held_out in progress_bar(patients, enabled=progress, desc=f"LOPO {label}", unit="patient"):
        test = np.flatnonzero(windows.patient == held_out)
        train = np.flatnonzero(windows.patient != held_out)
        y_train = windows.label[train]
        if np.unique(y_train).size < 2:
            raise ValueError(f"fold without patient {held_out!r}: the other patients' windows have a single class")
        classifier = make_model(model, seed=seed)
        with threadpool_limits(limits=n_threads):
            classifier.fit(features[train], y_train)
            positive = list(classifier.classes_).index(1)
            proba = classifier.predict_proba(features[test])[:, positive]
        if model == "gboost":
            proba = balance_prior(proba, float(y_train.mean()))
        probability[test] = proba
        folds.append(
            LopoFold(
                patient=held_out,
                train_patients=tuple(str(p) for p in dict.fromkeys(windows.patient[train].tolist())),
                train_index=train,
                test_index=test,
            )
        )
    name = model if isinstance(model, str) else type(model).__name__
    return BaselineResult(
        model=name,
        window_id=windows.window_id,
        patient=windows.patient.copy(),
        label=windows.label.copy(),
        probability=probability,
        prediction=(probability >= 0.5).astype(np.int8),
        folds=folds,
    )
