"""Cohort preparation: EEG files -> one `WindowSet` on disk.

Per recording: read (`read_recording`) -> 18-channel double banana (`bipolar_montage`) -> band-pass / notch /
resample (`preprocess`) -> windows (`make_windows`). A recording that fails (corrupt or truncated file, missing
channel, bad annotations, too short) is reported in ``PrepareResult.failures`` with its message and the run goes on.

Preparing into the same folder again reuses the windows of every recording whose file (and annotation files beside
it) did not change since, when the settings are the same; ``overwrite=True`` prepares everything again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnipress.eeg.annotations import AnnotationSource, Interval, SeizureTable, load_annotations, recording_id
from omnipress.eeg.io import TruncatedRecordingError, TruncatedRecordingWarning, Truncation, read_recording
from omnipress.eeg.montage import bipolar_montage
from omnipress.eeg.preprocess import preprocess
from omnipress.eeg.progress import progress_bar
from omnipress.eeg.windows import WindowSet, make_windows
from omnipress.extras import MissingExtraError

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
    truncated : list of Truncation
        Files shorter than their header declares: failures, or kept (``Truncation.kept``) with ``allow_truncated``.
    reused : list of str
        Files whose outcome (windows or failure) was taken from an earlier `prepare` into the same folder.
    """

    windows: WindowSet
    failures: list[tuple[str, str]] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    unannotated: list[str] = field(default_factory=list)
    seconds: float = 0.0
    truncated: list[Truncation] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

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
    allow_truncated: bool = False,
    overwrite: bool = False,
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
    allow_truncated : bool
        Keep a file that holds less signal than its header declares (a `TruncatedRecordingWarning` gives the seconds
        lost) instead of recording it as a failure.
    overwrite : bool
        Prepare every file again instead of reusing the outcome of an earlier call into ``out_dir``.
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
    params = dict(
        window=window, stride=stride, rule=rule, min_fraction=min_fraction, sfreq=sfreq,
        band=list(band) if band is not None else None, notch=notch, order=order,
    )  # fmt: skip
    settings = {
        **params,
        "dtype": dtype,
        "annotations": None if table is None else _digest(sorted((k, [list(i) for i in v]) for k, v in table.items())),
        "patients": None if patients is None else _digest(sorted(patients.items())),
    }
    out = None if out_dir is None else Path(out_dir)
    earlier, earlier_windows = ({}, None) if out is None or overwrite else _earlier_outcomes(out, settings)
    pieces: list[WindowSet | str] = []  # new windows, or the recording id of windows reused from `earlier_windows`
    failures: list[tuple[str, str]] = []
    truncated: list[Truncation] = []
    done: list[str] = []
    reused: list[str] = []
    unannotated: list[str] = []
    sources: dict[str, dict[str, Any]] = {}
    seen: dict[str, Path] = {}
    began = time.perf_counter()
    for path in _progress(files, progress):
        name = recording_id(path)
        source: dict[str, Any] = {"recording": name, "stamp": _stamp(path)}
        sources[str(path)] = source
        if table is not None and name not in table:
            unannotated.append(name)
        before = earlier.get(str(path))
        if name not in seen and before is not None and _reusable(before, source, allow_truncated, earlier_windows):
            seen[name] = path
            source.update(before)
            reused.append(str(path))
            if before.get("truncation") is not None:
                truncated.append(Truncation(**before["truncation"]))
                if truncated[-1].kept:
                    warnings.warn(truncated[-1].message(), TruncatedRecordingWarning, stacklevel=2)
            if before["status"] == "failed":
                failures.append((str(path), before["error"]))
            else:
                pieces.append(name)
                done.append(str(path))
            continue
        try:
            if name in seen:
                raise ValueError(f"duplicate recording id {name!r} (also {seen[name]}); rename one of the files")
            seen[name] = path
            seizures: Sequence[Interval] | None = None if table is None else table.get(name, [])
            recording = read_recording(
                path,
                patient=(patients or {}).get(name),
                annotations=None if seizures is None else list(seizures),
                allow_truncated=allow_truncated,
            )
            if recording.truncation is not None:  # kept, with a warning (allow_truncated)
                truncated.append(recording.truncation)
                source["truncation"] = asdict(recording.truncation)
            recording = bipolar_montage(recording, order=order)
            recording = preprocess(recording, band=band, notch_freq=notch, sfreq=sfreq)
            windows = make_windows(recording, length=window, stride=stride, rule=rule, min_fraction=min_fraction)
            if len(windows) == 0:
                raise ValueError(f"{path.name}: recording of {recording.duration:g} s is shorter than one window")
        except MissingExtraError:
            raise  # not this file's fault: no file can be read
        except Exception as err:  # one bad recording must not stop the cohort
            failures.append((str(path), _message(path, err)))
            source.update(status="failed", error=failures[-1][1])
            if isinstance(err, TruncatedRecordingError):
                truncated.append(err.truncation)
                source["truncation"] = asdict(err.truncation)
            continue
        source["status"] = "ok"
        pieces.append(windows)
        done.append(str(path))
    seconds = time.perf_counter() - began
    if not pieces:
        details = "; ".join(m for _, m in failures)
        raise ValueError(f"no recording could be prepared ({len(files)} tried): {details}")
    up_to_date = len(reused) == len(files) and list(earlier) == list(sources)
    if up_to_date:  # the saved set is exactly the result
        windows_set = earlier_windows
    else:
        windows_set = WindowSet.concatenate(
            [p if isinstance(p, WindowSet) else earlier_windows.subset(earlier_windows.recording == p) for p in pieces]
        )
        del earlier_windows  # a memory map of the file about to be rewritten (every reused window was copied)
    result = PrepareResult(windows_set, failures, done, unannotated, seconds, truncated=truncated, reused=reused)
    if out is not None and not up_to_date:
        _save(out, result, dtype=dtype, params=params, settings=settings, sources=sources)
    return result


def _stamp(path: Path) -> list:
    """Size and modification time of a recording and of the annotation files `sidecar_annotations` may read."""
    related = [path, path.with_name(recording_id(path) + ".csv_bi"), path.with_name(recording_id(path) + ".tse_bi")]
    related += sorted(path.parent.glob("*-summary.txt"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in related if p.is_file()]


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def _earlier_outcomes(out: Path, settings: dict) -> tuple[dict[str, dict], WindowSet | None]:
    """Per-file outcomes of an earlier `prepare` into ``out`` with the same settings, and its windows."""
    try:
        summary = json.loads((out / "prepare.json").read_text())
        if summary.get("settings") != settings or not isinstance(summary.get("sources"), dict):
            return {}, None
        return summary["sources"], WindowSet.load(out)
    except (OSError, ValueError, AttributeError):  # absent, older or damaged: prepare everything
        return {}, None


def _reusable(before: dict, now: dict, allow_truncated: bool, windows: WindowSet | None) -> bool:
    """Whether the earlier outcome ``before`` of a file still holds for it (``now``: its current stamp)."""
    if before.get("stamp") != now["stamp"] or before.get("recording") != now["recording"]:
        return False
    if before.get("truncation") is not None and before["truncation"]["kept"] != allow_truncated:
        return False  # the outcome depends on allow_truncated, which changed
    if before.get("status") == "failed":
        return "error" in before
    return before.get("status") == "ok" and windows is not None and bool(np.any(windows.recording == now["recording"]))


def _message(path: Path, err: Exception) -> str:
    text = str(err) or type(err).__name__
    if path.name not in text:
        text = f"{path.name}: {text}"
    return f"{type(err).__name__}: {text}"


def _progress(files: list[Path], enabled: bool) -> Iterable[Path]:
    return progress_bar(files, enabled=enabled, desc="prepare", unit="file")


def _save(out: Path, result: PrepareResult, *, dtype: str, params: dict, settings: dict, sources: dict) -> None:
    (out / "prepare.json").unlink(missing_ok=True)  # written last: it vouches for the windows beside it
    result.windows.save(out, dtype=dtype)
    truncated = {t.file: t for t in result.truncated}
    with (out / "failures.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "error", "declared_s", "read_s"])
        for file, message in result.failures:
            t = truncated.get(file)
            writer.writerow([file, message, *((t.declared_seconds, t.read_seconds) if t else ("", ""))])
    summary = {
        "params": params,
        "recordings": result.recordings,
        "failures": [{"file": f, "error": m} for f, m in result.failures],
        "truncated": [asdict(t) for t in result.truncated],
        "unannotated": result.unannotated,
        "n_windows": len(result.windows),
        "n_seizure_windows": int(result.windows.label.sum()),
        "patients": result.windows.patients,
        "seconds": result.seconds,
        "settings": settings,
        "sources": sources,
    }
    (out / "prepare.json").write_text(json.dumps(summary, indent=2))
