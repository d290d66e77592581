"""Resumable RAICL runs: ask a backend about every query window, stream each answer to disk.

A run directory holds

- ``run.json``: the run settings, the backend description and the windows fingerprint;
- ``results.jsonl``: one JSON line per answered query window (answers that do not parse count as answered
  and are scored as unparsable); each line is flushed and fsynced as it arrives;
- ``errors.jsonl``: requests that failed after all retries (retried on the next run);
- ``reasked.jsonl``: answers set aside by ``reask_unparsable`` (kept for the record, not scored).

Rerunning with the same directory skips every window already in ``results.jsonl``, so a run killed at any
moment resumes without repeating answered windows and without gaps (a truncated last line is dropped and
that window asked again). ``reask_unparsable=True`` (``--reask-unparsable``) also asks again every window whose
stored answer did not parse, as the official code's resume does: those rows move from ``results.jsonl`` to
``reasked.jsonl`` (the results file is rewritten atomically first), so ``results.jsonl`` never holds a window twice.

Query selection follows RAICL (§2 step 5): ``"every"`` keeps rows whose index is a multiple of ``every``
(NICU protocol), ``"all_seizures"`` additionally keeps every seizure window (CHSZ protocol), ``"all"``
keeps all rows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omnipress.eeg.backends.base import Answer, Backend, BackendFatalError
from omnipress.eeg.embed import EmbeddingIndex, windows_fingerprint
from omnipress.eeg.progress import progress_bar
from omnipress.eeg.prompts import (
    PARSE_RULES,
    UNPARSABLE,
    VARIANTS,
    PromptImage,
    build_prompt,
    check_template,
    is_official_template,
    parse_decision,
)
from omnipress.eeg.render import KINDS, ImageStore
from omnipress.eeg.retrieve import Retriever, Selection

if TYPE_CHECKING:
    from omnipress.eeg.windows import WindowSet

RESULTS = "results.jsonl"
ERRORS = "errors.jsonl"
REASKED = "reasked.jsonl"
RUN_META = "run.json"
QUERY_SCHEMES = ("every", "all_seizures", "all")
# Settings that change answers: a resumed run must agree on them.
_RESUME_KEYS = (
    "variant", "k", "seizure_mode", "background_mode", "order", "guard", "seed", "template", "parse", "image_kind",
)  # fmt: skip


def select_queries(
    label: np.ndarray, scheme: str = "every", every: int = 10, patient: np.ndarray | None = None, patients=None
) -> np.ndarray:
    """Rows to ask about under a RAICL test-set protocol (module docstring); optionally only some patients."""
    label = np.asarray(label)
    if scheme not in QUERY_SCHEMES:
        raise ValueError(f"query scheme must be one of {QUERY_SCHEMES}, got {scheme!r}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    rows = np.arange(len(label))
    keep = np.ones(len(label), dtype=bool) if scheme == "all" else rows % every == 0
    if scheme == "all_seizures":
        keep |= label == 1
    if patients is not None:
        if patient is None:
            raise ValueError("filtering by patients needs the patient array")
        wanted = {str(p) for p in patients}
        missing = wanted - set(np.unique(patient).tolist())
        if missing:
            raise ValueError(f"unknown patients {sorted(missing)}")
        keep &= np.isin(np.asarray(patient).astype(str), list(wanted))
    return rows[keep]


@dataclass
class RunConfig:
    """Settings of a run (recorded in ``run.json``).

    Parameters
    ----------
    variant : str
        Prompt variant, one of :data:`~omnipress.eeg.prompts.VARIANTS`.
    k : int
        Reference shots per class for the variants with references.
    seizure_mode, background_mode : str
        Retrieval modes of the ``"raicl"`` variant (``"reasoning_random"`` always draws at random).
    order : str
        Reference display order (``"paper"`` or ``"patient_first"``).
    guard : float
        Leakage guard in seconds around the query (:class:`~omnipress.eeg.retrieve.Retriever`).
    queries, every : str, int
        Query protocol (module docstring).
    patients : list of str, optional
        Only ask about these patients.
    limit : int, optional
        Stop after this many queries in total (answered ones included), for smoke tests.
    seed : int
        Seed of the random references.
    template : str, optional
        Custom template text (:func:`~omnipress.eeg.prompts.build_prompt`).
    require_last_line : bool
        Parse the decision from the last line only (strict rule).
    parse : {"strict", "official"}
        Rule that turns an answer into a decision (:func:`~omnipress.eeg.prompts.parse_decision`).
    image_kind : {"vlm", "vision"}
        Rendering sent to the VLM: the labelled image (default) or the axis-free one.
    """

    variant: str = "raicl"
    k: int = 2
    seizure_mode: str = "nearest"
    background_mode: str = "representative"
    order: str = "paper"
    guard: float = 0.0
    queries: str = "every"
    every: int = 10
    patients: list[str] | None = None
    limit: int | None = None
    seed: int = 0
    template: str | None = None
    require_last_line: bool = False
    parse: str = "strict"
    image_kind: str = "vlm"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.queries not in QUERY_SCHEMES:
            raise ValueError(f"queries must be one of {QUERY_SCHEMES}, got {self.queries!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")
        if self.parse not in PARSE_RULES:
            raise ValueError(f"parse must be one of {PARSE_RULES}, got {self.parse!r}")
        if self.parse == "official" and self.require_last_line:
            raise ValueError("require_last_line belongs to the strict parse rule, not to parse='official'")
        if self.image_kind not in KINDS:
            raise ValueError(f"image_kind must be one of {KINDS}, got {self.image_kind!r}")
        if self.template is not None:
            check_template(self.template)
            if is_official_template(self.template) and self.order != "paper":
                raise ValueError("an official-format template fixes the reference order; --order does not apply")

    @property
    def uses_references(self) -> bool:
        return self.variant in ("reasoning_random", "raicl")

    def retriever(self, index: EmbeddingIndex) -> Retriever:
        if self.variant == "reasoning_random":
            modes = {"seizure_mode": "random", "background_mode": "random"}
        else:
            modes = {"seizure_mode": self.seizure_mode, "background_mode": self.background_mode}
        return Retriever(index, k=self.k, guard=self.guard, seed=self.seed, **modes)


@dataclass
class RunSummary:
    """Counts of one :func:`run` call."""

    out_dir: Path
    planned: int
    already_done: int
    reasked: int = 0
    answered: int = 0
    unparsable: int = 0
    errors: int = 0
    seconds: float = 0.0
    error_messages: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.planned - self.already_done - self.answered

    def __str__(self) -> str:
        return (
            f"{self.out_dir}: {self.planned} queries, {self.already_done} already answered"
            + (f" ({self.reasked} unparsable set aside to ask again)" if self.reasked else "")
            + f", {self.answered} answered "
            f"now ({self.unparsable} unparsable), {self.errors} failed, {self.remaining} remaining, "
            f"{self.seconds:.1f} s"
        )


def read_jsonl(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file. A truncated last line (crash mid-write) is skipped, and cut off if ``repair``.

    Raises ``ValueError`` for a corrupt line that is not the last one.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows: list[dict[str, Any]] = []
    keep = 0  # bytes of complete, valid lines
    chunks = raw.splitlines(keepends=True)
    for i, chunk in enumerate(chunks):
        if chunk.strip():
            try:
                rows.append(json.loads(chunk))
            except json.JSONDecodeError as exc:
                if i < len(chunks) - 1:
                    raise ValueError(f"{path}: corrupt line {i + 1}: {exc}") from exc
                break  # truncated last line
        keep += len(chunk)
    if repair and keep < len(raw):
        with path.open("r+b") as f:
            f.truncate(keep)
    elif repair and raw and not raw.endswith(b"\n"):
        with path.open("ab") as f:
            f.write(b"\n")
    return rows


class _JsonlWriter:
    """Append JSON lines, each flushed and fsynced before the next is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def answered_windows(out_dir: str | Path) -> set[int]:
    """Rows already answered in a run directory."""
    return {int(r["window"]) for r in read_jsonl(Path(out_dir) / RESULTS)}


def run(
    windows: WindowSet,
    backend: Backend,
    out_dir: str | Path,
    *,
    images: ImageStore | str | Path,
    index: EmbeddingIndex | None = None,
    config: RunConfig | None = None,
    progress: bool = True,
    force: bool = False,
    max_consecutive_errors: int = 20,
    reask_unparsable: bool = False,
) -> RunSummary:
    """Ask ``backend`` about every planned query of ``windows``; resumable (module docstring).

    Parameters
    ----------
    windows : WindowSet
        All windows (queries and the reference pool).
    backend : Backend
        Where prompts go.
    out_dir : path
        Run directory (created; reused to resume).
    images : ImageStore or path
        Rendered images (missing ones are rendered on demand).
    index : EmbeddingIndex, optional
        Needed by the variants with reference images; must match ``windows``.
    config : RunConfig
        Run settings; must agree with ``run.json`` when resuming unless ``force``.
    max_consecutive_errors : int
        Stop (raise `BackendFatalError`, a ``RuntimeError``) after this many failed requests in a row.
    reask_unparsable : bool
        Ask again the windows whose stored answer did not parse (module docstring).
    """
    config = config or RunConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = images if isinstance(images, ImageStore) else ImageStore(windows, images)
    fingerprint = windows_fingerprint(windows)
    retriever = None
    if config.uses_references:
        if index is None:
            raise ValueError(f"variant {config.variant!r} needs an embedding index (build one with `index`)")
        index.check_matches(windows)
        retriever = config.retriever(index)
    _check_or_write_meta(out, config, backend, fingerprint, store.root, force=force)

    answered_rows = read_jsonl(out / RESULTS, repair=True)
    reasked = _set_aside_unparsable(out, answered_rows) if reask_unparsable else 0
    done = {int(r["window"]) for r in answered_rows if not (reask_unparsable and int(r["pred"]) == UNPARSABLE)}
    planned = select_queries(windows.label, config.queries, config.every, windows.patient, config.patients)
    if config.limit is not None:
        planned = planned[: config.limit]
    todo = [int(q) for q in planned if int(q) not in done]
    summary = RunSummary(out, planned=len(planned), already_done=len(planned) - len(todo), reasked=reasked)
    if not todo:
        return summary

    ids = np.asarray(windows.window_id)
    context: dict[int, Selection | None] = {}

    def jobs():
        for q in todo:
            selection = retriever.select(q) if retriever is not None else None
            context[q] = selection
            yield q, _prompt(config, store, windows, q, selection)

    results, errors = _JsonlWriter(out / RESULTS), _JsonlWriter(out / ERRORS)
    bar = _progress(len(todo), progress, f"run {config.variant}")
    start, consecutive = time.perf_counter(), 0
    try:
        for q, answer in backend.map(jobs()):
            selection = context.pop(q)
            if answer.ok:
                row = _result_row(config, windows, ids, store, q, selection, answer)
                results.write(row)
                summary.answered += 1
                summary.unparsable += int(row["pred"] == -1)
                consecutive = 0
            else:
                errors.write(
                    {
                        "window": q,
                        "window_id": ids[q],
                        "error": answer.error,
                        "attempts": answer.attempts,
                        "time": time.time(),
                    }
                )
                summary.errors += 1
                consecutive += 1
                if len(summary.error_messages) < 5:
                    summary.error_messages.append(str(answer.error))
                if consecutive >= max_consecutive_errors:
                    raise BackendFatalError(
                        f"{consecutive} requests failed in a row (last: {answer.error}); stopping. "
                        f"Answers so far are in {out / RESULTS}; rerun to resume."
                    )
            bar.update(1)
    finally:
        bar.close()
        results.close()
        errors.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _set_aside_unparsable(out: Path, rows: list[dict[str, Any]]) -> int:
    """Move rows whose answer did not parse to ``reasked.jsonl``, then rewrite ``results.jsonl`` without them.

    The archive is written (and fsynced) before the results file is atomically replaced, so a crash at any point
    loses no answer and leaves no window twice in ``results.jsonl``.
    """
    unparsable = [r for r in rows if int(r["pred"]) == UNPARSABLE]
    if not unparsable:
        return 0
    archive = _JsonlWriter(out / REASKED)
    try:
        for row in unparsable:
            archive.write({**row, "set_aside": time.time()})
    finally:
        archive.close()
    tmp = out / f".{RESULTS}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            if int(row["pred"]) != UNPARSABLE:
                f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / RESULTS)
    return len(unparsable)


def _prompt(config: RunConfig, store: ImageStore, windows, q: int, selection: Selection | None):
    kind = config.image_kind
    test = PromptImage(store.path(q, kind), q, "test")
    if selection is None:
        return build_prompt(config.variant, test, template=config.template)
    seizure = [PromptImage(store.path(i, kind), i, "reference", 1) for i in selection.seizure]
    background = [PromptImage(store.path(i, kind), i, "reference", 0) for i in selection.background]
    return build_prompt(
        config.variant,
        test,
        seizure,
        background,
        order=config.order,
        background_source=selection.background_source,
        template=config.template,
    )


def _result_row(config, windows, ids, store, q, selection, answer: Answer) -> dict[str, Any]:
    decision = parse_decision(answer.text, require_last_line=config.require_last_line, rule=config.parse)
    refs = []
    if selection is not None:
        for rows, dists, label in (
            (selection.seizure, selection.seizure_distance, 1),
            (selection.background, selection.background_distance, 0),
        ):
            for r, d in zip(rows, dists):
                refs.append(
                    {
                        "window": int(r),
                        "window_id": str(ids[r]),
                        "patient": str(windows.patient[r]),
                        "label": label,
                        "distance": float(d),
                        "image": str(store.path(r, config.image_kind).relative_to(store.root)),
                    }
                )
    return {
        "window": q,
        "window_id": str(ids[q]),
        "patient": str(windows.patient[q]),
        "recording": str(windows.recording[q]),
        "start": float(windows.start[q]),
        "duration": float(windows.duration),
        "label": int(windows.label[q]),
        "pred": decision.value,
        "status": decision.status,
        "decision_line": decision.line,
        "parse": config.parse,
        "answer": answer.text,
        "variant": config.variant,
        "image": str(store.path(q, config.image_kind).relative_to(store.root)),
        "references": refs,
        "background_source": None if selection is None else selection.background_source,
        "latency_s": round(answer.latency_s, 4),
        "attempts": answer.attempts,
        "usage": answer.usage,
        "info": answer.info,
    }


def _check_or_write_meta(
    out: Path, config: RunConfig, backend: Backend, fingerprint: str, images: Path, *, force: bool
) -> None:
    meta_path = out / RUN_META
    meta = {
        "config": asdict(config),
        "backend": backend.describe(),
        "windows_fingerprint": fingerprint,
        "images": str(Path(images).resolve()),
    }
    if meta_path.exists() and not force:
        old = json.loads(meta_path.read_text())
        if old.get("windows_fingerprint") != fingerprint:
            raise ValueError(f"{out} holds a run on other windows; use another --out or force=True")
        defaults = asdict(RunConfig())  # settings added later: a run.json without them used the defaults
        old_config = old.get("config", {})
        diff = [k for k in _RESUME_KEYS if old_config.get(k, defaults[k]) != meta["config"][k]]
        old_model = old.get("backend", {}).get("model")
        if old_model != meta["backend"].get("model"):
            diff.append("model")
        if diff:
            raise ValueError(
                f"{out} holds a run with different settings ({', '.join(diff)}); resume with the same settings, "
                "use another --out, or force=True"
            )
    meta_path.write_text(json.dumps(meta, indent=2, default=_json_default))


def load_run_meta(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / RUN_META
    return json.loads(path.read_text()) if path.exists() else {}


def _progress(total: int, enabled: bool, desc: str):
    return progress_bar(total=total, enabled=enabled, desc=desc, unit="query")


__all__ = [
    "ERRORS",
    "QUERY_SCHEMES",
    "REASKED",
    "RESULTS",
    "RUN_META",
    "RunConfig",
    "RunSummary",
    "answered_windows",
    "load_run_meta",
    "read_jsonl",
    "run",
    "select_queries",
]
