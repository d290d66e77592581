"""Fixed-length EEG windows with seizure labels: `WindowSet` and `make_windows`.

RAICL (arXiv 2601.17844) classifies 4-second windows of the 18-channel double banana. The released code does not say how
windows that straddle a seizure onset or offset are labelled, so the rule is a parameter:

- ``"any"`` (default): seizure if any part of the window lies inside a seizure;
- ``"majority"``: seizure if at least half of the window does (ties count as seizure);
- ``"center"``: seizure if the window centre lies inside a seizure (intervals are half-open ``[onset, offset)``);
- ``"fraction"``: seizure if the fraction inside a seizure is at least ``min_fraction``.

The stride defaults to the window length (non-overlapping windows, the spec's reference setting).
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from omnipress.eeg.io import Recording

RULES = ("any", "majority", "center", "fraction")
META_COLUMNS = ("window_id", "patient", "recording", "start", "label", "seizure_fraction")
_DATA_FILE = "windows.npz"
_META_FILE = "windows.csv"


@dataclass
class WindowSet:
    """A stack of equal-length windows from one or more recordings, with per-window metadata.

    Attributes
    ----------
    data : np.ndarray
        ``(n_windows, n_channels, n_samples)`` float32 microvolts, channels in montage order (may be a read-only
        memory map after `load`).
    channels : list of str
        Channel names (``"Fp2-F4"``, ...).
    sfreq : float
        Sampling rate in Hz.
    patient, recording : np.ndarray
        ``(n_windows,)`` str ids.
    start : np.ndarray
        ``(n_windows,)`` float64 seconds from the recording start.
    label : np.ndarray
        ``(n_windows,)`` int8, 1 = seizure window under the labelling rule used.
    seizure_fraction : np.ndarray
        ``(n_windows,)`` float32 fraction of the window inside a seizure.
    """

    data: np.ndarray
    channels: list[str]
    sfreq: float
    patient: np.ndarray
    recording: np.ndarray
    start: np.ndarray
    label: np.ndarray
    seizure_fraction: np.ndarray

    def __post_init__(self) -> None:
        if self.data.dtype != np.float32:
            self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 3:
            raise ValueError(f"WindowSet.data must be (n_windows, n_channels, n_samples), got {self.data.shape}")
        self.channels = [str(c) for c in self.channels]
        if len(self.channels) != self.data.shape[1]:
            raise ValueError(f"{len(self.channels)} channel names for {self.data.shape[1]} channels of data")
        if not self.sfreq > 0:
            raise ValueError(f"sampling rate must be positive, got {self.sfreq}")
        self.sfreq = float(self.sfreq)
        n = self.data.shape[0]
        self.patient = np.asarray(self.patient, dtype=str)
        self.recording = np.asarray(self.recording, dtype=str)
        self.start = np.asarray(self.start, dtype=np.float64)
        self.label = np.asarray(self.label, dtype=np.int8)
        self.seizure_fraction = np.asarray(self.seizure_fraction, dtype=np.float32)
        for name in ("patient", "recording", "start", "label", "seizure_fraction"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise ValueError(f"WindowSet.{name} must have shape ({n},), got {value.shape}")
        if n and not np.isin(self.label, (0, 1)).all():
            raise ValueError("WindowSet.label must be 0 or 1")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        return (
            f"WindowSet({len(self)} windows x {len(self.channels)} channels x {self.duration:g} s @ {self.sfreq:g} Hz, "
            f"{int(self.label.sum())} seizure, {len(np.unique(self.patient))} patients)"
        )

    @property
    def duration(self) -> float:
        """Window length in seconds."""
        return self.data.shape[2] / self.sfreq

    @property
    def window_id(self) -> np.ndarray:
        """``(n,)`` str unique ids ``"recording:start"`` (start in seconds, shortest exact decimal)."""
        return np.array(
            [f"{r}:{np.format_float_positional(s, trim='-')}" for r, s in zip(self.recording, self.start)], dtype=str
        )

    @property
    def patients(self) -> list[str]:
        """Distinct patient ids in order of first appearance."""
        _, first = np.unique(self.patient, return_index=True)
        return [str(self.patient[i]) for i in sorted(first)]

    def subset(self, idx: np.ndarray | Sequence[int] | Sequence[bool]) -> WindowSet:
        """The windows selected by a boolean mask or an index array (data copied into memory)."""
        idx = np.asarray(idx)
        if idx.dtype == bool and idx.shape != (len(self),):
            raise ValueError(f"boolean mask must have shape ({len(self)},), got {idx.shape}")
        if idx.dtype != bool and idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"subset takes a boolean mask or integer indices, got dtype {idx.dtype}")
        return WindowSet(
            data=np.asarray(self.data[idx]),
            channels=list(self.channels),
            sfreq=self.sfreq,
            patient=self.patient[idx],
            recording=self.recording[idx],
            start=self.start[idx],
            label=self.label[idx],
            seizure_fraction=self.seizure_fraction[idx],
        )

    @classmethod
    def concatenate(cls, sets: Sequence[WindowSet]) -> WindowSet:
        """Stack window sets that share channels, rate and window length."""
        if not sets:
            raise ValueError("concatenate needs at least one WindowSet")
        first = sets[0]
        for other in sets[1:]:
            if (
                other.channels != first.channels
                or other.sfreq != first.sfreq
                or other.data.shape[2:] != (first.data.shape[2:])
            ):
                raise ValueError(
                    "cannot concatenate window sets with different channels, sampling rate or window length: "
                    f"{first!r} vs {other!r}"
                )
        return cls(
            data=np.concatenate([s.data for s in sets]),
            channels=list(first.channels),
            sfreq=first.sfreq,
            patient=np.concatenate([s.patient for s in sets]),
            recording=np.concatenate([s.recording for s in sets]),
            start=np.concatenate([s.start for s in sets]),
            label=np.concatenate([s.label for s in sets]),
            seizure_fraction=np.concatenate([s.seizure_fraction for s in sets]),
        )

    def save(self, path: str | Path, *, dtype: str = "float32") -> None:
        """Write the set to directory ``path``: ``windows.npz`` (uncompressed, so `load` can memory-map the signal)
        holding ``data``, ``channels``, ``sfreq``, and ``windows.csv`` with one row of metadata per window.

        ``dtype="float16"`` halves the file (about 3 significant digits, enough for plotting and features).
        """
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(
            path / _DATA_FILE,
            data=np.asarray(self.data, dtype=dtype),
            channels=np.array(self.channels, dtype=str),
            sfreq=np.array(self.sfreq),
        )
        with (path / _META_FILE).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(META_COLUMNS)
            for row in zip(self.window_id, self.patient, self.recording, self.start, self.label, self.seizure_fraction):
                wid, patient, recording, start, label, fraction = row
                writer.writerow([wid, patient, recording, repr(float(start)), int(label), repr(float(fraction))])

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = True) -> WindowSet:
        """Read a set written by `save`. float32 data are memory-mapped (read-only) when ``mmap``; float16 data are
        converted to float32 in memory.

        Raises FileNotFoundError when the directory or one of its files is missing and ValueError when they are
        corrupt or disagree.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no WindowSet directory at {path}")
        for name in (_DATA_FILE, _META_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path} is not a WindowSet directory: {name} is missing")
        try:
            with np.load(path / _DATA_FILE, allow_pickle=False) as npz:
                channels = [str(c) for c in npz["channels"]]
                sfreq = float(npz["sfreq"])
                data = None if mmap else npz["data"]
            if data is None:
                data = _mmap_npz_member(path / _DATA_FILE, "data.npy")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path / _DATA_FILE} is corrupt or not written by WindowSet.save: {err}") from err
        if data.dtype != np.float32:
            data = np.asarray(data, dtype=np.float32)
        meta = _read_meta(path / _META_FILE)
        if len(meta["start"]) != data.shape[0]:
            raise ValueError(
                f"{path}: {_META_FILE} has {len(meta['start'])} rows but {_DATA_FILE} has {data.shape[0]} windows"
            )
        return cls(data=data, channels=channels, sfreq=sfreq, **meta)


def _read_meta(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != META_COLUMNS:
            raise ValueError(f"{path}: expected header {list(META_COLUMNS)}, got {header}")
        rows = list(reader)
    try:
        return {
            "patient": np.array([r[1] for r in rows], dtype=str),
            "recording": np.array([r[2] for r in rows], dtype=str),
            "start": np.array([float(r[3]) for r in rows], dtype=np.float64),
            "label": np.array([int(r[4]) for r in rows], dtype=np.int8),
            "seizure_fraction": np.array([float(r[5]) for r in rows], dtype=np.float32),
        }
    except (IndexError, ValueError) as err:
        raise ValueError(f"{path}: malformed metadata row ({err})") from err


def _mmap_npz_member(path: Path, member: str) -> np.ndarray:
    """Memory-map one array stored uncompressed inside an ``.npz`` (zip) archive."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{member} is compressed inside {path}; cannot memory-map it")
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip local header for {member}")
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{member} holds Python objects")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


# ---------------------------------------------------------------------------------------------------------------------


def seizure_overlap(starts: np.ndarray, length: float, seizures: Sequence[tuple[float, float]]) -> np.ndarray:
    """Fraction of each window ``[start, start + length)`` covered by (merged) seizure intervals; ``(n,)`` float64."""
    starts = np.asarray(starts, dtype=np.float64)
    if not seizures:
        return np.zeros_like(starts)
    onset = np.array([s[0] for s in seizures])[None, :]  # (1, n_seizures)
    offset = np.array([s[1] for s in seizures])[None, :]
    lo = np.maximum(starts[:, None], onset)  # (n, n_seizures)
    hi = np.minimum(starts[:, None] + length, offset)
    return np.clip(hi - lo, 0.0, None).sum(axis=1) / length


def label_windows(
    starts: np.ndarray,
    length: float,
    seizures: Sequence[tuple[float, float]],
    *,
    rule: str = "any",
    min_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (int8) and seizure fractions (float32) of windows starting at ``starts`` under ``rule`` (see module)."""
    if rule not in RULES:
        raise ValueError(f"unknown labelling rule {rule!r}; expected one of {RULES}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    fraction = seizure_overlap(starts, length, seizures)
    if rule == "any":
        label = fraction > 0
    elif rule == "majority":
        label = fraction >= 0.5
    elif rule == "fraction":
        label = fraction >= min_fraction
    else:
        centre = np.asarray(starts, dtype=np.float64)[:, None] + length / 2
        label = np.zeros(len(fraction), dtype=bool)
        for onset, offset in seizures:
            label |= (centre[:, 0] >= onset) & (centre[:, 0] < offset)
    return label.astype(np.int8), fraction.astype(np.float32)


def make_windows(
    recording: Recording,
    *,
    length: float = 4.0,
    stride: float | None = None,
    rule: str = "any",
    min_fraction: float = 0.5,
) -> WindowSet:
    """Cut a (montaged, preprocessed) recording into windows of ``length`` seconds every ``stride`` seconds.

    Parameters
    ----------
    recording : Recording
        Continuous data ``(n_channels, n_samples)``; its seizures give the labels.
    length : float
        Window length in seconds (RAICL: 4 s).
    stride : float, optional
        Step between window starts in seconds; default ``length`` (no overlap).
    rule, min_fraction
        Labelling rule, see the module docstring.

    Returns
    -------
    WindowSet
        Only whole windows (a tail shorter than ``length`` is dropped); empty if the recording is too short.
    """
    stride = length if stride is None else stride
    if not length > 0 or not stride > 0:
        raise ValueError(f"window length and stride must be positive, got length={length}, stride={stride}")
    n_len = round(length * recording.sfreq)
    n_stride = round(stride * recording.sfreq)
    if n_len < 2 or n_stride < 1:
        raise ValueError(f"window of {length} s / stride {stride} s is too short at {recording.sfreq:g} Hz")
    if rule not in RULES:
        raise ValueError(f"unknown labelling rule {rule!r}; expected one of {RULES}")
    n_windows = max(0, (recording.n_samples - n_len) // n_stride + 1)
    first = np.arange(n_windows) * n_stride  # (n_windows,) sample index of each window start
    if n_windows:
        # (n_channels, n_samples) -> (n_windows, n_channels, n_len): a strided view, then one copy
        view = np.lib.stride_tricks.sliding_window_view(recording.data, n_len, axis=1)  # (C, n_samples-n_len+1, n_len)
        data = np.ascontiguousarray(view[:, first].transpose(1, 0, 2), dtype=np.float32)
    else:
        data = np.zeros((0, len(recording.channels), n_len), dtype=np.float32)
    starts = first / recording.sfreq
    label, fraction = label_windows(
        starts, n_len / recording.sfreq, recording.seizures, rule=rule, min_fraction=min_fraction
    )
    return WindowSet(
        data=data,
        channels=list(recording.channels),
        sfreq=recording.sfreq,
        patient=np.full(n_windows, recording.patient),
        recording=np.full(n_windows, recording.recording),
        start=starts,
        label=label,
        seizure_fraction=fraction,
    )
