"""Scores of a run: per-patient balanced accuracy (RAICL's metric) and clinical event-level numbers.

Window level (per patient, then macro-averaged over patients and pooled over all windows):
sensitivity (seizure recall), specificity (background recall), balanced accuracy
``BCA = (sensitivity + specificity) / 2`` (if a patient has only one class, the recall that exists, as
sklearn does), F1 of the seizure class, and the unparsable rate. By default unparsable answers are excluded
from these metrics (as RAICL does) but counted; ``unparsable="wrong"`` counts them as errors instead.

Event level (per recording): consecutive scored windows with the same positive label are merged into events
when the gap between one window's end and the next window's start is at most ``merge_gap`` seconds (true
events from labels, detected events from predictions; unparsable = negative). A true event is detected when a
predicted event overlaps it; a predicted event overlapping no true event is a false alarm. False alarms per
hour divide by the monitored time, the union of the scored windows' spans. Event numbers are meaningful when
the queries cover the recordings contiguously (``queries="all"``); on a 1-in-10 subsample every window is
its own event.

Stored raw answers can be parsed again under either rule (``parse="strict"`` or ``"official"``,
:data:`~omnipress.eeg.prompts.PARSE_RULES`) without asking the model again; every report counts the answers the two
rules decide differently (``settings["rules_disagree"]``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from omnipress.eeg.prompts import PARSE_RULES, parse_decision, parse_official
from omnipress.eeg.run import RESULTS, read_jsonl

METRICS = ("bca", "sensitivity", "specificity", "f1", "unparsable_rate", "event_sensitivity", "fa_per_hour")


# --------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------
def confusion(label: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """``(tp, fn, tn, fp)`` for 0/1 arrays (seizure = positive)."""
    label, pred = np.asarray(label).astype(int), np.asarray(pred).astype(int)
    if label.shape != pred.shape:
        raise ValueError(f"label and pred shapes differ: {label.shape} vs {pred.shape}")
    tp = int(np.sum((label == 1) & (pred == 1)))
    fn = int(np.sum((label == 1) & (pred != 1)))
    tn = int(np.sum((label == 0) & (pred == 0)))
    fp = int(np.sum((label == 0) & (pred != 0)))
    return tp, fn, tn, fp


def window_metrics(tp: int, fn: int, tn: int, fp: int) -> dict[str, float]:
    """Sensitivity, specificity, balanced accuracy and F1 from counts (NaN where undefined)."""
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    recalls = [r for r in (sens, spec) if not math.isnan(r)]
    bca = float(np.mean(recalls)) if recalls else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan
    return {"sensitivity": sens, "specificity": spec, "bca": bca, "f1": f1}


def merge_events(start: np.ndarray, duration: float, positive: np.ndarray, merge_gap: float = 0.0) -> list[tuple]:
    """Merge positive windows of one recording into ``[(onset, offset), ...]`` events.

    Windows are sorted by start; a positive window joins the current event when its start is at most
    ``merge_gap`` seconds after the event's end (overlapping windows always join). A negative window between
    two positive ones ends the event.
    """
    order = np.argsort(start, kind="stable")
    events: list[list[float]] = []
    open_event = False
    for i in order:
        s, e = float(start[i]), float(start[i]) + duration
        if not positive[i]:
            open_event = False
            continue
        if open_event and s <= events[-1][1] + merge_gap + 1e-9:
            events[-1][1] = max(events[-1][1], e)
        else:
            events.append([s, e])
        open_event = True
    return [tuple(ev) for ev in events]


def interval_union_seconds(start: np.ndarray, duration: float) -> float:
    """Total length of the union of ``[start, start + duration)`` intervals."""
    total, end = 0.0, -math.inf
    for s in np.sort(np.asarray(start, dtype=np.float64)):
        e = s + duration
        if s >= end:
            total += duration
        elif e > end:
            total += e - end
        end = max(end, e)
    return total


def event_counts(true_events: Sequence[tuple], pred_events: Sequence[tuple]) -> tuple[int, int]:
    """``(detected true events, false-alarm predicted events)`` by interval overlap."""

    def overlap(a, b) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    detected = sum(any(overlap(t, p) for p in pred_events) for t in true_events)
    false_alarms = sum(not any(overlap(p, t) for t in true_events) for p in pred_events)
    return detected, false_alarms


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
@dataclass
class GroupScore:
    """Counts and metrics of one patient (or of all windows pooled)."""

    name: str
    n: int
    n_seizure: int
    n_background: int
    n_unparsable: int
    tp: int
    fn: int
    tn: int
    fp: int
    sensitivity: float
    specificity: float
    bca: float
    f1: float
    unparsable_rate: float
    events: int
    events_detected: int
    false_alarms: int
    hours: float
    event_sensitivity: float
    fa_per_hour: float


@dataclass
class ScoreReport:
    """Per-patient scores, their macro average (mean over patients, NaN skipped) and pooled scores."""

    per_patient: list[GroupScore]
    macro: dict[str, float]
    pooled: GroupScore
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "macro": self.macro,
            "pooled": asdict(self.pooled),
            "per_patient": [asdict(p) for p in self.per_patient],
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(_nan_to_none(self.to_dict()), indent=2))
        return path

    def to_markdown(self) -> str:
        """Tables: per patient, then macro and pooled (percentages; FA/h as a rate)."""
        head = "| patient | n | sz | unparsable % | BCA | sens | spec | F1 | events | ev. sens | FA/h |"
        lines = [head, "|" + "---|" * 11]
        for p in [*self.per_patient, self.pooled]:
            lines.append(
                f"| {p.name} | {p.n} | {p.n_seizure} | {percent(p.unparsable_rate)} | {percent(p.bca)} "
                f"| {percent(p.sensitivity)} | {percent(p.specificity)} | {percent(p.f1)} | {p.events} "
                f"| {percent(p.event_sensitivity)} | {_num(p.fa_per_hour)} |"
            )
        m = self.macro
        lines.append(
            f"| **macro ({len(self.per_patient)} patients)** | | | {percent(m['unparsable_rate'])} "
            f"| **{percent(m['bca'])}** | {percent(m['sensitivity'])} | {percent(m['specificity'])} "
            f"| {percent(m['f1'])} | | {percent(m['event_sensitivity'])} | {_num(m['fa_per_hour'])} |"
        )
        return "\n".join(lines)


def percent(x: float | None) -> str:
    """``0.913 -> "91.3"``; NaN or None -> ``"n/a"``."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _num(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def dedupe(rows: Iterable[dict]) -> list[dict]:
    """One row per window: the last one written wins."""
    latest: dict[Any, dict] = {}
    for r in rows:
        latest[r["window"]] = r
    return list(latest.values())


def reparse(rows: Iterable[dict], rule: str, *, require_last_line: bool = False) -> list[dict]:
    """Rows with ``pred``, ``status`` and ``decision_line`` recomputed from the stored ``answer`` under ``rule``.

    Rows without an ``answer`` field (the k-NN baseline) are returned unchanged. Nothing is asked again.
    """
    if rule not in PARSE_RULES:
        raise ValueError(f"parse rule must be one of {PARSE_RULES}, got {rule!r}")
    out = []
    for row in rows:
        if "answer" not in row:
            out.append(row)
            continue
        rl = require_last_line and rule == "strict"
        decision = parse_decision(row["answer"], require_last_line=rl, rule=rule)
        out.append(
            {**row, "pred": decision.value, "status": decision.status, "decision_line": decision.line, "parse": rule}
        )
    return out


def parse_disagreements(rows: Iterable[dict], *, require_last_line: bool = False) -> tuple[int, int]:
    """``(answers the strict and the official rule decide differently, answers)`` over rows with an ``answer``."""
    differ = answers = 0
    for row in rows:
        if "answer" in row:
            answers += 1
            strict = parse_decision(row["answer"], require_last_line=require_last_line).value
            differ += int(strict != parse_official(row["answer"]).value)
    return differ, answers


def score_rows(
    rows: Iterable[dict],
    *,
    merge_gap: float = 0.0,
    unparsable: Literal["exclude", "wrong"] = "exclude",
    parse: str | None = None,
    require_last_line: bool = False,
) -> ScoreReport:
    """Score result rows (``window, patient, recording, start, duration, label, pred``; ``pred`` -1 = unparsable).

    Parameters
    ----------
    rows : iterable of dict
        Rows of ``results.jsonl`` (a run or :mod:`omnipress.eeg.knn`).
    merge_gap : float
        Seconds allowed between windows merged into one event.
    unparsable : {"exclude", "wrong"}
        Leave unparsable answers out of window metrics (RAICL) or count them as misclassified.
    parse : {"strict", "official"}, optional
        Parse the stored answers again under this rule (:func:`reparse`); default: the decisions as recorded.
    require_last_line : bool
        With the strict rule, accept a decision on the last line only (as the run did with ``--require-last-line``).
    """
    if unparsable not in ("exclude", "wrong"):
        raise ValueError(f"unparsable must be 'exclude' or 'wrong', got {unparsable!r}")
    if merge_gap < 0:
        raise ValueError(f"merge_gap must be >= 0, got {merge_gap}")
    rows = dedupe(rows)
    if not rows:
        raise ValueError("no result rows to score")
    missing = {"window", "patient", "recording", "start", "duration", "label", "pred"} - set(rows[0])
    if missing:
        raise ValueError(f"result rows lack fields {sorted(missing)}")
    if parse is not None:
        rows = reparse(rows, parse, require_last_line=require_last_line)
    differ, answers = parse_disagreements(rows, require_last_line=require_last_line)
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_patient[str(r["patient"])].append(r)
    per_patient = [_group_score(name, group, merge_gap, unparsable) for name, group in sorted(by_patient.items())]
    pooled = _group_score("pooled", rows, merge_gap, unparsable)
    macro = {m: _nanmean([getattr(p, m) for p in per_patient]) for m in METRICS}
    settings = {
        "merge_gap": merge_gap,
        "unparsable": unparsable,
        "n_rows": len(rows),
        "parse": parse or "as recorded",
        "answers": answers,
        "rules_disagree": differ,
    }
    return ScoreReport(per_patient=per_patient, macro=macro, pooled=pooled, settings=settings)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _group_score(name: str, rows: list[dict], merge_gap: float, unparsable: str) -> GroupScore:
    label = np.array([int(r["label"]) for r in rows])
    pred = np.array([int(r["pred"]) for r in rows])
    bad = pred == -1
    if unparsable == "exclude":
        counts = confusion(label[~bad], pred[~bad])
    else:
        counts = confusion(label, np.where(bad, 1 - label, pred))
    metrics = window_metrics(*counts)
    events = detected = false_alarms = 0
    seconds = 0.0
    by_rec: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_rec[str(r["recording"])].append(r)
    for rec_rows in by_rec.values():
        start = np.array([float(r["start"]) for r in rec_rows])
        duration = float(rec_rows[0]["duration"])
        lab = np.array([int(r["label"]) == 1 for r in rec_rows])
        prd = np.array([int(r["pred"]) == 1 for r in rec_rows])
        true_ev = merge_events(start, duration, lab, merge_gap)
        pred_ev = merge_events(start, duration, prd, merge_gap)
        d, fa = event_counts(true_ev, pred_ev)
        events, detected, false_alarms = events + len(true_ev), detected + d, false_alarms + fa
        seconds += interval_union_seconds(start, duration)
    hours = seconds / 3600.0
    return GroupScore(
        name=name,
        n=len(rows),
        n_seizure=int((label == 1).sum()),
        n_background=int((label == 0).sum()),
        n_unparsable=int(bad.sum()),
        tp=counts[0],
        fn=counts[1],
        tn=counts[2],
        fp=counts[3],
        unparsable_rate=float(bad.mean()),
        events=events,
        events_detected=detected,
        false_alarms=false_alarms,
        hours=hours,
        event_sensitivity=detected / events if events else math.nan,
        fa_per_hour=false_alarms / hours if hours > 0 else math.nan,
        **metrics,
    )


def load_results(path: str | Path) -> list[dict]:
    """Rows of a run directory (its ``results.jsonl``) or of a results file."""
    path = Path(path)
    file = path / RESULTS if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no results at {file}")
    return read_jsonl(file)


def score_run(path: str | Path, **kwargs) -> ScoreReport:
    """:func:`score_rows` on a run directory or results file."""
    return score_rows(load_results(path), **kwargs)


__all__ = [
    "METRICS",
    "GroupScore",
    "ScoreReport",
    "confusion",
    "dedupe",
    "event_counts",
    "interval_union_seconds",
    "load_results",
    "merge_events",
    "parse_disagreements",
    "percent",
    "reparse",
    "score_rows",
    "score_run",
    "window_metrics",
]
