from __future__ import annotations

import numpy as np
import pytest

from omnipress.eeg.embed import EmbeddingIndex, l2_normalize
from omnipress.eeg.retrieve import Retriever, medoid, nearest_to_centroid, overlaps, pad_to


def _index(vectors, patient, label, start=None, recording=None, duration=4.0) -> EmbeddingIndex:
    n = len(vectors)
    return EmbeddingIndex(
        vectors=l2_normalize(np.asarray(vectors, dtype=np.float64)),
        patient=np.asarray(patient),
        recording=np.asarray(recording if recording is not None else patient),
        start=np.asarray(start if start is not None else np.arange(n) * duration, dtype=np.float64),
        duration=duration,
        label=np.asarray(label),
    )


def _unit(deg: float) -> list[float]:
    return [np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg)), 0.0]


def _hand_built() -> EmbeddingIndex:
    """Patient A (rows 0-9) is tested; B, C, D provide seizures. Vectors are angles in the x-y plane."""
    rows = [
        # patient A: background spread around 40 deg; rows 5, 6 = A's own seizures; 9 = future background
        ("A", 0, 10),
        ("A", 0, 35),
        ("A", 0, 42),
        ("A", 0, 38),
        ("A", 0, 75),
        ("A", 1, 120),
        ("A", 1, 121),
        ("A", 0, 60),
        ("A", 0, 120),
        ("A", 0, 120),
        # patient B seizures around 100 (medoid 100), background
        ("B", 1, 90),
        ("B", 1, 100),
        ("B", 1, 110),
        ("B", 0, 0),
        # patient C seizures around 130 (medoid 130)
        ("C", 1, 128),
        ("C", 1, 130),
        ("C", 1, 132),
        ("C", 0, 0),
        # patient D seizures around 170 (medoid 170)
        ("D", 1, 165),
        ("D", 1, 170),
        ("D", 1, 175),
        ("D", 0, 5),
    ]
    patient = [r[0] for r in rows]
    label = [r[1] for r in rows]
    vectors = [_unit(r[2]) for r in rows]
    return _index(vectors, patient, label)


def test_pure_helpers():
    v = l2_normalize(np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]))
    order, dist = nearest_to_centroid(v, 2)
    assert order.tolist() == [1, 0] or order.tolist() == [1, 2]
    assert order[0] == 1 and medoid(v) == 1
    assert np.all(np.diff(dist) >= 0)
    assert pad_to([4], 3) == [4, 4, 4] and pad_to([], 2) == []
    mask = overlaps(np.array([0.0, 2.0, 4.0, 6.0]), np.array(["r", "r", "r", "s"]), 4.0, "r", 4.0)
    assert mask.tolist() == [False, True, True, False]


def test_raicl_selection_on_hand_built_embeddings():
    index = _hand_built()
    sel = Retriever(index, k=2).select(8)  # query A row 8 at 120 deg
    # seizure shots: per-patient medoids B=11 (100), C=15 (130), D=19 (170); nearest to 120: C then B
    assert sel.seizure == [15, 11]
    # background: past pool of A = rows 0,1,2,3,4,7 (angles 10,35,42,38,75,60); centroid ~43 deg -> 2 (42), 3 (38)
    assert sel.background == [2, 3]
    assert sel.background_source == "same-patient"
    np.testing.assert_allclose(
        sel.seizure_distance, [1 - np.cos(np.deg2rad(10)), 1 - np.cos(np.deg2rad(20))], atol=1e-5
    )
    # never the query, never A's own seizures (rows 5, 6 lie at the query's angle), never the future row 9
    for q in range(10):
        if index.label[q] == 1:
            continue
        s = Retriever(index, k=2).select(q)
        assert q not in s.seizure + s.background
        assert not {5, 6} & set(s.seizure + s.background)
        assert all(index.patient[r] != "A" for r in s.seizure)
        assert all(index.label[r] == 1 for r in s.seizure) and all(index.label[r] == 0 for r in s.background)


def test_past_first_then_future_when_the_past_is_too_short():
    index = _hand_built()
    pool = Retriever(index, k=2).background_pool(1)  # past = [0] only -> extended with all later background
    assert pool.tolist() == [0, 2, 3, 4, 7, 8, 9]
    sel = Retriever(index, k=2).select(1)
    assert set(sel.background) <= set(pool.tolist())
    assert Retriever(index, k=1).background_pool(1).tolist() == [0]


def test_representative_and_random_modes():
    index = _hand_built()
    rep = Retriever(index, k=2, seizure_mode="representative")
    a, b = rep.select(8), rep.select(3)
    assert a.seizure == b.seizure  # static per patient
    # meta-centre of centroids (100, 130, 170) ~ 133 deg -> nearest seizure windows C 132, C 130
    assert a.seizure == [16, 15]
    rnd = Retriever(index, k=2, seizure_mode="random", background_mode="random", seed=3)
    s1, s2 = rnd.select(8), rnd.select(8)
    assert s1.seizure == s2.seizure and s1.background == s2.background  # seeded per query
    picks = set()
    for seed in range(12):
        s = Retriever(index, k=2, seizure_mode="random", background_mode="random", seed=seed).select(8)
        assert all(index.patient[r] != "A" and index.label[r] == 1 for r in s.seizure)
        assert set(s.background) <= {0, 1, 2, 3, 4, 7}
        picks.add(tuple(sorted(s.seizure)))
    assert len(picks) > 1


def test_leakage_guard_excludes_overlapping_windows():
    # one patient with overlapping windows (duration 4 s, stride 1 s); row 9 is the query
    angles = [80, 0, 70, 20, 60, 35, 50, 40, 44, 45]
    vectors = [_unit(a) for a in angles] + [_unit(130), _unit(131)]
    patient = ["A"] * 10 + ["B", "B"]
    label = [0] * 10 + [1, 1]
    start = [float(i) for i in range(10)] + [0.0, 4.0]
    recording = ["a"] * 10 + ["b", "b"]
    index = _index(vectors, patient, label, start=start, recording=recording, duration=4.0)
    pool = Retriever(index, k=2).background_pool(9)
    assert pool.tolist() == [0, 1, 2, 3, 4, 5]  # rows 6, 7, 8 overlap [9, 13)
    sel = Retriever(index, k=2).select(9)
    assert not {6, 7, 8, 9} & set(sel.background)
    guarded = Retriever(index, k=2, guard=2.0).background_pool(9)
    assert guarded.tolist() == [0, 1, 2, 3]


def test_fallback_to_other_patients_and_clear_errors():
    vectors = [_unit(a) for a in (10, 20, 100, 50, 110)]
    index = _index(vectors, ["A", "B", "B", "C", "C"], [1, 0, 1, 0, 1])
    sel = Retriever(index, k=2).select(0)  # A has no background at all
    assert sel.background_source == "other-patients" and set(sel.background) <= {1, 3}
    only_one = _index([_unit(0), _unit(10), _unit(90)], ["A", "A", "B"], [0, 1, 0])
    with pytest.raises(ValueError, match="other patients"):
        Retriever(only_one).select(0)
    with pytest.raises(ValueError, match="seizure_mode"):
        Retriever(index, seizure_mode="closest")
    with pytest.raises(IndexError):
        Retriever(index).select(99)


def _reference_select(index: EmbeddingIndex, q: int, k: int):
    """Straightforward re-implementation of RAICL's rules with Python loops."""
    v = index.vectors.astype(np.float64)
    p = index.patient[q]
    medoids = []
    for other in sorted(set(index.patient.tolist()) - {p}):
        rows = [i for i in range(len(index)) if index.patient[i] == other and index.label[i] == 1]
        if not rows:
            continue
        c = np.mean([v[i] for i in rows], axis=0)
        medoids.append(min(rows, key=lambda i: (1 - v[i] @ c, i)))
    medoids = [m for _, _, m in sorted((1 - v[m] @ v[q], j, m) for j, m in enumerate(medoids))]
    seizure = (medoids[:k] + [medoids[0]] * k)[:k]
    bg = [
        i
        for i in range(len(index))
        if index.patient[i] == p
        and index.label[i] == 0
        and i != q
        and not (index.recording[i] == index.recording[q] and abs(index.start[i] - index.start[q]) < index.duration)
    ]
    pool = [i for i in bg if i < q]
    if len(pool) < k:
        pool = pool + [i for i in bg if i > q]
    c = np.mean([v[i] for i in pool], axis=0)
    ranked = sorted(range(len(pool)), key=lambda j: (1 - v[pool[j]] @ c, j))
    background = [pool[j] for j in ranked[:k]]
    background = background + [background[0]] * (k - len(background))
    return seizure, background


def test_matches_brute_force_reference_on_random_cohort():
    rng = np.random.default_rng(0)
    n = 120
    patient = np.array([f"p{i % 5}" for i in range(n)])
    order = np.argsort(patient, kind="stable")
    patient = patient[order]
    label = (rng.random(n) < 0.25).astype(int)
    vectors = rng.normal(size=(n, 8))
    index = _index(vectors, patient, label, start=np.tile(np.arange(24) * 2.0, 5), recording=patient, duration=4.0)
    for k in (1, 2, 3):
        retriever = Retriever(index, k=k)
        for q in range(0, n, 7):
            sel = retriever.select(q)
            seizure, background = _reference_select(index, q, k)
            assert sel.seizure == seizure, (k, q)
            assert sel.background == background, (k, q)
