"""Seizure annotations: every format is read into a `SeizureTable`, ``{recording id: [(onset, offset), ...]}``.

Formats
-------
- EDF+/BDF+ annotations inside the recording (`seizures_from_events`): events whose description names a seizure
  (``"Seizure"``, ``"sz"``, TUSZ type codes such as ``"fnsz"``; ``"post-ictal"``/``"interictal"`` are not seizures).
  Zero-duration start/end markers are paired.
- CHB-MIT ``chbNN-summary.txt`` (`read_chbmit_summary`): ``File Name:`` blocks with ``Seizure [n] Start/End Time``.
- TUSZ ``.csv_bi`` / ``.csv`` (`read_tusz_csv`): ``channel,start_time,stop_time,label,confidence`` rows; any
  seizure label on any channel counts (union over channels). The older ``.tse``/``.tse_bi`` layout is read too.
- Helsinki neonatal per-second CSVs (`read_helsinki_csv`): one column per neonate (header ``1,2,...``), one row per
  second, 1 = seizure; several annotators are combined by consensus. Column ``k`` maps to recording ``eeg{k}``.
- Plain CSV of ``file,onset,offset`` (`read_plain_csv`), header optional, seconds; ``duration`` may replace
  ``offset``. Files without a row have no seizure.

A recording id is the file name without directories and extension (``"chb01_03"`` for ``.../chb01_03.edf``).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

Interval = tuple[float, float]
SeizureTable = dict[str, list[Interval]]
AnnotationSource = str | Path | Sequence[str | Path] | Mapping[str, Sequence[Interval]]

FORMATS = ("chbmit", "tusz", "tse", "helsinki", "plain")
TUSZ_SEIZURE_LABELS = frozenset(
    {"seiz", "fnsz", "gnsz", "spsz", "cpsz", "absz", "tnsz", "cnsz", "tcsz", "atsz", "mysz", "nesz"}
)
_RECORDING_SUFFIXES = (".edf", ".bdf", ".rec", ".csv_bi", ".csv", ".tse_bi", ".tse", ".txt")
_NOT_SEIZURE = re.compile(r"(pre|post|inter)[-_ ]?ictal|non[-_ ]?seiz|\bno[-_ ]seiz|seizure[-_ ]?free|\bbckg\b")
_SEIZURE = re.compile(r"seiz|\bsz\b|\bsz_|\bictal\b|\b(fn|gn|sp|cp|ab|tn|cn|tc|at|my|ne)sz\b")
_START = re.compile(r"start|onset|begin")
_END = re.compile(r"\bend|offset|stop")


def recording_id(name: str | Path) -> str:
    """File name without directories and EEG/annotation extension: ``"a/chb01_03.edf"`` -> ``"chb01_03"``."""
    base = Path(str(name).strip()).name
    lower = base.lower()
    for suffix in _RECORDING_SUFFIXES:
        if lower.endswith(suffix):
            return base[: -len(suffix)]
    return base


def merge_intervals(intervals: Iterable[Sequence[float]]) -> list[Interval]:
    """Sorted, overlap-merged ``(onset, offset)`` intervals; rejects offset <= onset, negative or non-finite times."""
    cleaned: list[Interval] = []
    for item in intervals:
        if len(item) != 2:
            raise ValueError(f"a seizure interval is (onset, offset) in seconds, got {item!r}")
        onset, offset = float(item[0]), float(item[1])
        if not (math.isfinite(onset) and math.isfinite(offset)):
            raise ValueError(f"seizure interval ({onset}, {offset}) has a non-finite time")
        if onset < 0 or offset <= onset:
            raise ValueError(f"seizure interval ({onset}, {offset}) needs 0 <= onset < offset (seconds)")
        cleaned.append((onset, offset))
    cleaned.sort()
    merged: list[Interval] = []
    for onset, offset in cleaned:
        if merged and onset <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], offset))
        else:
            merged.append((onset, offset))
    return merged


def is_seizure_description(text: str) -> bool:
    """Whether an event description names a seizure (``"Seizure"``, ``"SZ"``, ``"fnsz"``, not ``"post-ictal"``)."""
    text = text.strip().lower()
    return not _NOT_SEIZURE.search(text) and bool(_SEIZURE.search(text))


def seizures_from_events(
    onsets: Sequence[float], durations: Sequence[float], descriptions: Sequence[str]
) -> list[Interval]:
    """Seizure intervals from EDF+-style events (onset s, duration s, text); other events are ignored.

    Events with a duration give an interval directly. Zero-duration seizure markers are paired in time order: a
    marker whose text says end/offset/stop closes the open seizure, any other seizure marker opens one.
    """
    if not len(onsets) == len(durations) == len(descriptions):
        raise ValueError("onsets, durations and descriptions must have the same length")
    intervals: list[Interval] = []
    open_onset: float | None = None
    for onset, duration, text in sorted(zip(map(float, onsets), map(float, durations), descriptions)):
        if not is_seizure_description(text):
            continue
        if duration > 0:
            intervals.append((onset, onset + duration))
            continue
        lower = text.lower()
        if _END.search(lower) and not _START.search(lower):
            if open_onset is None:
                raise ValueError(f"seizure end marker {text!r} at {onset:g} s has no matching start marker")
            intervals.append((open_onset, onset))
            open_onset = None
        else:
            if open_onset is not None:
                raise ValueError(
                    f"seizure marker {text!r} at {onset:g} s while the seizure at {open_onset:g} s is open"
                )
            open_onset = onset
    if open_onset is not None:
        raise ValueError(f"seizure marker at {open_onset:g} s has no duration and no matching end marker")
    return merge_intervals(intervals)


# ---------------------------------------------------------------------------------------------------------------------
# File formats


def read_chbmit_summary(path: str | Path) -> SeizureTable:
    """Seizures of every file listed in a CHB-MIT ``chbNN-summary.txt`` (files without seizures map to ``[]``)."""
    path = Path(path)
    table: SeizureTable = {}
    current: str | None = None
    expected: dict[str, int] = {}
    starts: list[float] = []
    for number, raw_line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw_line.strip()
        if m := re.match(r"File Name:\s*(\S+)", line, re.I):
            _check_closed(path, current, starts)
            current = recording_id(m.group(1))
            table[current] = []
            starts = []
        elif m := re.match(r"Number of Seizures in File:\s*(\d+)", line, re.I):
            if current is not None:
                expected[current] = int(m.group(1))
        elif m := re.match(r"Seizure(?:\s+\d+)?\s+Start Time:\s*([\d.]+)", line, re.I):
            if current is None:
                raise ValueError(f"{path}:{number}: seizure start before any 'File Name:' line")
            starts.append(float(m.group(1)))
        elif m := re.match(r"Seizure(?:\s+\d+)?\s+End Time:\s*([\d.]+)", line, re.I):
            if current is None or not starts:
                raise ValueError(f"{path}:{number}: seizure end without a start")
            table[current].append((starts.pop(0), float(m.group(1))))
    _check_closed(path, current, starts)
    if not table:
        raise ValueError(f"{path}: no 'File Name:' entries; not a CHB-MIT summary file")
    for name, count in expected.items():
        if len(table[name]) != count:
            raise ValueError(f"{path}: {name} announces {count} seizures but lists {len(table[name])}")
    return {name: merge_intervals(intervals) for name, intervals in table.items()}


def _check_closed(path: Path, current: str | None, starts: list[float]) -> None:
    if starts:
        raise ValueError(f"{path}: {current} has a seizure start time without an end time")


def read_tusz_csv(path: str | Path) -> SeizureTable:
    """Seizures of one TUSZ recording from its ``.csv_bi`` / ``.csv`` (or older ``.tse`` / ``.tse_bi``) file."""
    path = Path(path)
    name = recording_id(path)
    intervals: list[Interval] = []
    lines = path.read_text(errors="replace").splitlines()
    header: list[str] | None = None
    for number, raw_line in enumerate(lines, start=1):
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if m := re.match(r"#\s*bname\s*=\s*(\S+)", line):
                name = recording_id(m.group(1))
            continue
        if line.startswith("version"):  # .tse header
            continue
        if header is None and "," in line and "start_time" in line.lower():
            header = [h.strip().lower() for h in line.split(",")]
            continue
        if header is not None:
            cells = dict(zip(header, (c.strip() for c in line.split(","))))
            start, stop, label = cells.get("start_time"), cells.get("stop_time"), cells.get("label")
        else:  # .tse: "start stop label confidence"
            tokens = line.split()
            if len(tokens) < 3:
                raise ValueError(f"{path}:{number}: expected 'start stop label [confidence]', got {line!r}")
            start, stop, label = tokens[:3]
        if start is None or stop is None or label is None:
            raise ValueError(f"{path}:{number}: missing start_time/stop_time/label in {line!r}")
        try:
            onset, offset = float(start), float(stop)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: times must be numbers, got {line!r}") from err
        if label.strip().lower() in TUSZ_SEIZURE_LABELS:
            intervals.append((onset, offset))
    return {name: merge_intervals(intervals)}


def _per_second_intervals(labels: np.ndarray) -> list[Interval]:
    """Runs of ones in a per-second 0/1 vector as intervals ``[i, j)`` seconds."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(float(a), float(b)) for a, b in zip(edges[::2], edges[1::2])]


def _read_helsinki_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise ValueError(f"{path}: a Helsinki annotation CSV needs a header row and at least one row per second")
    header = [h.strip() for h in rows[0]]
    values = np.full((len(rows) - 1, len(header)), np.nan)  # (seconds, neonates)
    for r, row in enumerate(rows[1:]):
        for c, cell in enumerate(row[: len(header)]):
            cell = cell.strip()
            if cell and cell.lower() != "nan":
                try:
                    values[r, c] = float(cell)
                except ValueError as err:
                    raise ValueError(f"{path}: row {r + 2}: expected 0/1 per second, got {cell!r}") from err
    if not np.all(np.isin(values[~np.isnan(values)], (0.0, 1.0))):
        raise ValueError(f"{path}: per-second labels must be 0 or 1")
    return header, values


def read_helsinki_csv(
    paths: str | Path | Sequence[str | Path], *, consensus: str = "all", prefix: str = "eeg"
) -> SeizureTable:
    """Seizures from Helsinki-style per-second CSVs (one per annotator), combined across annotators.

    Parameters
    ----------
    paths : path or sequence of paths
        ``annotations_2017_A.csv`` etc.: header = neonate numbers, one row per second, 1 = seizure.
    consensus : {"all", "majority", "any"}
        Seizure where all / more than half / at least one annotator marked it ("all" = Stevenson et al.'s
        consensus definition).
    prefix : str
        Column ``k`` (an integer) is recording ``f"{prefix}{k}"`` (``eeg1`` ... ``eeg79``); other names are kept.
    """
    if consensus not in ("all", "majority", "any"):
        raise ValueError(f"consensus must be 'all', 'majority' or 'any', got {consensus!r}")
    path_list = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not path_list:
        raise ValueError("read_helsinki_csv needs at least one file")
    matrices = [_read_helsinki_matrix(p) for p in path_list]
    header = matrices[0][0]
    for p, (other, _) in zip(path_list[1:], matrices[1:]):
        if other != header:
            raise ValueError(f"{p}: columns differ from {path_list[0]}; annotators must cover the same recordings")
    n_seconds = max(m.shape[0] for _, m in matrices)
    stack = np.full((len(matrices), n_seconds, len(header)), np.nan)  # (annotators, seconds, neonates)
    for i, (_, m) in enumerate(matrices):
        stack[i, : m.shape[0]] = m
    marked = np.nansum(stack, axis=0)
    present = np.sum(~np.isnan(stack), axis=0)
    if consensus == "all":
        seizure = (present > 0) & (marked == present)
    elif consensus == "majority":
        seizure = marked * 2 > present
    else:
        seizure = marked > 0
    table: SeizureTable = {}
    for c, column in enumerate(header):
        name = f"{prefix}{column}" if column.isdigit() else recording_id(column)
        table[name] = _per_second_intervals(seizure[:, c])
    return table


_FILE_COLUMNS = ("file", "filename", "file_name", "recording", "record", "edf", "path", "name")
_ONSET_COLUMNS = ("onset", "start", "start_time", "seizure_start", "begin")
_OFFSET_COLUMNS = ("offset", "end", "stop", "end_time", "stop_time", "seizure_end")


def read_plain_csv(path: str | Path) -> SeizureTable:
    """Seizures from a CSV of ``file,onset,offset`` rows (seconds; header optional; ``duration`` may replace offset)."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = [[c.strip() for c in row] for row in csv.reader(f) if row and not row[0].lstrip().startswith("#")]
    rows = [row for row in rows if any(row)]
    if not rows:
        raise ValueError(f"{path}: empty annotation CSV")
    file_col, onset_col, offset_col, duration_col = 0, 1, 2, None
    if not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
        header = [h.lower() for h in rows[0]]
        file_col = _column(path, header, _FILE_COLUMNS, "file")
        onset_col = _column(path, header, _ONSET_COLUMNS, "onset")
        if any(h in header for h in _OFFSET_COLUMNS):
            offset_col = _column(path, header, _OFFSET_COLUMNS, "offset")
        else:
            duration_col, offset_col = _column(path, header, ("duration",), "offset or duration"), None
        rows = rows[1:]
    table: SeizureTable = {}
    for number, row in enumerate(rows, start=2):
        need = max(c for c in (file_col, onset_col, offset_col, duration_col) if c is not None)
        if len(row) <= need:
            raise ValueError(f"{path}: row {number} has {len(row)} columns, expected file, onset, offset: {row}")
        try:
            onset = float(row[onset_col])
            offset = float(row[offset_col]) if offset_col is not None else onset + float(row[duration_col])
        except ValueError as err:
            raise ValueError(f"{path}: row {number}: onset/offset must be seconds, got {row}") from err
        table.setdefault(recording_id(row[file_col]), []).append((onset, offset))
    return {name: merge_intervals(intervals) for name, intervals in table.items()}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _column(path: Path, header: list[str], names: Sequence[str], what: str) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise ValueError(f"{path}: no {what} column in header {header}; expected one of {list(names)}")


# ---------------------------------------------------------------------------------------------------------------------
# Detection and loading


def detect_format(path: str | Path) -> str:
    """Guess the annotation format of a file: one of `FORMATS`."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".csv_bi",)):
        return "tusz"
    if name.endswith((".tse", ".tse_bi")):
        return "tse"
    head = path.read_text(errors="replace")[:20000]
    if re.search(r"^\s*File Name:", head, re.M):
        return "chbmit"
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty annotation file")
    if lines[0].startswith("# version = csv") or any(
        "start_time" in line.lower() and "label" in line.lower() for line in lines[:20]
    ):
        return "tusz"
    header = [c.strip().strip('"') for c in lines[0].split(",")]
    body = [[c.strip() for c in line.split(",")] for line in lines[1:51]]
    if header and all(h.isdigit() for h in header) and len(header) > 1:
        return "helsinki"
    if body and all(cell in ("", "0", "1", "0.0", "1.0", "nan", "NaN") for row in body for cell in row):
        return "helsinki"
    return "plain"


def read_annotations(path: str | Path, format: str = "auto") -> SeizureTable:
    """Read one annotation file of any supported format (``format="auto"`` guesses it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "chbmit":
        return read_chbmit_summary(path)
    if fmt in ("tusz", "tse"):
        return read_tusz_csv(path)
    if fmt == "helsinki":
        return read_helsinki_csv(path)
    if fmt == "plain":
        return read_plain_csv(path)
    raise ValueError(f"unknown annotation format {format!r}; expected 'auto' or one of {FORMATS}")


def load_annotations(source: AnnotationSource, format: str = "auto") -> SeizureTable:
    """A `SeizureTable` from a file, several files, or a mapping ``{file or recording id: [(onset, offset)]}``.

    Several Helsinki files are combined by annotator consensus ("all"); other files are merged (union per recording).
    """
    if isinstance(source, Mapping):
        return {recording_id(k): merge_intervals(v) for k, v in source.items()}
    paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
    formats = [format if format != "auto" else detect_format(p) for p in paths]
    if len(paths) > 1 and all(f == "helsinki" for f in formats):
        return read_helsinki_csv(paths)
    table: SeizureTable = {}
    for path, fmt in zip(paths, formats):
        for name, intervals in read_annotations(path, fmt).items():
            table[name] = merge_intervals([*table.get(name, []), *intervals])
    return table


def sidecar_annotations(recording_path: str | Path) -> list[Interval] | None:
    """Seizures from annotation files stored next to a recording, or ``None`` if there are none.

    Looked for, in order: ``<stem>.csv_bi``, ``<stem>.tse_bi`` (TUSZ), then any ``*-summary.txt`` in the same folder
    that lists this file (CHB-MIT).
    """
    path = Path(recording_path)
    name = recording_id(path)
    for suffix in (".csv_bi", ".tse_bi"):
        candidate = path.with_name(name + suffix)
        if candidate.is_file():
            return read_tusz_csv(candidate).get(name, [])
    for summary in sorted(path.parent.glob("*-summary.txt")):
        table = read_chbmit_summary(summary)
        if name in table:
            return table[name]
    return None
