"""RAICL example selection (arXiv:2601.17844, §3): which labelled windows are shown to the VLM.

For a query window ``q`` of patient ``s`` and ``k`` shots per class (default 2):

- Non-seizure shots, ``background_mode="representative"`` (paper): the pool is patient ``s``'s
  background windows that precede ``q`` (rows before ``q`` in the WindowSet, which is chronological within
  a patient); if fewer than ``k``, the pool is extended with ``s``'s later background windows. The ``k``
  pool windows nearest to the pool centroid (mean of unit vectors, not re-normalised) are picked.
- Seizure shots, ``seizure_mode="nearest"`` (paper default): every other patient ``t`` with seizures
  contributes its seizure "medoid" (the seizure window nearest to ``t``'s seizure centroid); the ``k``
  medoids nearest to ``q`` are picked. ``"representative"``: the ``k`` seizure windows of other patients
  nearest to the mean of the per-patient seizure centroids (static per test patient).
- ``"random"`` modes draw from the same pools uniformly (seeded per query).

Guarantees: the query itself, and any window of the same recording whose time span overlaps the query's
(widened by ``guard`` seconds), is never chosen; seizure shots never come from the test patient. Picks are
padded by repetition when a pool holds fewer than ``k`` windows. If patient ``s`` has no usable
background window at all, the background shots fall back to other patients' background medoids nearest
to ``q`` (flagged as ``background_source="other-patients"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from omnipress.eeg.embed import EmbeddingIndex

SeizureMode = Literal["nearest", "representative", "random"]
BackgroundMode = Literal["representative", "random"]


# --------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------
def cosine_distance(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``1 - vectors @ query`` for unit rows ``(n, d)`` and a unit ``(d,)`` query: ``(n,)``."""
    return 1.0 - np.asarray(vectors, dtype=np.float64) @ np.asarray(query, dtype=np.float64)


def nearest_to_centroid(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` rows nearest (cosine) to the rows' mean, nearest first, and their distances.

    The centroid is not re-normalised (``1 - v @ c`` ranks rows exactly like the cosine to ``c/|c|``).
    Ties keep row order. Fewer than ``k`` rows: all rows. Empty input: empty output.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    dist = 1.0 - vectors @ vectors.mean(axis=0)  # (n,)
    order = np.argsort(dist, kind="stable")[:k]
    return order, dist[order]


def medoid(vectors: np.ndarray) -> int:
    """Position of the row nearest to the centroid (RAICL's "medoid")."""
    if len(vectors) == 0:
        raise ValueError("medoid of an empty set")
    return int(nearest_to_centroid(vectors, 1)[0][0])


def pad_to(picks: list[int], k: int) -> list[int]:
    """Repeat the first pick until ``k`` picks exist (RAICL pads short pools this way)."""
    if not picks:
        return []
    return picks + [picks[0]] * (k - len(picks))


def overlaps(start: np.ndarray, recording: np.ndarray, q_start: float, q_recording: str, span: float) -> np.ndarray:
    """Mask of windows whose interval ``[start, start + span)`` overlaps the query's in the same recording.

    ``span`` is the window duration plus the guard; two windows overlap when ``|start - q_start| < span``.
    """
    return (recording == q_recording) & (np.abs(start - q_start) < span - 1e-9)


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------
@dataclass
class Selection:
    """The references chosen for one query (row indices into the WindowSet / index).

    ``seizure`` and ``background`` are ordered nearest-to-query first (``seizure``) and nearest-to-centroid
    first (``background``); the prompt decides the display order. Distances are cosine distances to the
    query.
    """

    query: int
    seizure: list[int]
    background: list[int]
    seizure_distance: list[float]
    background_distance: list[float]
    seizure_mode: str
    background_mode: str
    background_source: str = "same-patient"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Retriever:
    """Choose RAICL references from an :class:`~omnipress.eeg.embed.EmbeddingIndex`.

    Parameters
    ----------
    index : EmbeddingIndex
        Embeddings row-aligned with the WindowSet (rows are chronological within a patient).
    k : int
        Shots per class (2 in the paper: 2 seizure + 2 non-seizure images).
    seizure_mode : {"nearest", "representative", "random"}
        See the module docstring.
    background_mode : {"representative", "random"}
        See the module docstring.
    guard : float
        Extra seconds around the query within which same-recording windows are excluded (``0``: only
        windows that overlap the query are excluded).
    seed : int
        Seed of the random modes (combined with the query row, so picks do not depend on query order).
    """

    def __init__(
        self,
        index: EmbeddingIndex,
        *,
        k: int = 2,
        seizure_mode: SeizureMode = "nearest",
        background_mode: BackgroundMode = "representative",
        guard: float = 0.0,
        seed: int = 0,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if seizure_mode not in ("nearest", "representative", "random"):
            raise ValueError(f"seizure_mode must be 'nearest', 'representative' or 'random', got {seizure_mode!r}")
        if background_mode not in ("representative", "random"):
            raise ValueError(f"background_mode must be 'representative' or 'random', got {background_mode!r}")
        if guard < 0:
            raise ValueError(f"guard must be >= 0 seconds, got {guard}")
        self.index, self.k, self.guard, self.seed = index, int(k), float(guard), int(seed)
        self.seizure_mode, self.background_mode = seizure_mode, background_mode
        vec = index.vectors
        self._rows_by_patient = {p: np.flatnonzero(index.patient == p) for p in np.unique(index.patient)}
        # per patient: seizure rows, seizure centroid, seizure medoid row
        self._sz_rows: dict[str, np.ndarray] = {}
        self._sz_centroid: dict[str, np.ndarray] = {}
        self._sz_medoid: dict[str, int] = {}
        self._bg_medoid: dict[str, int] = {}
        for p, rows in self._rows_by_patient.items():
            sz = rows[index.label[rows] == 1]
            if len(sz):
                self._sz_rows[p] = sz
                self._sz_centroid[p] = vec[sz].astype(np.float64).mean(axis=0)
                self._sz_medoid[p] = int(sz[medoid(vec[sz])])
            bg = rows[index.label[rows] == 0]
            if len(bg):
                self._bg_medoid[p] = int(bg[medoid(vec[bg])])
        self._static_seizure: dict[str, tuple[list[int], np.ndarray]] = {}

    def select(self, query: int) -> Selection:
        """References for window row ``query``."""
        query = int(query)
        if not 0 <= query < len(self.index):
            raise IndexError(f"query row {query} out of range [0, {len(self.index)})")
        patient = str(self.index.patient[query])
        rng = np.random.default_rng([self.seed, query])
        seizure = self._seizure_shots(query, patient, rng)
        background, source, notes = self._background_shots(query, patient, rng)
        q = self.index.vectors[query]
        return Selection(
            query=query,
            seizure=seizure,
            background=background,
            seizure_distance=cosine_distance(self.index.vectors[seizure], q).round(6).tolist(),
            background_distance=cosine_distance(self.index.vectors[background], q).round(6).tolist(),
            seizure_mode=self.seizure_mode,
            background_mode=self.background_mode,
            background_source=source,
            notes=notes,
        )

    # -- seizure shots (other patients only) -------------------------------------------------------
    def _seizure_shots(self, query: int, patient: str, rng: np.random.Generator) -> list[int]:
        others = [p for p in self._sz_rows if p != patient]
        if not others:
            raise ValueError(
                f"no patient other than {patient!r} has seizure windows: RAICL needs seizure examples from "
                "other patients"
            )
        vec = self.index.vectors
        if self.seizure_mode == "nearest":
            medoids = np.array([self._sz_medoid[p] for p in others])
            dist = cosine_distance(vec[medoids], vec[query])
            return pad_to(medoids[np.argsort(dist, kind="stable")[: self.k]].tolist(), self.k)
        if self.seizure_mode == "random":
            pool = np.concatenate([self._sz_rows[p] for p in others])
            picks = rng.choice(pool, size=min(self.k, len(pool)), replace=False)
            return pad_to(sorted(picks.tolist(), key=lambda r: cosine_distance(vec[[r]], vec[query])[0]), self.k)
        if patient not in self._static_seizure:  # "representative": same shots for all queries of the patient
            pool = np.concatenate([self._sz_rows[p] for p in others])
            meta_centre = np.mean([self._sz_centroid[p] for p in others], axis=0)
            dist = 1.0 - vec[pool].astype(np.float64) @ meta_centre
            self._static_seizure[patient] = pad_to(pool[np.argsort(dist, kind="stable")[: self.k]].tolist(), self.k)
        return list(self._static_seizure[patient])

    # -- background shots (same patient, past first) -----------------------------------------------
    def background_pool(self, query: int) -> np.ndarray:
        """Rows of the query patient's usable background windows (past first as in RAICL)."""
        idx = self.index
        rows = self._rows_by_patient[str(idx.patient[query])]
        bg = rows[(idx.label[rows] == 0) & (rows != query)]
        leak = overlaps(
            idx.start[bg], idx.recording[bg], idx.start[query], idx.recording[query], idx.duration + self.guard
        )
        bg = bg[~leak]
        past = bg[bg < query]
        return past if len(past) >= self.k else np.concatenate([past, bg[bg > query]])

    def _background_shots(self, query: int, patient: str, rng: np.random.Generator) -> tuple[list[int], str, list]:
        pool = self.background_pool(query)
        vec = self.index.vectors
        if len(pool) == 0:
            others = np.array([r for p, r in self._bg_medoid.items() if p != patient])
            if len(others) == 0:
                raise ValueError(f"no background window available for patient {patient!r} nor any other patient")
            dist = cosine_distance(vec[others], vec[query])
            picks = others[np.argsort(dist, kind="stable")[: self.k]].tolist()
            note = f"patient {patient!r} has no usable background window; used other patients' background medoids"
            return pad_to(picks, self.k), "other-patients", [note]
        if self.background_mode == "random":
            picks = rng.choice(pool, size=min(self.k, len(pool)), replace=False).tolist()
        else:
            order, _ = nearest_to_centroid(vec[pool], self.k)
            picks = pool[order].tolist()
        return pad_to([int(p) for p in picks], self.k), "same-patient", []


__all__ = [
    "Retriever",
    "Selection",
    "cosine_distance",
    "medoid",
    "nearest_to_centroid",
    "overlaps",
    "pad_to",
]
