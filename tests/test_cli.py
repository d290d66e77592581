"""`omnipress demo|compare|eeg`: the table and report, JSON, progress, help, and one-line errors for user mistakes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest

import omnipress
from omnipress.cli import CLIError, main
from omnipress.cli.options import FAMILIES, PRESS_NAMES
from omnipress.cli.progress import Progress


def run(argv: list[str]) -> int:
    """`main(argv)`'s exit status, also where argparse exits."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def python_m_omnipress(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omnipress", *args], capture_output=True, text=True, timeout=120)


# -- tables, reports, JSON, progress ---------------------------------------------------------------------------------
def test_demo_prints_the_report(capsys):
    assert main(["demo", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "mixkv-adakv" in out and "KV memory" in out and "freed" in out


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_compresses_every_family(tmp_path, capsys, family):
    """The demo's budget follows the prompt, so even the short text-only prompts are compressed."""
    path = tmp_path / "demo.json"
    assert main(["demo", "--family", family, "--max-new-tokens", "1", "--quiet", "--json", str(path)]) == 0
    press = json.loads(path.read_text())["rows"][1]
    assert press["press"] == "mixkv-adakv" and press["compressed"]
    assert press["report"]["tokens_after"] < press["report"]["tokens_before"]
    assert "not compressed" not in capsys.readouterr().out


def test_compare_runs_several_presses_on_video_with_progress_on_stderr(capsys):
    argv = ["compare", "--presses", "snapkv,pyramidkv,mixkv-snapkv", "--budget", "32", "--video-frames", "4"]
    assert main([*argv, "--max-new-tokens", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("model: ") and "omnipress:" not in captured.out
    for name in ("none", "snapkv", "pyramidkv", "mixkv-snapkv"):
        assert f"\n{name} " in captured.out
    assert "video" in captured.out
    for k, name in enumerate(("untouched model", "snapkv", "pyramidkv", "mixkv-snapkv"), start=1):
        assert f"[{k}/4] {name} (elapsed " in captured.err


def test_a_press_that_keeps_everything_says_so(tmp_path, capsys):
    """kept/head is the whole prompt (not 0), and the row says that nothing was compressed."""
    path = tmp_path / "table.json"
    argv = ["compare", "--presses", "snapkv", "--budget", "100000", "--max-new-tokens", "1", "--json", str(path)]
    assert main(argv) == 0
    table = json.loads(path.read_text())
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("snapkv "))
    assert row.split()[1] == str(table["prompt_tokens"]) and row.endswith("not compressed")
    snapkv = table["rows"][1]
    assert snapkv["kept_per_head"] == table["prompt_tokens"] and snapkv["compressed"] is False
    assert snapkv["note"] == "not compressed"


def test_json_saves_the_table(tmp_path, capsys):
    path = tmp_path / "table.json"
    argv = ["compare", "--presses", "snapkv,mixkv-adakv", "--budget", "40", "--max-new-tokens", "2", "--quiet"]
    assert main([*argv, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    table = json.loads(path.read_text())
    assert table["budget"] == 40 and table["window"] == 20 and table["prompt_tokens"] > 40
    assert table["modality_tokens"]["image"] > 0
    assert [row["press"] for row in table["rows"]] == ["none", "snapkv", "mixkv-adakv"]
    none, snapkv, mixkv = table["rows"]
    assert none["report"] is None and none["kept_per_head"] == table["prompt_tokens"]
    assert snapkv["compressed"] and snapkv["kept_per_head"] == 40 and snapkv["kv_bytes"] < none["kv_bytes"]
    assert mixkv["report"]["press"] == "MixKV(AdaKV)" and 0 <= mixkv["same_tokens"] <= 1
    assert f"{snapkv['kv_bytes'] / 2**20:.3f}" in out


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_compare_on_a_saved_model_folder(tmp_path, capsys, family):
    """`--model` loads any supported model from disk with its tokenizer/processor and builds the prompt itself."""
    from omnipress.testing import local_tokenizer, real_image, tiny_model

    folder = tmp_path / family
    tiny_model(family).save_pretrained(folder)
    local_tokenizer(family).save_pretrained(folder)
    (tmp_path / "context.txt").write_text("The secret code is 4721. " * 20)
    argv = ["compare", "--model", str(folder), "--presses", "snapkv,mixkv-adakv", "--budget", "16", "--window", "4"]
    argv += ["--max-new-tokens", "2", "--text-file", str(tmp_path / "context.txt")]
    if family == "qwen2_vl":
        real_image("coffee").save(tmp_path / "coffee.png")
        argv += ["--image", str(tmp_path / "coffee.png")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert str(folder) in captured.out and "mixkv-adakv" in captured.out and "KV memory" in captured.out
    assert f"loading {folder}" in captured.err


def test_progress_redraws_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(stream=stream, interval=0.01)
    with progress.step("[2/3] snapkv"):
        time.sleep(0.05)
    text = stream.getvalue()
    assert text.count("\r\033[Komnipress: [2/3] snapkv ") >= 2 and text.endswith("\r\033[K")
    quiet = Terminal()
    with Progress(enabled=False, stream=quiet).step("x"):
        pass
    assert quiet.getvalue() == ""


# -- one-line errors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["compare", "--presses", "snapkv,nope"], 2, "unknown press 'nope' in --presses; choose from: snapkv,"),
        (["compare", "--presses", " , "], 2, "--presses is empty; give one or more of: snapkv,"),
        (["compare", "--video", "clip.mp4"], 2, "--video needs --model"),
        (["compare", "--text-file", "a.txt", "--image", "a.png"], 2, "--image and --text-file need --model"),
        (["compare", "--gguf-file", "m.gguf"], 2, "--gguf-file needs --model"),
        (["compare", "--model", "/nonexistent", "--video-frames", "2"], 2, "--video-frames is for the tiny built-in"),
        (["compare", "--model", "/nonexistent"], 1, "model folder /nonexistent does not exist"),
        (["compare", "--model", "./models/missing"], 1, "model folder ./models/missing does not exist"),
        (["compare", "--budget", "8", "--window", "16"], 2, "budget (8) is smaller than the observation window (16)"),
        (["compare", "--budget", "0"], 2, "argument --budget: expected a positive integer, got '0'"),
        (["compare", "--json", "/nonexistent/table.json"], 2, "the folder /nonexistent does not exist"),
        (["demo", "--family", "gpt5"], 2, "invalid choice: 'gpt5' (choose from 'llama',"),
        (["compare", "--family", "llama", "--video-frames", "2"], 1, "(llama) does not accept video input"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, status, message):
    assert run([*argv, "--quiet"]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"omnipress {argv[0]}: error: ") and message in err


def test_missing_files_are_named(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    assert run(["compare", "--model", str(folder), "--image", str(tmp_path / "cat.png")]) == 1
    assert capsys.readouterr().err == f"omnipress compare: error: file not found: {tmp_path / 'cat.png'}\n"
    assert run(["compare", "--model", str(folder), "--gguf-file", "m.gguf"]) == 1
    assert "GGUF file m.gguf not found in the model folder" in capsys.readouterr().err
    assert run(["compare", "--model", str(folder), "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"omnipress compare: error: cannot load the model {folder}: ")


def test_a_hub_id_offline_says_nothing_can_be_downloaded(monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert run(["compare", "--model", "omnipress-tests/no-such-model", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "omnipress-tests/no-such-model is not a local folder" in err
    assert "cannot be downloaded from the Hugging Face Hub" in err


def test_a_missing_extra_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "skimage", None)
    assert run(["demo", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'needs the `skimage` package: pip install "omnipress[demo]"' in err
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)
    assert run(["compare", "--model", str(tmp_path), "--gguf-file", "m.gguf"]) == 1
    assert 'loading a GGUF model needs the `gguf` package: pip install "omnipress[real]"' in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where):
    argv = ["compare", "--model", "/nonexistent"]
    with pytest.raises(CLIError, match="does not exist"):
        main(["--debug", *argv] if where == "before" else [*argv, "--debug"])


def test_debug_traceback_from_the_shell():
    plain = python_m_omnipress("compare", "--model", "/nonexistent")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    debug = python_m_omnipress("compare", "--model", "/nonexistent", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "CLIError: model folder" in debug.stderr


# -- help, version, python -m, eeg -----------------------------------------------------------------------------------
def test_python_m_omnipress_help_lists_every_command():
    result = python_m_omnipress("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: omnipress ")
    for command in ("demo", "compare", "eeg"):
        assert f"    {command} " in result.stdout


def test_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"omnipress {omnipress.__version__}\n"


def test_help_and_version_do_not_import_torch():
    code = "import contextlib, sys\nfrom omnipress.cli import main\nwith contextlib.suppress(SystemExit):\n"
    code += "    main(['--version'])\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.splitlines() == [f"omnipress {omnipress.__version__}", "False"]


@pytest.mark.parametrize("command", ["", "demo", "compare"])
def test_help_is_plain_and_shows_defaults_and_names(monkeypatch, capsys, command):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrapping inside the phrases checked below
    assert run([command, "--help"] if command else ["--help"]) == 0
    text = capsys.readouterr().out
    assert "`" not in text and "::" not in text
    if command:
        assert "(default: 8)" in text and "(default: qwen2_vl)" in text and all(name in text for name in FAMILIES)
    if command == "demo":
        assert "(default: half the prompt)" in text
    if command == "compare":
        assert "(default: 48)" in text and "(default: snapkv,adakv,mixkv-snapkv,mixkv-adakv)" in text
        assert f"from: {', '.join(PRESS_NAMES)}" in text


def test_cli_names_are_the_library_names():
    from omnipress.cli.compare import PRESSES
    from omnipress.testing import FAMILIES as TINY_FAMILIES

    assert tuple(PRESSES) == PRESS_NAMES and tuple(TINY_FAMILIES) == FAMILIES


def test_eeg_is_dispatched(capsys, monkeypatch):
    import omnipress.eeg.cli

    assert run(["eeg", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: omnipress eeg ")
    seen = []
    monkeypatch.setattr(omnipress.eeg.cli, "main", lambda argv: seen.append(argv) or 0)
    assert run(["--debug", "eeg", "score", "runs/knn", "--quiet"]) == 0
    assert seen == [["--debug", "score", "runs/knn", "--quiet"]]
