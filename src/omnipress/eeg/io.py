"""Reading EEG recordings (EDF, EDF+, BDF, BDF+) through MNE into a `Recording`.

MNE is imported only when a file is read, so ``omnipress.eeg`` stays light to import.
"""

from __future__ import annotations

import numbers
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

READERS = {".edf": "read_raw_edf", ".bdf": "read_raw_bdf"}


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
    """

    patient: str
    recording: str
    data: np.ndarray
    channels: list[str]
    sfreq: float
    seizures: list[Interval] = field(default_factory=list)
    source: str | None = None

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

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unsupported extension, unreadable/corrupt file, non-finite samples, or malformed annotations; the message
        names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EEG file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path.name}: unsupported EEG file type {path.suffix!r}; expected one of {sorted(READERS)}")
    name = recording_id(path)
    raw = _read_raw(path, reader)
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
    )


def _read_raw(path: Path, reader: str):
    try:
        import mne
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("reading EDF/BDF needs MNE: pip install 'omnipress[eeg]'") from err
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
