"""Retrieval-only baseline: a k-nearest-neighbour vote in the RAICL embedding space, no VLM.

It answers the same query windows as a run and writes rows in the same format, so
:func:`omnipress.eeg.score.score_rows` scores both identically. Two candidate pools:

- ``pool="raicl"`` (default): the labels RAICL itself may look at for a query of patient ``s``: every window
  of the other patients, plus ``s``'s own background windows that RAICL's background pool allows (past first,
  the query and windows overlapping it excluded, :meth:`Retriever.background_pool`). Never ``s``'s seizures.
- ``pool="loso"``: leave-one-patient-out; only the other patients' windows (no calibration labels).

Votes are cosine-nearest neighbours. ``weighting="balanced"`` divides each neighbour's vote by its class's
size in the pool, which counters the heavy class imbalance (the target metric is balanced accuracy);
``"uniform"`` is the plain majority vote. Ties go to non-seizure. The seizure vote share is kept as
``score`` (usable for AUROC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from omnipress.eeg.embed import EmbeddingIndex
from omnipress.eeg.progress import progress_bar
from omnipress.eeg.retrieve import Retriever

if TYPE_CHECKING:
    from omnipress.eeg.windows import WindowSet


def knn_vote(
    index: EmbeddingIndex,
    queries: np.ndarray,
    *,
    k: int = 5,
    pool: Literal["raicl", "loso"] = "raicl",
    weighting: Literal["balanced", "uniform"] = "balanced",
    guard: float = 0.0,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Predict each query by a vote of its ``k`` nearest allowed neighbours (``progress``: a bar over queries).

    Returns
    -------
    pred : np.ndarray
        ``(n_queries,)`` int8, 1 = seizure.
    score : np.ndarray
        ``(n_queries,)`` float, weighted seizure share of the votes.
    neighbours : list of np.ndarray
        Index rows of each query's neighbours, nearest first.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if pool not in ("raicl", "loso"):
        raise ValueError(f"pool must be 'raicl' or 'loso', got {pool!r}")
    if weighting not in ("balanced", "uniform"):
        raise ValueError(f"weighting must be 'balanced' or 'uniform', got {weighting!r}")
    queries = np.asarray(queries, dtype=np.int64)
    if queries.size and (queries.min() < 0 or queries.max() >= len(index)):
        raise IndexError(f"query rows must be in [0, {len(index)})")
    retriever = Retriever(index, k=1, guard=guard) if pool == "raicl" else None
    vec = index.vectors
    label = index.label.astype(np.int64)
    pred = np.zeros(len(queries), dtype=np.int8)
    score = np.zeros(len(queries))
    neighbours: list[np.ndarray] = []
    other_patients = {p: index.patient != p for p in np.unique(index.patient)}  # patient -> (n,) bool
    bar = progress_bar(total=len(queries), enabled=progress, desc="knn", unit="query")
    for s in range(0, len(queries), batch_size):
        batch = queries[s : s + batch_size]
        sims = vec[batch].astype(np.float64) @ vec.astype(np.float64).T  # (batch, n)
        for j, q in enumerate(batch):
            allowed = other_patients[index.patient[q]]
            if retriever is not None:
                allowed = allowed.copy()
                allowed[retriever.background_pool(int(q))] = True
            cand = np.flatnonzero(allowed)
            if len(cand) == 0:
                raise ValueError(f"query row {q}: no candidate neighbours (a single-patient cohort?)")
            order = cand[np.argsort(-sims[j, cand], kind="stable")[:k]]
            weights = np.ones(len(order))
            if weighting == "balanced":
                class_size = np.bincount(label[cand], minlength=2).astype(np.float64)
                weights = 1.0 / np.maximum(class_size[label[order]], 1.0)
            share = float(weights[label[order] == 1].sum() / weights.sum())
            score[s + j] = share
            pred[s + j] = int(share > 0.5)
            neighbours.append(order)
        bar.update(len(batch))
    bar.close()
    return pred, score, neighbours


def knn_rows(
    windows: WindowSet,
    index: EmbeddingIndex,
    queries: np.ndarray,
    **kwargs,
) -> list[dict]:
    """`knn_vote` (``kwargs``: its options) as result rows (same fields as a run's ``results.jsonl``)."""
    index.check_matches(windows)
    pred, score, neighbours = knn_vote(index, queries, **kwargs)
    ids = np.asarray(windows.window_id)
    rows = []
    for q, p, sc, nb in zip(queries.tolist(), pred.tolist(), score.tolist(), neighbours):
        rows.append(
            {
                "window": int(q),
                "window_id": str(ids[q]),
                "patient": str(windows.patient[q]),
                "recording": str(windows.recording[q]),
                "start": float(windows.start[q]),
                "duration": float(windows.duration),
                "label": int(windows.label[q]),
                "pred": int(p),
                "status": "ok",
                "score": round(float(sc), 6),
                "variant": "knn",
                "neighbours": [int(n) for n in nb],
            }
        )
    return rows


__all__ = ["knn_rows", "knn_vote"]
