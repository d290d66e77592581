"""`omnipress demo` and `omnipress compare` print the side-by-side table and the report."""

from __future__ import annotations

import pytest

from omnipress.cli import main


def test_demo_prints_the_report(capsys):
    assert main(["demo", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "mixkv-adakv" in out and "KV memory" in out and "freed" in out


def test_compare_runs_several_presses_on_video(capsys):
    assert (
        main(
            [
                "compare",
                "--presses",
                "snapkv,pyramidkv,mixkv-snapkv",
                "--budget",
                "32",
                "--video-frames",
                "4",
                "--max-new-tokens",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for name in ("none", "snapkv", "pyramidkv", "mixkv-snapkv"):
        assert f"\n{name} " in out
    assert "video" in out


def test_unknown_press_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown press"):
        main(["compare", "--presses", "snapkv,nope", "--max-new-tokens", "1"])


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_compare_on_a_saved_model_folder(tmp_path, capsys, family):
    """`--model` loads any supported model from disk with its tokenizer/processor and builds the prompt itself."""
    from omnipress.testing import local_tokenizer, real_image, tiny_model

    folder = tmp_path / family
    tiny_model(family).save_pretrained(folder)
    local_tokenizer(family).save_pretrained(folder)
    (tmp_path / "context.txt").write_text("The secret code is 4721. " * 20)
    argv = [
        "compare",
        "--model",
        str(folder),
        "--presses",
        "snapkv,mixkv-adakv",
        "--budget",
        "16",
        "--window",
        "4",
        "--max-new-tokens",
        "2",
        "--text-file",
        str(tmp_path / "context.txt"),
    ]
    if family == "qwen2_vl":
        real_image("coffee").save(tmp_path / "coffee.png")
        argv += ["--image", str(tmp_path / "coffee.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert str(folder) in out and "mixkv-adakv" in out and "KV memory" in out
