"""`omnipress transcribe` and `omnipress eval-asr`: one-line errors, and real runs on real speech (resumable)."""

from __future__ import annotations

import json
import shutil

import pytest

from omnipress.cli import audio as audio_cli
from omnipress.cli import main

from .real import SPEECH, needs_speech, needs_weights, whisper_tiny_en_cached


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@needs_speech
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["transcribe", "missing.wav"], "audio file not found: missing.wav"),
        (["transcribe", "{clip}", "--press", "snapkv"], "--press snapkv needs --compression"),
        (["transcribe", "{clip}", "--press", "snapkv", "--retain", "0.5"], "--retain does not apply to snapkv"),
        (["transcribe", "{clip}", "--press", "fastv", "--compression", "0.5"], "--compression does not apply"),
        (["transcribe", "{clip}", "--press", "bogus", "--compression", "0.5"], "unknown method"),
        (["transcribe", "{clip}", "--compression", "0.5"], "need --press"),
        (["transcribe", "{clip}", "--model", "/no/such/folder"], "neither whisper-tiny-en nor a model folder"),
        (["eval-asr", "/no/manifest.jsonl"], "manifest not found"),
        (["eval-asr", "{manifest}", "--methods", "full,snapkv:1.5"], "compression (fraction removed)"),
        (["eval-asr", "{manifest}", "--results", "/no/dir/r.jsonl"], "does not exist"),
        (["eval-asr", "{manifest}", "--methods", "audiokv[cov=1]:0.4"], "AudioKV takes no cov; its knobs: "),
        (["eval-asr", "{manifest}", "--methods", "audiokv[coverage]:0.4"], "name=value pairs"),
        (["transcribe", "{clip}", "--press", "headrouter[segs=2]", "--retain", "0.5"], "HeadRouter takes no segs"),
    ],
)
def test_bad_options_are_one_line_errors(capsys, argv, message):
    argv = [a.format(clip=SPEECH / "harvard_11.wav", manifest=SPEECH / "manifest.jsonl") for a in argv]
    assert run(argv) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@needs_weights
@needs_speech
def test_eval_asr_writes_results_as_it_goes_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(audio_cli, "load_model", lambda name: whisper_tiny_en_cached())
    shutil.copy(SPEECH / "harvard_15.wav", tmp_path / "clip.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "clip.wav", "text": "Help the woman get back to her feet."}) + "\n")
    results = tmp_path / "r.jsonl"
    argv = ["eval-asr", str(manifest), "--methods", "full,snapkv:0.4", "--num-beams", "1", "--results", str(results)]
    argv += ["--max-new-tokens", "20", "--quiet"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["full", "snapkv:0.4"] and all(r[-1] == "1" for r in rows)
    assert float(rows[0][1]) <= 15.0  # tiny.en gets this sentence right
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and {json.loads(x)["method"] for x in lines} == {"full", "snapkv:0.4"}
    snap = [json.loads(x) for x in lines if json.loads(x)["method"] == "snapkv:0.4"]
    assert all(r["compressed"] for r in snap)
    assert run(argv) == 0  # everything is on disk: nothing is transcribed again, no duplicate
    assert capsys.readouterr().out == out and len(results.read_text().splitlines()) == 2


@needs_weights
@needs_speech
def test_transcribe_under_a_press(capsys, monkeypatch):
    monkeypatch.setattr(audio_cli, "load_model", lambda name: whisper_tiny_en_cached())
    clip = str(SPEECH / "Front_Center.wav")
    argv = ["transcribe", clip, "--press", "snapkv", "--compression", "0.4", "--num-beams", "1", "--quiet"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].lower().startswith(f"{clip.lower()}: front")
    assert "snapkv:0.4" in out and "ms/token" in out and "MiB" in out
    argv = ["transcribe", clip, "--press", "audiokv[coverage=0]", "--compression", "0.4", "--num-beams", "1", "--quiet"]
    assert run(argv) == 0
    assert "audiokv[coverage=0]:0.4" in capsys.readouterr().out  # knobs reach the method and its label
