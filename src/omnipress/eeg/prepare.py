"""Cohort preparation: EEG files -> one `WindowSet` on disk.

Per recording: read (`read_recording`) -> 18-channel double banana (`bipolar_montage`) -> band-pass / notch /
resample (`preprocess`) -> windows (`make_windows`). A recording that fails (corrupt file, missing channel, bad
annotations, too short) is reported in ``PrepareResult.failures`` with its message and the run goes on.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omnipress.eeg.annotations import AnnotationSource, Interval, SeizureTable, load_annotations, recording_id
from omnipress.eeg.io import read_recording
from omnipress.eeg.montage import bipolar_montage
from omnipress.eeg.preprocess import preprocess
from omnipress.eeg.windows import WindowSet, make_windows

EEG_SUFFIXES = (".edf", ".bdf")


@dataclass
class PrepareResult:
    """What `prepare` produced.

    Attributes
    ----------
    windows : WindowSet
        All windows of the recordings that succeeded (also saved to ``out_dir``).
    failures : list of (file, message)
        Recordings that failed and why.
    recordings : list of str
        Files that were prepared.
    unannotated : list of str
        Recording ids absent from explicitly given annotations (treated as seizure-free).
    seconds : float
        Wall time of reading, filtering and windowing (saving excluded).
    """

    windows: WindowSet
    failures: list[tuple[str, str]] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    unannotated: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def windows_per_second(self) -> float:
        return len(self.windows) / self.seconds if self.seconds > 0 else float("nan")


def find_recordings(paths_or_dir: str | Path | Iterable[str | Path]) -> list[Path]:
    """EDF/BDF files given directly or found (recursively) under given directories, sorted, without duplicates."""
    items = [paths_or_dir] if isinstance(paths_or_dir, (str, Path)) else list(paths_or_dir)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EEG_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ValueError(f"no EDF/BDF files found in {items}")
    return unique


def prepare(
    paths_or_dir: str | Path | Iterable[str | Path],
    out_dir: str | Path | None,
    *,
    annotations: AnnotationSource | None = None,
    patients: Mapping[str, str] | None = None,
    window: float = 4.0,
    stride: float | None = None,
    rule: str = "any",
    min_fraction: float = 0.5,
    sfreq: float = 256.0,
    band: tuple[float | None, float | None] | None = (0.5, 40.0),
    notch: float | None = None,
    order: str = "raicl",
    dtype: str = "float32",
    progress: bool = True,
) -> PrepareResult:
    """Turn EEG files into labelled 18-channel windows and save them as a `WindowSet` directory.

    Parameters
    ----------
    paths_or_dir : path or paths
        EDF/BDF files and/or directories searched recursively.
    out_dir : path or None
        Where to save the `WindowSet` (plus ``failures.csv`` and ``prepare.json``); ``None`` saves nothing.
    annotations : optional
        Seizure source for every file: an annotation file (CHB-MIT summary, TUSZ csv_bi, Helsinki CSV, plain CSV),
        several files, or ``{recording id: [(onset, offset)]}``. ``None`` uses annotation files next to each recording
        or the annotations inside it (see `read_recording`).
    patients : mapping, optional
        ``{recording id: patient id}``; default: the recording id up to its first ``_``.
    window, stride, rule, min_fraction
        Windowing (see `make_windows`): 4-s windows, no overlap and the ``"any"`` rule by default.
    sfreq : float
        Target sampling rate (256 Hz as the paper's NICU set).
    band, notch
        Band-pass edges in Hz (default 0.5-40) and optional mains notch (50/60 Hz, default none).
    order : {"raicl", "clinical"}
        Channel order of the double banana.
    dtype : {"float32", "float16"}
        Storage type of the saved signal.
    progress : bool
        Show a tqdm progress bar over files.

    Raises
    ------
    ValueError
        When no recording could be prepared (the message lists every failure).
    """
    files = find_recordings(paths_or_dir)
    table: SeizureTable | None = None if annotations is None else load_annotations(annotations)
    if table is not None and not any(recording_id(f) in table for f in files):
        raise ValueError(
            f"the annotations name none of the {len(files)} recordings (e.g. {recording_id(files[0])!r}); "
            f"annotated: {sorted(table)[:5]}..."
        )
    sets: list[WindowSet] = []
    failures: list[tuple[str, str]] = []
    done: list[str] = []
    unannotated: list[str] = []
    seen: dict[str, Path] = {}
    began = time.perf_counter()
    for path in _progress(files, progress):
        name = recording_id(path)
        try:
            if name in seen:
                raise ValueError(f"duplicate recording id {name!r} (also {seen[name]}); rename one of the files")
            seen[name] = path
            seizures: Sequence[Interval] | None = None
            if table is not None:
                if name not in table:
                    unannotated.append(name)
                seizures = table.get(name, [])
            recording = read_recording(
                path, patient=(patients or {}).get(name), annotations=None if seizures is None else list(seizures)
            )
            recording = bipolar_montage(recording, order=order)
            recording = preprocess(recording, band=band, notch_freq=notch, sfreq=sfreq)
            windows = make_windows(recording, length=window, stride=stride, rule=rule, min_fraction=min_fraction)
            if len(windows) == 0:
                raise ValueError(f"{path.name}: recording of {recording.duration:g} s is shorter than one window")
        except Exception as err:  # one bad recording must not stop the cohort
            failures.append((str(path), _message(path, err)))
            continue
        sets.append(windows)
        done.append(str(path))
    seconds = time.perf_counter() - began
    if not sets:
        details = "; ".join(m for _, m in failures)
        raise ValueError(f"no recording could be prepared ({len(files)} tried): {details}")
    result = PrepareResult(WindowSet.concatenate(sets), failures, done, unannotated, seconds)
    if out_dir is not None:
        _save(Path(out_dir), result, dtype=dtype, params=dict(
            window=window, stride=stride, rule=rule, min_fraction=min_fraction, sfreq=sfreq,
            band=list(band) if band is not None else None, notch=notch, order=order,
        ))  # fmt: skip
    return result


def _message(path: Path, err: Exception) -> str:
    text = str(err) or type(err).__name__
    if path.name not in text:
        text = f"{path.name}: {text}"
    return f"{type(err).__name__}: {text}"


def _progress(files: list[Path], enabled: bool) -> Iterable[Path]:
    if not enabled:
        return files
    from tqdm.auto import tqdm

    return tqdm(files, desc="prepare", unit="file")


def _save(out: Path, result: PrepareResult, *, dtype: str, params: dict) -> None:
    result.windows.save(out, dtype=dtype)
    with (out / "failures.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "error"])
        writer.writerows(result.failures)
    summary = {
        "params": params,
        "recordings": result.recordings,
        "failures": [{"file": f, "error": m} for f, m in result.failures],
        "unannotated": result.unannotated,
        "n_windows": len(result.windows),
        "n_seizure_windows": int(result.windows.label.sum()),
        "patients": result.windows.patients,
        "seconds": result.seconds,
    }
    (out / "prepare.json").write_text(json.dumps(summary, indent=2))
