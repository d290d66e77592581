from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from omnipress.eeg.backends.http import OpenAIChatBackend
from omnipress.eeg.embed import SignalFeatureEmbedder, build_index
from omnipress.eeg.render import RenderConfig, render_windows
from omnipress.eeg.run import ERRORS, RESULTS, RunConfig, read_jsonl, run, select_queries
from omnipress.eeg.score import score_run
from tests.eeg._fixtures import ChatServer, make_windowset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Windows, small VLM images and a feature index on disk."""
    root = tmp_path_factory.mktemp("cohort")
    ws = make_windowset(patients=3, per_patient=20)
    ws.save(root / "windows")
    render_windows(ws, root / "images", configs={"vlm": RenderConfig(kind="vlm", size=96)}, progress=False)
    index = build_index(ws, SignalFeatureEmbedder(), progress=False)
    index.save(root / "index")
    return ws, index, root


def _backend(server, **kw):
    return OpenAIChatBackend(server.base_url, "stub", api_key_env=None, wait_5xx=0.01, jitter=0.0, **kw)


def test_select_queries_protocols():
    label = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    assert select_queries(label, "every", 5).tolist() == [0, 5, 10]
    assert select_queries(label, "all_seizures", 5).tolist() == [0, 1, 2, 5, 6, 10, 11]
    assert select_queries(label, "all").tolist() == list(range(12))
    patient = np.array(["a"] * 6 + ["b"] * 6)
    assert select_queries(label, "all", patient=patient, patients=["b"]).tolist() == list(range(6, 12))
    with pytest.raises(ValueError, match="unknown patients"):
        select_queries(label, "all", patient=patient, patients=["z"])
    with pytest.raises(ValueError, match="scheme"):
        select_queries(label, "half")


def test_run_streams_rows_and_resumes_without_repeating(cohort, tmp_path):
    ws, index, root = cohort
    config = RunConfig(variant="raicl", queries="every", every=3)
    with ChatServer() as server, _backend(server, concurrency=2) as backend:
        summary = run(ws, backend, tmp_path, images=root / "images", index=index, config=config, progress=False)
        assert summary.planned == 20 and summary.answered == 20 and summary.remaining == 0
        rows = read_jsonl(tmp_path / RESULTS)
        assert sorted(r["window"] for r in rows) == list(range(0, 60, 3))
        row = rows[0]
        assert row["label"] == int(ws.label[row["window"]]) and row["pred"] in (-1, 0, 1)
        assert [ref["label"] for ref in row["references"]] == [1, 1, 0, 0]
        assert all(ref["patient"] != row["patient"] for ref in row["references"][:2])
        assert all(ref["patient"] == row["patient"] for ref in row["references"][2:])
        assert (root / "images" / row["image"]).exists()
        assert sum(r["pred"] == -1 for r in rows) == summary.unparsable
        n_requests = len(server.requests)
        again = run(ws, backend, tmp_path, images=root / "images", index=index, config=config, progress=False)
        assert again.already_done == 20 and again.answered == 0 and len(server.requests) == n_requests
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["config"]["variant"] == "raicl" and meta["backend"]["model"] == "stub"
    report = score_run(tmp_path)
    assert report.pooled.n == 20


def test_resume_refuses_other_settings(cohort, tmp_path):
    ws, index, root = cohort
    with ChatServer() as server, _backend(server) as backend:
        run(ws, backend, tmp_path, images=root / "images", index=index, config=RunConfig(limit=2), progress=False)
        with pytest.raises(ValueError, match="different settings"):
            run(
                ws,
                backend,
                tmp_path,
                images=root / "images",
                index=index,
                config=RunConfig(variant="base", limit=2),
                progress=False,
            )
        with pytest.raises(ValueError, match="needs an embedding index"):
            run(ws, backend, tmp_path / "other", images=root / "images", config=RunConfig(), progress=False)


def test_failed_requests_are_logged_and_retried_on_resume(cohort, tmp_path):
    ws, _, root = cohort
    broken = {"on": True}

    def flaky(n, payload):
        if broken["on"] and n % 2 == 1:
            return 500, {"error": "boom"}, {}, 0.0
        return 200, ChatServer.completion("FINAL DECISION: NON-SEIZURE"), {}, 0.0

    config = RunConfig(variant="base", queries="all", limit=10)
    with ChatServer(flaky) as server, _backend(server, max_attempts=1) as backend:
        first = run(ws, backend, tmp_path, images=root / "images", config=config, progress=False)
        assert first.answered == 5 and first.errors == 5
        assert len(read_jsonl(tmp_path / ERRORS)) == 5
        broken["on"] = False
        second = run(ws, backend, tmp_path, images=root / "images", config=config, progress=False)
        assert second.already_done == 5 and second.answered == 5
    windows = [r["window"] for r in read_jsonl(tmp_path / RESULTS)]
    assert sorted(windows) == list(range(10))


def test_too_many_consecutive_failures_stop_the_run(cohort, tmp_path):
    ws, _, root = cohort
    with ChatServer(lambda n, p: (503, {"error": "down"}, {}, 0.0)) as server, _backend(server, max_attempts=1) as b:
        with pytest.raises(RuntimeError, match="in a row"):
            run(
                ws,
                b,
                tmp_path,
                images=root / "images",
                config=RunConfig(variant="base", queries="all"),
                progress=False,
                max_consecutive_errors=4,
            )
        assert len(server.requests) == 4


def test_truncated_last_line_is_repaired(tmp_path):
    path = tmp_path / RESULTS
    path.write_text('{"window": 1}\n{"window": 2}\n{"wind')
    assert [r["window"] for r in read_jsonl(path)] == [1, 2]
    read_jsonl(path, repair=True)
    assert path.read_text() == '{"window": 1}\n{"window": 2}\n'
    path.write_text('{"window": 1}\n{"wi\n{"window": 3}\n')
    with pytest.raises(ValueError, match="corrupt line 2"):
        read_jsonl(path)


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "omnipress.eeg.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_run_resumes_with_no_duplicates_and_no_gaps(cohort, tmp_path):
    _, _, root = cohort
    out = tmp_path / "run"

    def slow(n, payload):
        return 200, ChatServer.completion("Looks rhythmic.\nFINAL DECISION: SEIZURE"), {}, 0.08

    with ChatServer(slow) as server:
        args = [
            "run",
            "--windows",
            str(root / "windows"),
            "--images",
            str(root / "images"),
            "--index",
            str(root / "index"),
            "--out",
            str(out),
            "--backend",
            "http",
            "--base-url",
            server.base_url,
            "--model",
            "stub",
            "--queries",
            "all",
            "--concurrency",
            "2",
            "--quiet",
            "--api-key-env",
            "",
        ]
        proc = _cli(args)
        deadline = time.time() + 60
        results = out / RESULTS
        while time.time() < deadline:
            if results.exists() and results.read_text().count("\n") >= 8:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = read_jsonl(results)
        assert 8 <= len(partial) < 60
        with results.open("a") as f:  # simulate a crash in the middle of writing one more line
            f.write('{"window": 999, "label')
        done = subprocess.run(
            proc.args,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    rows = read_jsonl(results)
    windows = [r["window"] for r in rows]
    assert len(windows) == len(set(windows)) == 60  # no duplicates
    assert sorted(windows) == list(range(60))  # no gaps
    first_ids = {r["window"] for r in partial}
    assert first_ids <= set(windows)
    # answered windows were not asked again: one request per window (+ at most the in-flight ones at the kill)
    assert len(server.requests) <= 60 + 2
