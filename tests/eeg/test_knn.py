from __future__ import annotations

import numpy as np
import pytest

from omnipress.eeg.embed import EmbeddingIndex, SignalFeatureEmbedder, build_index, l2_normalize
from omnipress.eeg.knn import knn_rows, knn_vote
from omnipress.eeg.run import select_queries
from omnipress.eeg.score import score_rows
from tests.eeg._fixtures import make_windowset


def _random_index(seed=0, n=90, patients=3) -> EmbeddingIndex:
    rng = np.random.default_rng(seed)
    patient = np.repeat([f"p{i}" for i in range(patients)], n // patients)
    return EmbeddingIndex(
        vectors=l2_normalize(rng.normal(size=(n, 6))),
        patient=patient,
        recording=patient,
        start=np.tile(np.arange(n // patients) * 2.0, patients),  # stride 2 s, windows of 4 s overlap
        duration=4.0,
        label=(rng.random(n) < 0.3).astype(int),
    )


def _reference(index: EmbeddingIndex, q: int, k: int, pool: str, weighting: str):
    n = len(index)
    allowed = []
    for i in range(n):
        if index.patient[i] != index.patient[q] or (
            pool == "raicl" and index.label[i] == 0 and i != q and abs(index.start[i] - index.start[q]) >= 4.0
        ):
            allowed.append(i)
    # RAICL's background pool is past-first: keep the patient's past background unless fewer than 1 exists
    if pool == "raicl":
        own = [i for i in allowed if index.patient[i] == index.patient[q]]
        past = [i for i in own if i < q]
        if past:
            allowed = [i for i in allowed if index.patient[i] != index.patient[q]] + past
    sims = {i: float(index.vectors[i].astype(np.float64) @ index.vectors[q].astype(np.float64)) for i in allowed}
    nearest = sorted(allowed, key=lambda i: (-sims[i], i))[:k]
    if weighting == "uniform":
        w = {i: 1.0 for i in nearest}
    else:
        sizes = {c: sum(index.label[i] == c for i in allowed) for c in (0, 1)}
        w = {i: 1.0 / sizes[index.label[i]] for i in nearest}
    share = sum(w[i] for i in nearest if index.label[i] == 1) / sum(w.values())
    return int(share > 0.5), share, nearest


@pytest.mark.parametrize("pool", ["raicl", "loso"])
@pytest.mark.parametrize("weighting", ["balanced", "uniform"])
def test_knn_matches_brute_force(pool, weighting):
    index = _random_index()
    queries = np.arange(0, len(index), 4)
    pred, score, neighbours = knn_vote(index, queries, k=5, pool=pool, weighting=weighting, batch_size=7)
    for j, q in enumerate(queries):
        ref_pred, ref_share, ref_nearest = _reference(index, int(q), 5, pool, weighting)
        assert neighbours[j].tolist() == ref_nearest
        assert pred[j] == ref_pred and score[j] == pytest.approx(ref_share)


def test_knn_never_sees_the_query_or_its_patients_seizures():
    index = _random_index(seed=3)
    queries = np.arange(len(index))
    _, _, neighbours = knn_vote(index, queries, k=7)
    for q, nb in zip(queries, neighbours):
        assert q not in nb
        same = [i for i in nb if index.patient[i] == index.patient[q]]
        assert all(index.label[i] == 0 for i in same)
        assert all(abs(index.start[i] - index.start[q]) >= index.duration for i in same)
    _, _, loso = knn_vote(index, queries, k=7, pool="loso")
    assert all(index.patient[i] != index.patient[q] for q, nb in zip(queries, loso) for i in nb)


def test_knn_rows_score_well_on_separable_windows():
    ws = make_windowset(patients=4, per_patient=24)
    index = build_index(ws, SignalFeatureEmbedder(), progress=False)
    queries = select_queries(ws.label, "all")
    rows = knn_rows(ws, index, queries, k=5)
    assert len(rows) == len(ws) and {r["variant"] for r in rows} == {"knn"}
    report = score_rows(rows)
    assert report.macro["bca"] > 0.9


def test_knn_errors():
    index = _random_index()
    with pytest.raises(ValueError, match="k must"):
        knn_vote(index, np.array([0]), k=0)
    with pytest.raises(ValueError, match="pool"):
        knn_vote(index, np.array([0]), pool="all")
    with pytest.raises(IndexError):
        knn_vote(index, np.array([10_000]))
