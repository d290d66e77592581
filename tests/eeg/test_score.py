from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from omnipress.eeg.plots import plot_confusion, plot_examples, plot_per_patient
from omnipress.eeg.score import (
    confusion,
    event_counts,
    interval_union_seconds,
    merge_events,
    score_rows,
    window_metrics,
)


def _rows(patient, label, pred, start=None, recording=None, duration=4.0):
    n = len(label)
    start = start if start is not None else [4.0 * i for i in range(n)]
    recording = recording if recording is not None else [f"{patient}_r"] * n
    return [
        {
            "window": f"{patient}{i}",
            "patient": patient,
            "recording": recording[i],
            "start": start[i],
            "duration": duration,
            "label": label[i],
            "pred": pred[i],
        }
        for i in range(n)
    ]


def test_window_metrics_match_sklearn_per_patient():
    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        label = (rng.random(40) < 0.3).astype(int)
        pred = np.where(rng.random(40) < 0.8, label, 1 - label)
        pred[rng.random(40) < 0.1] = -1
        rows += _rows(f"p{p}", label.tolist(), pred.tolist())
    report = score_rows(rows)
    for ps in report.per_patient:
        mine = [r for r in rows if r["patient"] == ps.name and r["pred"] != -1]
        y = [r["label"] for r in mine]
        yhat = [r["pred"] for r in mine]
        assert ps.bca == pytest.approx(balanced_accuracy_score(y, yhat))
        assert ps.sensitivity == pytest.approx(recall_score(y, yhat, pos_label=1))
        assert ps.specificity == pytest.approx(recall_score(y, yhat, pos_label=0))
        assert ps.f1 == pytest.approx(f1_score(y, yhat))
        n_bad = sum(r["pred"] == -1 for r in rows if r["patient"] == ps.name)
        assert ps.n_unparsable == n_bad and ps.unparsable_rate == pytest.approx(n_bad / 40)
    assert report.macro["bca"] == pytest.approx(np.mean([p.bca for p in report.per_patient]))
    parsed = [r for r in rows if r["pred"] != -1]
    assert report.pooled.bca == pytest.approx(
        balanced_accuracy_score([r["label"] for r in parsed], [r["pred"] for r in parsed])
    )


def test_unparsable_policies_and_single_class_patients():
    rows = _rows("a", [1, 1, 0, 0], [1, -1, 0, -1]) + _rows("b", [0, 0, 0], [0, 1, 0])
    excl = score_rows(rows)
    a = excl.per_patient[0]
    assert (a.tp, a.fn, a.tn, a.fp) == (1, 0, 1, 0) and a.bca == 1.0
    wrong = score_rows(rows, unparsable="wrong").per_patient[0]
    assert (wrong.tp, wrong.fn, wrong.tn, wrong.fp) == (1, 1, 1, 1) and wrong.bca == 0.5
    b = excl.per_patient[1]  # background only: BCA = specificity (sklearn averages the recalls that exist)
    assert math.isnan(b.sensitivity) and b.bca == pytest.approx(2 / 3) and b.specificity == pytest.approx(2 / 3)
    assert excl.macro["sensitivity"] == 1.0  # NaN skipped in the macro average


def test_pure_helpers():
    assert confusion(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1])) == (1, 1, 1, 1)
    m = window_metrics(0, 0, 5, 0)
    assert math.isnan(m["sensitivity"]) and m["specificity"] == 1.0 and m["bca"] == 1.0 and math.isnan(m["f1"])
    assert interval_union_seconds(np.array([0.0, 2.0, 10.0]), 4.0) == 10.0  # [0,6) + [10,14)
    assert interval_union_seconds(np.array([]), 4.0) == 0.0


def test_event_merging_and_counting():
    start = np.arange(10) * 4.0
    positive = np.array([0, 1, 1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    assert merge_events(start, 4.0, positive) == [(4.0, 16.0), (24.0, 28.0), (32.0, 40.0)]
    # shuffled input gives the same events
    perm = np.random.default_rng(1).permutation(10)
    assert merge_events(start[perm], 4.0, positive[perm]) == merge_events(start, 4.0, positive)
    # overlapping windows (stride 2 s) merge; a gap larger than merge_gap splits
    assert merge_events(np.array([0.0, 2.0, 4.0]), 4.0, np.array([1, 1, 1], bool)) == [(0.0, 8.0)]
    sparse = np.array([0.0, 40.0])
    assert len(merge_events(sparse, 4.0, np.array([1, 1], bool))) == 2
    assert merge_events(sparse, 4.0, np.array([1, 1], bool), merge_gap=36.0) == [(0.0, 44.0)]
    assert event_counts([(0, 10), (50, 60)], [(5, 6), (20, 30), (58, 70)]) == (2, 1)


def test_event_level_scores_and_false_alarms_per_hour():
    # one recording of 900 windows of 4 s = 1 hour; one seizure of 5 windows; two false-alarm runs
    n = 900
    label = np.zeros(n, int)
    label[100:105] = 1
    pred = np.zeros(n, int)
    pred[103:107] = 1  # detects the seizure (overlap), then spills over
    pred[300:302] = 1  # false alarm 1
    pred[500] = 1  # false alarm 2
    report = score_rows(_rows("a", label.tolist(), pred.tolist()))
    p = report.per_patient[0]
    assert p.events == 1 and p.events_detected == 1 and p.event_sensitivity == 1.0
    assert p.false_alarms == 2 and p.hours == pytest.approx(1.0) and p.fa_per_hour == pytest.approx(2.0)
    # a missed seizure on a second recording of the same patient
    more = _rows("a", [1, 1, 0], [0, 0, 0], recording=["a_r2"] * 3)
    for r in more:
        r["window"] += "x"
    p2 = score_rows(_rows("a", label.tolist(), pred.tolist()) + more).per_patient[0]
    assert p2.events == 2 and p2.events_detected == 1 and p2.event_sensitivity == 0.5


def test_dedupe_markdown_json_and_errors(tmp_path):
    rows = _rows("a", [1, 0], [0, 0])
    rows.append({**rows[0], "pred": 1})  # a later answer for window a0 wins
    report = score_rows(rows)
    assert report.pooled.n == 2 and report.pooled.tp == 1
    md = report.to_markdown()
    assert "| a |" in md and "macro" in md and "pooled" in md
    path = report.save(tmp_path / "score.json")
    data = json.loads(path.read_text())
    assert data["pooled"]["n"] == 2 and data["macro"]["bca"] == 1.0
    with pytest.raises(ValueError, match="no result rows"):
        score_rows([])
    with pytest.raises(ValueError, match="lack fields"):
        score_rows([{"window": 1}])
    with pytest.raises(ValueError, match="unparsable"):
        score_rows(rows, unparsable="drop")


def test_plots_are_written(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for p in range(3):
        label = (rng.random(12) < 0.4).astype(int)
        rows += _rows(f"p{p}", label.tolist(), np.where(rng.random(12) < 0.7, label, 1 - label).tolist())
    report = score_rows(rows)
    for path in (plot_confusion(report, tmp_path / "c.png"), plot_per_patient(report, tmp_path / "b.png")):
        with Image.open(path) as img:
            assert img.size[0] > 200 and np.asarray(img).std() > 0
    for i, name in enumerate(["q.png", "r1.png", "r2.png"]):
        Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)).save(tmp_path / name)
    refs = [
        {"image": "r1.png", "label": 1, "patient": "p1", "distance": 0.01},
        {"image": "r2.png", "label": 0, "patient": "p0", "distance": 0.02},
    ]
    ex_rows = [{**rows[i], "window_id": f"w{i}", "image": "q.png", "references": refs} for i in range(5)]
    out = plot_examples(ex_rows, tmp_path, tmp_path / "ex.png", n=3)
    with Image.open(out) as img:
        assert img.size[1] > img.size[0] * 0.6  # 3 rows of 3 panels
    with pytest.raises(ValueError, match="no result rows with reference"):
        plot_examples(rows, tmp_path, tmp_path / "none.png")
