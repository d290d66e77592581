from __future__ import annotations

import json
import socket
import time

import pytest

from omnipress.eeg.cli import build_parser, main
from omnipress.eeg.run import RESULTS, read_jsonl
from tests.eeg._fixtures import ChatServer


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """synth -> prepare -> render -> index through the CLI, once."""
    root = tmp_path_factory.mktemp("cli")
    assert (
        main(["synth", "--out", str(root / "edf"), "--patients", "4", "--minutes", "1", "--recordings", "1", "--quiet"])
        == 0
    )
    assert len(list((root / "edf").glob("*.edf"))) == 4
    assert main(["prepare", str(root / "edf"), "--out", str(root / "windows"), "--quiet"]) == 0
    assert (
        main(
            [
                "render",
                "--windows",
                str(root / "windows"),
                "--out",
                str(root / "images"),
                "--vlm-size",
                "112",
                "--vision-size",
                "64",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["index", "--windows", str(root / "windows"), "--out", str(root / "index"), "--quiet"]) == 0
    return root


def test_stages_write_their_outputs_and_skip_finished_work(pipeline, capsys):
    root = pipeline
    from omnipress.eeg.embed import EmbeddingIndex
    from omnipress.eeg.windows import WindowSet

    ws = WindowSet.load(root / "windows")
    assert len(ws) == 4 * 15 and ws.label.sum() > 0
    assert len(list((root / "images" / "vlm").rglob("*.png"))) == len(ws)
    assert len(EmbeddingIndex.load(root / "index")) == len(ws)
    capsys.readouterr()
    assert (
        main(
            [
                "render",
                "--windows",
                str(root / "windows"),
                "--out",
                str(root / "images"),
                "--vlm-size",
                "112",
                "--vision-size",
                "64",
                "--quiet",
            ]
        )
        == 0
    )
    assert "rendered 0 windows" in capsys.readouterr().out
    assert main(["index", "--windows", str(root / "windows"), "--out", str(root / "index"), "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_knn_run_score_and_plots(pipeline, tmp_path, capsys):
    root = pipeline
    assert (
        main(
            [
                "knn",
                "--windows",
                str(root / "windows"),
                "--index",
                str(root / "index"),
                "--out",
                str(tmp_path / "knn"),
                "--queries",
                "all",
            ]
        )
        == 0
    )
    assert "macro BCA" in capsys.readouterr().out
    with ChatServer() as server:
        code = main(
            [
                "run",
                "--windows",
                str(root / "windows"),
                "--images",
                str(root / "images"),
                "--index",
                str(root / "index"),
                "--out",
                str(tmp_path / "raicl"),
                "--base-url",
                server.base_url,
                "--model",
                "stub",
                "--api-key-env",
                "",
                "--queries",
                "all_seizures",
                "--every",
                "5",
                "--concurrency",
                "2",
                "--quiet",
            ]
        )
        assert code == 0
    rows = read_jsonl(tmp_path / "raicl" / RESULTS)
    assert len(rows) >= 12 and all(len(r["references"]) == 4 for r in rows)
    capsys.readouterr()
    assert (
        main(["score", str(tmp_path / "raicl"), "--plots", str(tmp_path / "plots"), "--json", str(tmp_path / "s.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert "| pooled |" in out and "macro" in out
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"confusion.png", "per_patient.png", "examples.png"}
    assert json.loads((tmp_path / "s.json").read_text())["pooled"]["n"] == len(rows)
    assert main(["score", str(tmp_path / "raicl"), str(tmp_path / "knn")]) == 0
    assert "| run | macro BCA |" in capsys.readouterr().out


def test_run_with_the_local_tiny_vlm(pipeline, tmp_path):
    root = pipeline
    template = tmp_path / "short.txt"
    template.write_text("References:\n[[REFERENCES]]\nTest EEG Image:\n[[TEST_IMAGE]]\nDecide.")
    code = main(
        [
            "run",
            "--windows",
            str(root / "windows"),
            "--images",
            str(root / "images"),
            "--index",
            str(root / "index"),
            "--out",
            str(tmp_path / "local"),
            "--backend",
            "local",
            "--model",
            "tiny:qwen2_vl",
            "--template",
            str(template),
            "--order",
            "patient_first",
            "--limit",
            "2",
            "--max-tokens",
            "4",
            "--press",
            "mixkv-snapkv",
            "--budget",
            "48",
            "--quiet",
        ]
    )
    assert code == 0
    rows = read_jsonl(tmp_path / "local" / RESULTS)
    assert len(rows) == 2 and all(r["info"]["kv_bytes_kept"] < r["info"]["kv_bytes_full"] for r in rows)
    meta = json.loads((tmp_path / "local" / "run.json").read_text())
    assert meta["backend"]["press"] == "MixKV(SnapKV)"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_user_errors_are_one_line_and_exit_1(pipeline, tmp_path, capsys):
    root, missing = pipeline, str(tmp_path / "missing")
    windows, index = str(root / "windows"), str(root / "index")
    cases = [
        (["synth", "--out", str(tmp_path / "s"), "--minutes", "0.2"], "need at least 30 s"),
        (["prepare", missing, "--out", str(tmp_path / "w")], "no such file or directory"),
        (["render", "--windows", missing, "--out", str(tmp_path / "i")], "no WindowSet directory"),
        (["index", "--windows", windows, "--out", str(tmp_path / "x"), "--embedder", "clip:/nonexistent"],
         "CLIP model folder /nonexistent does not exist"),
        (["knn", "--windows", windows, "--index", missing, "--out", str(tmp_path / "k")], "no embedding index"),
        (["run", "--windows", windows, "--index", index, "--images", str(root / "images"), "--out",
          str(tmp_path / "r"), "--backend", "local", "--model", "/nonexistent/vlm"], "model folder /nonexistent/vlm"),
        (["run", "--windows", windows, "--index", index, "--images", str(root / "images"), "--out",
          str(tmp_path / "r"), "--backend", "local", "--model", "tiny:qwen2_vl", "--device", "gpu7"],
         "device 'gpu7' is not available here"),
        (["score", missing], "no results at"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main([*argv, "--quiet"]) == 1, argv
        assert message in _one_error_line(capsys), argv


def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys):
    for argv, message in [
        (["synth", "--out", str(tmp_path), "--patients", "0"], "argument --patients: must be > 0, got 0"),
        (["knn", "--windows", "w", "--index", "i", "--out", "o", "--k", "two"], "argument --k: expected an integer"),
        (["prepare", "x", "--out", "o", "--rule", "some"], "argument --rule: invalid choice"),
        (["score"], "the following arguments are required: runs"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        line = _one_error_line(capsys)
        assert message in line and line.endswith("(see --help)"), line


def test_debug_shows_the_traceback(tmp_path, capsys):
    for argv in (["--debug", "score", str(tmp_path / "missing")], ["score", str(tmp_path / "missing"), "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "FileNotFoundError" in err
        assert err.strip().splitlines()[-1] == f"error: no results at {tmp_path / 'missing'}"


def test_a_refused_connection_stops_the_run_at_once(pipeline, tmp_path, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    root = pipeline
    argv = ["run", "--windows", str(root / "windows"), "--index", str(root / "index"), "--images",
            str(root / "images"), "--out", str(tmp_path / "r"), "--base-url", url, "--model", "m",
            "--quiet"]  # fmt: skip
    start = time.perf_counter()
    assert main(argv) == 1  # 30 queries; the default backoff would wait 15 s for each
    assert time.perf_counter() - start < 3.0
    line = _one_error_line(capsys)
    assert f"cannot connect to {url}/chat/completions" in line and "Connection refused" in line


def test_help_is_plain_text_and_shows_defaults():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"synth", "prepare", "render", "index", "knn", "run", "score"} <= set(commands)
    for text in [parser.format_help(), *(c.format_help() for c in commands.values())]:
        assert not any(markup in text for markup in ("``", ":class:", ":func:", "::", ".. ")), text
    synth, prepare, run = (" ".join(commands[c].format_help().split()) for c in ("synth", "prepare", "run"))
    assert "--patients PATIENTS number of patients (default: 20)" in synth
    assert "(default: 2 4)" in synth and "(default: 0.5 40.0)" in prepare and "(default: 256.0)" in prepare
    assert "--allow-truncated" in prepare and "(default: the window length)" in prepare
    assert "(default: http://127.0.0.1:8000/v1)" in run and "(default: 3)" in run


def test_synth_and_prepare_skip_finished_work_and_every_stage_shows_progress(pipeline, tmp_path, capsys):
    edf, windows = tmp_path / "edf", tmp_path / "windows"
    synth = [
        "synth",
        "--out",
        str(edf),
        "--patients",
        "2",
        "--minutes",
        "1",
        "--recordings",
        "1",
        "--seizures",
        "1",
        "1",
    ]
    assert main(synth) == 0
    out, err = capsys.readouterr()
    assert "wrote 2 recordings" in out and "synth: 100%" in err
    stamps = {f: f.stat().st_mtime_ns for f in edf.glob("*.edf")}
    assert main([*synth, "--quiet"]) == 0
    assert f"2 recordings in {edf} are up to date" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in edf.glob("*.edf")} == stamps  # not written again
    (edf / "p02_r01.edf").unlink()
    assert main([*synth, "--quiet"]) == 0
    assert "wrote 1 recordings to" in capsys.readouterr().out and (edf / "p02_r01.edf").stat().st_mtime_ns
    assert (edf / "p01_r01.edf").stat().st_mtime_ns == stamps[edf / "p01_r01.edf"]

    assert main(["prepare", str(edf), "--out", str(windows)]) == 0
    assert "prepare: 100%" in capsys.readouterr().err
    saved = (windows / "windows.npz").stat().st_mtime_ns
    assert main(["prepare", str(edf), "--out", str(windows), "--quiet"]) == 0
    assert "is up to date" in capsys.readouterr().out and (windows / "windows.npz").stat().st_mtime_ns == saved

    root = pipeline
    knn = ["knn", "--windows", str(root / "windows"), "--index", str(root / "index"), "--out", str(tmp_path / "k")]
    assert main(knn) == 0 and "knn: 100%" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "k"), "--plots", str(tmp_path / "plots")]) == 0
    err = capsys.readouterr().err
    assert "score: 100%" in err and "plots: 100%" in err


def test_mounted_under_the_main_cli(tmp_path, capsys):
    from omnipress.cli import main as omnipress_main

    assert (
        omnipress_main(
            [
                "eeg",
                "synth",
                "--out",
                str(tmp_path),
                "--patients",
                "1",
                "--minutes",
                "1",
                "--recordings",
                "1",
                "--seizures",
                "1",
                "1",
            ]
        )
        == 0
    )
    assert "wrote 1 recordings" in capsys.readouterr().out
