"""Manifests (paths relative to the manifest, clear errors) and the resumable results file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from omnipress.asr import ResultsFile, load_audio, read_manifest

from .real import SPEECH, needs_speech


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


@needs_speech
def test_manifest_paths_are_relative_to_its_folder_and_audio_loads(tmp_path, monkeypatch):
    items = read_manifest(SPEECH / "manifest.jsonl")
    assert len(items) == 26 and items[0].key == "harvard_01.wav" and items[0].audio == SPEECH / "harvard_01.wav"
    assert items[0].text == "The birch canoe slid on the smooth planks." and items[0].meta["voice"] == "en-us"
    folder = tmp_path / "set"
    (folder / "clips").mkdir(parents=True)
    shutil.copy(SPEECH / "Front_Center.wav", folder / "clips" / "a.wav")
    _write(folder / "m.jsonl", [{"audio": "clips/a.wav", "text": "Front center."}, ""])
    monkeypatch.chdir(tmp_path)  # relative to the manifest, not the working directory
    (item,) = read_manifest("set/m.jsonl")
    samples = load_audio(item)
    assert samples.dtype == np.float32 and 1.2 < samples.size / 16000 < 1.6  # 48 kHz recording resampled


def test_manifest_errors_name_the_line(tmp_path):
    m = tmp_path / "m.jsonl"
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(m)
    _write(m, ['{"audio": "x.wav", "text": "hi"}'])
    with pytest.raises(FileNotFoundError, match=r"m.jsonl:1: audio file not found"):
        read_manifest(m)
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    _write(m, ['{"audio": "x.wav", "text": "hi"}', "{not json"])
    with pytest.raises(ValueError, match=r"m.jsonl:2: not a JSON object"):
        read_manifest(m)
    _write(m, ['{"audio": "x.wav"}'])
    with pytest.raises(ValueError, match=r":1: `text`"):
        read_manifest(m)
    _write(m, ['{"audio": "x.wav", "text": "a"}', '{"audio": "x.wav", "text": "b"}'])
    with pytest.raises(ValueError, match="listed twice"):
        read_manifest(m)
    _write(m, ["", ""])
    with pytest.raises(ValueError, match="no utterance"):
        read_manifest(m)


def test_corrupt_audio_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 3)
    with pytest.raises(ValueError, match=r"bad\.wav"):
        load_audio(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_audio(tmp_path / "missing.wav")


def test_results_resume_without_duplicates_and_cut_a_torn_line(tmp_path):
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path, ("method", "utterance"))
    assert results.append({"method": "full", "utterance": "a", "wer": 0.1})
    assert results.append({"method": "full", "utterance": "b", "wer": 0.2})
    assert not results.append({"method": "full", "utterance": "a", "wer": 9.9})  # already there
    with path.open("a") as handle:
        handle.write('{"method": "full", "utterance": "c", "we')  # a crash mid-write
    again = ResultsFile(path, ("method", "utterance"))
    assert len(again) == 2 and again.done(method="full", utterance="b") and not again.done(method="full", utterance="c")
    assert again.get(method="full", utterance="a")["wer"] == 0.1
    assert again.append({"method": "full", "utterance": "c", "wer": 0.3})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    with pytest.raises(KeyError, match="utterance"):
        again.append({"method": "x"})


def test_a_corrupt_middle_line_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"method": "a", "utterance": "1"}\n{oops}\n{"method": "a", "utterance": "2"}\n')
    with pytest.raises(ValueError, match="corrupt line"):
        ResultsFile(path, ("method", "utterance"))
