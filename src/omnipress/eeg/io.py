"""Reading EEG recordings (EDF, EDF+, BDF, BDF+) through MNE into a `Recording`.

MNE is imported only when a file is read, so ``omnipress.eeg`` stays light to import. A file that holds less signal
than its header declares (a copy cut short, a recording not closed properly) is refused with
`TruncatedRecordingError`, or read with a `TruncatedRecordingWarning` when ``allow_truncated=True``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnipress.eeg.annotations import (
    AnnotationSource,
    Interval,
    load_annotations,
    merge_intervals,
    recording_id,
    seizures_from_events,
    sidecar_annotations,
)
from omnipress.extras import require

READERS = {".edf": "read_raw_edf", ".bdf": "read_raw_bdf"}
_TOLERANCE_S = 1e-3  # signal shorter than declared by more than this: truncated (a whole data record is missing)


@dataclass(frozen=True)
class Truncation:
    """A recording whose file holds less signal than its header declares.

    Attributes
    ----------
    file : str
        Path of the file.
    declared_seconds : float
        Length the header declares (number of data records x record duration).
    read_seconds : float
        Length of the signal actually in the file.
    kept : bool
        Whether the shortened recording was used (``allow_truncated=True``).
    """

    file: str
    declared_seconds: float
    read_seconds: float
    kept: bool = False

    @property
    def lost_seconds(self) -> float:
        return self.declared_seconds - self.read_seconds

    def message(self) -> str:
        """One line for the user: the seconds declared and read, and what was done."""
        name, declared, read, lost = Path(self.file).name, self.declared_seconds, self.read_seconds, self.lost_seconds
        if self.kept:
            return (
                f"{name}: truncated file: kept {read:g} s of the {declared:g} s its header declares ({lost:g} s lost)"
            )
        return (
            f"{name}: truncated file: the header declares {declared:g} s of signal, the file holds {read:g} s "
            f"({lost:g} s missing); allow_truncated=True (--allow-truncated) keeps what is there"
        )


class TruncatedRecordingError(ValueError):
    """The file holds less signal than its header declares; ``truncation`` says how much."""

    def __init__(self, message: str, truncation: Truncation) -> None:
        super().__init__(message)
        self.truncation = truncation


class TruncatedRecordingWarning(UserWarning):
    """A truncated recording was read anyway (``allow_truncated=True``); the message gives the seconds lost."""


@dataclass
class Recording:
    """One continuous multichannel EEG recording.

    Attributes
    ----------
    patient : str
        Patient id (recordings of one patient are held out together).
    recording : str
        Recording id, by default the file stem (``"chb01_03"``).
    data : np.ndarray
        ``(n_channels, n_samples)`` float32, microvolts.
    channels : list of str
        One name per row of ``data``.
    sfreq : float
        Sampling rate in Hz.
    seizures : list of (onset, offset)
        Seizure intervals in seconds from the recording start, sorted and merged.
    source : str or None
        Path of the file it was read from, if any.
    declared_duration : float or None
        Length in seconds the file header declares (``None``: not read from a file, or not declared). Longer than
        `duration` only for a truncated file read with ``allow_truncated=True``.
    """

    patient: str
    recording: str
    data: np.ndarray
    channels: list[str]
    sfreq: float
    seizures: list[Interval] = field(default_factory=list)
    source: str | None = None
    declared_duration: float | None = None

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 2:
            raise ValueError(f"Recording.data must be (n_channels, n_samples), got shape {self.data.shape}")
        self.channels = [str(c) for c in self.channels]
        if len(self.channels) != self.data.shape[0]:
            raise ValueError(f"{len(self.channels)} channel names for {self.data.shape[0]} rows of data")
        if not self.sfreq > 0:
            raise ValueError(f"sampling rate must be positive, got {self.sfreq}")
        self.sfreq = float(self.sfreq)
        self.seizures = merge_intervals(self.seizures)

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sfreq

    @property
    def truncation(self) -> Truncation | None:
        """How much shorter than its header declares the file was (``None``: whole, or length not declared)."""
        if self.declared_duration is None or self.duration >= self.declared_duration - _TOLERANCE_S:
            return None
        return Truncation(self.source or self.recording, self.declared_duration, self.duration, kept=True)


def infer_patient(recording: str) -> str:
    """Patient id from a recording id: the part before the first ``_`` (``chb01_03`` -> ``chb01``,
    ``aaaaaajy_s001_t000`` -> ``aaaaaajy``, ``p03_r01`` -> ``p03``), else the whole id (``eeg12``)."""
    head = recording.split("_", 1)[0]
    return head or recording


def read_recording(
    path: str | Path,
    *,
    patient: str | None = None,
    annotations: AnnotationSource | Sequence[Interval] | None = None,
    allow_truncated: bool = False,
) -> Recording:
    """Read an EDF/EDF+/BDF/BDF+ file into a `Recording` (all channels, microvolts, native sampling rate).

    Parameters
    ----------
    path : str or Path
        ``.edf`` or ``.bdf`` file.
    patient : str, optional
        Patient id; default `infer_patient` of the file stem.
    annotations : optional
        Where the seizures come from:

        - ``None``: annotation files next to the recording (TUSZ ``<stem>.csv_bi``, CHB-MIT ``*-summary.txt``,
          see `sidecar_annotations`), else the seizure events inside the file (EDF+/BDF+ annotations);
        - a list of ``(onset, offset)`` seconds: used as is;
        - a path (or list of paths) to an annotation file, or a mapping ``{file or recording id: intervals}``: the
          entry of this recording; a recording without an entry has no seizure.
    allow_truncated : bool
        Read a file that holds less signal than its header declares, with a `TruncatedRecordingWarning` giving the
        seconds lost, instead of raising `TruncatedRecordingError`.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    TruncatedRecordingError
        The file is shorter than its header declares (and ``allow_truncated`` is false).
    ValueError
        Unsupported extension, unreadable/corrupt file, non-finite samples, or malformed annotations; the message
        names the file.
    MissingExtraError
        MNE is not installed (the message names the ``eeg`` extra).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EEG file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path.name}: unsupported EEG file type {path.suffix!r}; expected one of {sorted(READERS)}")
    name = recording_id(path)
    raw = _read_raw(path, reader)
    declared = declared_seconds(path)
    read = float(raw.n_times / raw.info["sfreq"])
    if declared is not None and read < declared - _TOLERANCE_S:
        truncation = Truncation(str(path), declared, read, kept=allow_truncated)
        if not allow_truncated:
            raise TruncatedRecordingError(truncation.message(), truncation)
        warnings.warn(truncation.message(), TruncatedRecordingWarning, stacklevel=2)
    data = raw.get_data()  # (n_channels, n_samples) volts
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path.name}: the signal contains NaN or infinite samples")
    intervals = _resolve_seizures(path, name, annotations, raw)
    return Recording(
        patient=patient if patient is not None else infer_patient(name),
        recording=name,
        data=(data * 1e6).astype(np.float32),
        channels=list(raw.ch_names),
        sfreq=float(raw.info["sfreq"]),
        seizures=intervals,
        source=str(path),
        declared_duration=declared,
    )


def declared_seconds(path: str | Path) -> float | None:
    """Signal length in seconds an EDF/BDF header declares (data records x record duration).

    ``None`` when the header does not say (record count ``-1``, a recording never closed) or cannot be parsed (the
    reader then reports the damage).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(256)
        records = int(head[236:244].decode("ascii").strip())
        record_seconds = float(head[244:252].decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if records < 0 or not record_seconds > 0:
        return None
    return records * record_seconds


def _read_raw(path: Path, reader: str):
    mne = require("mne", extra="eeg", purpose="reading EDF/BDF files")
    try:
        return getattr(mne.io, reader)(path, preload=True, verbose="error")
    except Exception as err:  # MNE raises ValueError, OSError, struct/Unicode errors... on damaged files
        kind = path.suffix.lower().lstrip(".").upper()
        raise ValueError(f"{path.name}: not a readable {kind} file ({type(err).__name__}: {err})") from err


def _resolve_seizures(path: Path, name: str, annotations, raw) -> list[Interval]:
    try:
        if annotations is None:
            sidecar = sidecar_annotations(path)
            if sidecar is not None:
                return sidecar
            a = raw.annotations
            return seizures_from_events(a.onset - raw.first_time, a.duration, list(a.description))
        if _is_interval_list(annotations):
            return merge_intervals(annotations)
        table = load_annotations(annotations)
        return table.get(name, [])
    except (ValueError, OSError) as err:
        raise ValueError(f"{path.name}: bad seizure annotations: {err}") from err


def _is_interval_list(value: object) -> bool:
    if isinstance(value, (str, Path, Mapping)) or not isinstance(value, Sequence):
        return False
    return all(
        isinstance(item, Sequence) and not isinstance(item, str) and all(isinstance(t, numbers.Real) for t in item)
        for item in value
    )
