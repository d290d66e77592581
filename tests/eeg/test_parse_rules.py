"""The strict (default) and the official answer-parsing rules, in runs and in `score`."""

from __future__ import annotations

import json

import pytest

from omnipress.eeg.cli import main
from omnipress.eeg.prompts import (
    NON_SEIZURE,
    SEIZURE,
    UNPARSABLE,
    parse_decision,
    parse_official,
    rules_disagree,
)
from omnipress.eeg.render import RenderConfig, render_windows
from omnipress.eeg.run import RESULTS, RunConfig, read_jsonl, run
from omnipress.eeg.score import parse_disagreements, reparse, score_rows
from tests.eeg._fixtures import ChatServer, make_windowset

# (answer, strict, official)
CASES = [
    # the cases: the official rule finds the phrase anywhere, the strict rule wants it alone on a line
    ("FINAL DECISION: SEIZURE (focal)", UNPARSABLE, SEIZURE),
    ("Rhythmic 3 Hz spikes.\nSo my FINAL DECISION: SEIZURE", UNPARSABLE, SEIZURE),
    ("FINAL DECISION: SEIZURE or FINAL DECISION: NON-SEIZURE", UNPARSABLE, SEIZURE),  # echoed instruction
    ("The answer format is\nFINAL DECISION: SEIZURE\nFINAL DECISION: NON-SEIZURE", UNPARSABLE, SEIZURE),
    # seizure is searched first, anywhere: a changed mind still reads as seizure officially
    ("FINAL DECISION: SEIZURE\nOn reflection, an artefact.\nFINAL DECISION: NON-SEIZURE", NON_SEIZURE, SEIZURE),
    # markdown and spacing variants only the strict rule normalises
    ("**Final Decision:** NON-SEIZURE", NON_SEIZURE, UNPARSABLE),
    ("FINAL DECISION: NON SEIZURE", NON_SEIZURE, UNPARSABLE),
    ("FINAL DECISION: NON\u2013SEIZURE", NON_SEIZURE, UNPARSABLE),  # en dash
    ("FINAL DECISION : SEIZURE", SEIZURE, UNPARSABLE),
    # both agree
    ("Frequency: 3 Hz.\nFINAL DECISION: SEIZURE", SEIZURE, SEIZURE),
    ("final decision: non-seizure", NON_SEIZURE, NON_SEIZURE),
    ("**FINAL DECISION: NON-SEIZURE**", NON_SEIZURE, NON_SEIZURE),
    ("I cannot tell.", UNPARSABLE, UNPARSABLE),
    ("", UNPARSABLE, UNPARSABLE),
    (None, UNPARSABLE, UNPARSABLE),
]


@pytest.mark.parametrize(("answer", "strict", "official"), CASES)
def test_both_rules(answer, strict, official):
    assert parse_decision(answer).value == strict
    assert parse_decision(answer, rule="strict").value == strict
    assert parse_official(answer).value == official
    assert parse_decision(answer, rule="official").value == official
    assert rules_disagree(answer) == (strict != official)
    if official != UNPARSABLE:
        assert parse_official(answer).line in ("FINAL DECISION: SEIZURE", "FINAL DECISION: NON-SEIZURE")
    if not (answer or "").strip():
        assert parse_official(answer).status == "empty"


def test_rule_errors():
    with pytest.raises(ValueError, match="parse rule"):
        parse_decision("x", rule="lenient")
    with pytest.raises(ValueError, match="strict rule"):
        parse_decision("x", rule="official", require_last_line=True)
    with pytest.raises(ValueError, match="parse must be one of"):
        RunConfig(parse="lenient")
    with pytest.raises(ValueError, match="strict parse rule"):
        RunConfig(parse="official", require_last_line=True)


def test_reparse_and_disagreement_counts():
    rows = [
        {"window": i, "patient": "p", "recording": "r", "start": 4.0 * i, "duration": 4.0, "label": i % 2, "pred": s}
        | {"answer": a}
        for i, (a, s, _) in enumerate(CASES)
    ]
    knn_row = {"window": 99, "patient": "p", "recording": "r", "start": 400.0, "duration": 4.0, "label": 1, "pred": 1}
    official = reparse([*rows, knn_row], "official")
    assert [r["pred"] for r in official[:-1]] == [o for _, _, o in CASES]
    assert official[-1] is knn_row  # no answer: kept as it is
    assert all(r["parse"] == "official" for r in official[:-1])
    n_differ = sum(s != o for _, s, o in CASES)
    assert parse_disagreements([*rows, knn_row]) == (n_differ, len(CASES))
    report = score_rows(rows, parse="official")
    assert report.settings["parse"] == "official" and report.settings["rules_disagree"] == n_differ
    assert report.pooled.n_unparsable == sum(o == UNPARSABLE for _, _, o in CASES)
    assert score_rows(rows).pooled.n_unparsable == sum(s == UNPARSABLE for _, s, _ in CASES)


def test_run_with_the_official_rule_and_score_reparses_without_asking(tmp_path, capsys):
    ws = make_windowset(patients=2, per_patient=8)
    render_windows(ws, tmp_path / "images", configs={"vlm": RenderConfig(kind="vlm", size=64)}, progress=False)
    answers = [a for a, _, _ in CASES if a]  # 14 non-empty answers, one per window (16 windows: last two repeat)

    def script(n, payload):
        return 200, ChatServer.completion(answers[n % len(answers)]), {}, 0.0

    config = RunConfig(variant="base", queries="all", parse="official")
    with ChatServer(script) as server:
        from omnipress.eeg.backends.http import OpenAIChatBackend

        with OpenAIChatBackend(server.base_url, "stub", api_key_env=None) as backend:
            summary = run(ws, backend, tmp_path / "run", images=tmp_path / "images", config=config, progress=False)
        rows = sorted(read_jsonl(tmp_path / "run" / RESULTS), key=lambda r: r["window"])
        assert [r["pred"] for r in rows] == [parse_official(answers[i % len(answers)]).value for i in range(16)]
        assert all(r["parse"] == "official" for r in rows)
        assert summary.unparsable == sum(r["pred"] == UNPARSABLE for r in rows)
        n_requests = len(server.requests)
        capsys.readouterr()
        assert main(["score", str(tmp_path / "run"), "--parse", "strict", "--json", str(tmp_path / "s.json")]) == 0
        out = capsys.readouterr().out
        assert len(server.requests) == n_requests  # nothing asked again
    strict = [parse_decision(answers[i % len(answers)]).value for i in range(16)]
    differ = sum(s != o for s, o in zip(strict, (r["pred"] for r in rows)))
    assert f"re-parsed with the strict rule; the strict and official rules decide {differ} of 16 answers" in out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["pooled"]["n_unparsable"] == strict.count(UNPARSABLE)
    assert saved["settings"]["rules_disagree"] == differ
    assert main(["score", str(tmp_path / "run")]) == 0
    assert "decisions as recorded" in capsys.readouterr().out
