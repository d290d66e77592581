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
