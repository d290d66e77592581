from __future__ import annotations

import json

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


def test_errors_and_help(tmp_path, capsys):
    assert main(["index", "--windows", str(tmp_path / "missing"), "--out", str(tmp_path / "i")]) == 1
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"synth", "prepare", "render", "index", "knn", "run", "score"} <= set(commands)


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
