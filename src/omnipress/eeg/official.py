"""The official RAICL data format: ready-made windows in ``X.npy`` / ``y.npy`` plus per-subject counts.

The official code (VLM4EEG, ``plot_timechan.py``) starts from windows that are already cut: ``X`` of shape
``(n_windows, 18, n_samples)`` in the RAICL channel order, ``y`` of shape ``(n_windows,)`` with 1 = seizure, and a
list of how many consecutive windows belong to each subject (windows are stored subject after subject; a window's
row is its global trial id). :func:`import_arrays` turns such arrays into a :class:`~omnipress.eeg.windows.WindowSet`
so every later stage (``render``, ``index``, ``knn``, ``run``, ``score``) works on them unchanged.

- Subjects are named ``sub_00``, ``sub_01``, ... in count order, as the official image folders are; each subject
  is one recording.
- Window start times are not part of the format (the stride used to cut the windows is not published). Windows are
  placed every ``stride`` seconds, by default one window length apart, so the overlap guard of retrieval excludes
  only the query itself, as the official code does. Give the real stride when known.
- Rows keep their order, so the row of a window is its official trial id: query selection (every 10th trial, all
  CHSZ seizures) and the same-patient "past" windows match the official code.

:data:`COHORTS` holds the two published cohorts (CHSZ: 27 subjects at 250 Hz; NICU: 39 subjects at 256 Hz; 4-s
windows) with their per-subject window counts, so ``--dataset CHSZ`` needs no count list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnipress.eeg.montage import DOUBLE_BANANA
from omnipress.eeg.windows import WindowSet

#: Seconds per window in both published cohorts.
WINDOW_SECONDS = 4.0
_CHUNK = 4096  # windows checked per step (keeps memory flat on memory-mapped arrays)


@dataclass(frozen=True)
class OfficialCohort:
    """A cohort of the official release: name, sampling rate and windows per subject (in storage order)."""

    name: str
    sfreq: float
    subject_counts: tuple[int, ...]

    @property
    def n_windows(self) -> int:
        return sum(self.subject_counts)

    @property
    def n_samples(self) -> int:
        return round(WINDOW_SECONDS * self.sfreq)


COHORTS: dict[str, OfficialCohort] = {
    "CHSZ": OfficialCohort(
        "CHSZ",
        250.0,
        (191, 41, 121, 62, 62, 144, 26, 37, 66, 3599, 2738, 3599, 254, 2569, 185, 42, 97, 612, 1337, 1047, 105, 66,
         85, 97, 118, 328, 3599),
    ),  # 27 subjects, 21,227 windows
    "NICU": OfficialCohort(
        "NICU",
        256.0,
        (1747, 856, 960, 913, 887, 1871, 3853, 931, 1724, 1484, 1373, 2251, 996, 1426, 960, 1677, 882, 1622, 1269,
         1523, 1157, 1458, 2420, 839, 901, 2462, 1175, 979, 1462, 974, 2837, 1224, 992, 932, 988, 954, 1048, 1242,
         824),
    ),  # 39 subjects, 54,073 windows
}  # fmt: skip


def subject_names(n: int) -> list[str]:
    """``sub_00``, ``sub_01``, ... (the official image folder names)."""
    return [f"sub_{i:02d}" for i in range(n)]


def import_arrays(
    X: np.ndarray,
    y: np.ndarray,
    subject_counts: Sequence[int],
    *,
    sfreq: float,
    channels: Sequence[str] | None = None,
    stride: float | None = None,
    names: Sequence[str] | None = None,
) -> WindowSet:
    """Build a WindowSet from official-format arrays, checking that they agree.

    Parameters
    ----------
    X : np.ndarray
        ``(n_windows, n_channels, n_samples)`` windows in µV (a memory map is fine; float32 stays mapped).
    y : np.ndarray
        ``(n_windows,)`` labels, 0 = non-seizure, 1 = seizure.
    subject_counts : sequence of int
        Consecutive windows per subject, in storage order; must sum to ``n_windows``.
    sfreq : float
        Sampling rate in Hz.
    channels : sequence of str, optional
        Channel names; default the 18-channel double banana in RAICL order (new 10-20 names).
    stride : float, optional
        Seconds between window starts within a subject (module docstring); default the window length.
    names : sequence of str, optional
        Subject names (default :func:`subject_names`).

    Raises
    ------
    ValueError
        Naming what disagrees: shapes, label values, counts, channel names, non-finite samples.
    """
    if X.ndim != 3:
        raise ValueError(f"X must be (windows, channels, samples), got shape {tuple(X.shape)}")
    n, n_channels, n_samples = X.shape
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y has shape {tuple(y.shape)} but X holds {n} windows: expected ({n},)")
    values = np.unique(y)
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"y must hold 0 (non-seizure) and 1 (seizure) only; found {values[:10].tolist()}")
    counts = [int(c) for c in subject_counts]
    if not counts or min(counts) < 1 or any(c != float(s) for c, s in zip(counts, subject_counts)):
        raise ValueError(f"subject counts must be positive integers, got {list(subject_counts)[:10]}")
    if sum(counts) != n:
        raise ValueError(f"the {len(counts)} subject counts sum to {sum(counts)} but X holds {n} windows")
    if not sfreq > 0:
        raise ValueError(f"sampling rate must be positive, got {sfreq}")
    channels = list(DOUBLE_BANANA if channels is None else channels)
    if len(channels) != n_channels:
        raise ValueError(f"X has {n_channels} channels but {len(channels)} channel names were given")
    names = subject_names(len(counts)) if names is None else [str(s) for s in names]
    if len(names) != len(counts) or len(set(names)) != len(names):
        raise ValueError(f"need {len(counts)} distinct subject names, got {len(names)}")
    duration = n_samples / sfreq
    stride = duration if stride is None else float(stride)
    if not stride > 0:
        raise ValueError(f"stride must be positive, got {stride}")
    for s in range(0, n, _CHUNK):
        bad = ~np.isfinite(np.asarray(X[s : s + _CHUNK])).all(axis=(1, 2))  # (chunk,) windows with NaN/inf
        if bad.any():
            raise ValueError(f"X holds NaN or inf (first in window {s + int(np.flatnonzero(bad)[0])})")
    patient = np.repeat(np.array(names), counts)
    start = np.concatenate([np.arange(c) * stride for c in counts])
    label = y.astype(np.int8)
    return WindowSet(
        data=X,
        channels=channels,
        sfreq=sfreq,
        patient=patient,
        recording=patient.copy(),
        start=start,
        label=label,
        seizure_fraction=label.astype(np.float32),
    )


def read_counts(spec: str | Path) -> list[int]:
    """Subject counts from ``"191,41,121"`` (commas or spaces), or from a ``.npy``, ``.json`` or text file."""
    text = str(spec)
    path = Path(text)
    if path.is_file():
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False).ravel().tolist()
        elif path.suffix == ".json":
            values = json.loads(path.read_text())
        else:
            values = path.read_text().replace(",", " ").split()
    elif any(ch.isdigit() for ch in text) and not any(sep in text for sep in ("/", "\\")):
        values = text.replace(",", " ").split()
    else:
        raise FileNotFoundError(f"no counts file at {path}")
    try:
        counts = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"subject counts must be integers, got {str(values)[:80]}") from None
    return counts


def import_official(
    x_path: str | Path,
    y_path: str | Path,
    *,
    dataset: str | None = None,
    counts: Sequence[int] | None = None,
    sfreq: float | None = None,
    channels: Sequence[str] | None = None,
    stride: float | None = None,
) -> WindowSet:
    """Read ``X.npy`` (memory-mapped) and ``y.npy`` and import them with :func:`import_arrays`.

    ``dataset`` (``"CHSZ"`` or ``"NICU"``) supplies the sampling rate and counts of that cohort (explicit ``sfreq``
    or ``counts`` must agree with it) and checks the window length; otherwise both are required.
    """
    cohort, counts_from_cohort = None, False
    if dataset is not None:
        if dataset.upper() not in COHORTS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(COHORTS)}")
        cohort = COHORTS[dataset.upper()]
        if sfreq is not None and float(sfreq) != cohort.sfreq:
            raise ValueError(f"{cohort.name} is sampled at {cohort.sfreq:g} Hz, not {sfreq:g} Hz")
        sfreq = cohort.sfreq if sfreq is None else sfreq
        counts_from_cohort = counts is None
        counts = list(cohort.subject_counts) if counts is None else counts
    if sfreq is None or counts is None:
        raise ValueError("give the sampling rate and the subject counts (or a known dataset: CHSZ, NICU)")
    for path in (x_path, y_path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    try:
        X = np.load(x_path, mmap_mode="r", allow_pickle=False)
        y = np.load(y_path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"cannot read {x_path} / {y_path} as .npy arrays: {err}") from err
    if cohort is not None and X.ndim == 3 and X.shape[2] != cohort.n_samples:
        raise ValueError(
            f"{cohort.name} windows are {WINDOW_SECONDS:g} s at {cohort.sfreq:g} Hz ({cohort.n_samples} samples), "
            f"but X holds {X.shape[2]} samples per window; wrong dataset?"
        )
    if cohort is not None and counts_from_cohort and X.ndim == 3 and len(X) != cohort.n_windows:
        raise ValueError(
            f"{cohort.name} has {cohort.n_windows} windows in {len(cohort.subject_counts)} subjects, but X holds "
            f"{len(X)}; give the counts of your copy with --counts"
        )
    return import_arrays(X, y, counts, sfreq=float(sfreq), channels=channels, stride=stride)


__all__ = [
    "COHORTS",
    "WINDOW_SECONDS",
    "OfficialCohort",
    "import_arrays",
    "import_official",
    "read_counts",
    "subject_names",
]
