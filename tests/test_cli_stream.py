"""`omnipress stream`: answers at their stream times, the timing table, JSON, progress and one-line errors."""

from __future__ import annotations

import io
import json

import pytest

from omnipress.cli import main
from omnipress.cli.progress import Progress
from omnipress.cli.stream import schedule
from omnipress.testing import data_dir

VIDEO = data_dir() / "video" / "vtest.avi"
pytestmark = pytest.mark.skipif(not VIDEO.is_file(), reason="the shared real video is not here")


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_answers_at_their_times_with_the_timing_table(tmp_path, capsys):
    out_json = tmp_path / "stream.json"
    argv = ["stream", str(VIDEO), "--question", "What happens?", "--at", "1", "--at", "9", "--fps", "2"]
    argv += ["--max-frames", "4", "--tokens-per-frame", "4", "--max-new-tokens", "2", "--json", str(out_json)]
    assert run(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    # the first question is answered once the frame at 1.0 s is in; the second, past the end, at the last frame
    assert lines[0] == "[1.0 s] Q: What happens?"
    assert lines[2] == "[1.5 s] Q: What happens? (asked for 9.0 s)"
    assert "| frames | encoder ms/frame | prefill ms/frame |" in captured.out
    assert "streaming 4/4 frames (100%)" in captured.err  # the progress bar over frames (total from the container)
    record = json.loads(out_json.read_text())
    assert [a["time"] for a in record["answers"]] == [1.0, 1.5]
    assert record["timing"]["frames"] == 4 and record["timing"]["kv_bytes"] > 0
    assert record["timing"]["encoder_ms_per_frame"] > 0 and record["timing"]["prefill_ms_per_frame"] > 0
    # the cacher (on by default, r=0.25, N=2) saw every frame: refresh frames 0 and 2, selective frames 1 and 3
    assert record["methods"][0].startswith("STCCacher(update_ratio=0.25, interval=2")
    assert record["methods"][1].startswith("STCPruner(tokens_per_frame=4")
    stats = record["encoder_stats"][0]
    assert stats["frames"] == 4 and stats["refresh_frames"] == 2 and 0.25 <= stats["recomputed_fraction"] < 1


def test_window_memory_keeps_the_live_cache_to_its_frames(tmp_path):
    base = ["stream", str(VIDEO), "--question", "What happens?", "--fps", "2", "--max-frames", "6", "--no-cacher"]
    base += ["--max-new-tokens", "1", "--quiet"]
    records = {}
    for memory in ("full", "window"):
        out = tmp_path / f"{memory}.json"
        extra = ["--window-frames", "2", "--sinks", "0"] if memory == "window" else []
        assert run([*base, "--memory", memory, *extra, "--json", str(out)]) == 0
        records[memory] = json.loads(out.read_text())
    full, window = (records[m]["answers"][0] for m in ("full", "window"))
    assert records["full"]["encoder_stats"] == []  # --no-cacher
    assert full["frames_in_cache"] == 6 and window["frames_in_cache"] == 2
    assert records["window"]["timing"]["kv_bytes"] < records["full"]["timing"]["kv_bytes"]


def test_schedule_pairs_questions_and_times():
    assert schedule(["a"], None) == [(None, "a")]
    assert schedule(["a"], [5.0, 1.0]) == [(1.0, "a"), (5.0, "a")]
    assert schedule(["a", "b"], [5.0, 1.0]) == [(1.0, "b"), (5.0, "a")]


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["missing.mp4", "--question", "q"], 1, "video file not found: missing.mp4"),
        ([str(VIDEO), "--question", "a", "--question", "b", "--at", "1", "--at", "2", "--at", "3"], 2, "--at"),
        ([str(VIDEO), "--question", "q", "--window-frames", "4"], 2, "need --memory window or retrieval"),
        ([str(VIDEO), "--question", "q", "--memory", "window", "--retrieve", "2"], 2, "--retrieve needs"),
        ([str(VIDEO), "--question", "q", "--model", "/nonexistent/model"], 1, "model folder /nonexistent/model does"),
        ([str(VIDEO), "--question", "q", "--model", "/nonexistent/model", "--family", "qwen2_vl"], 2, "--family"),
        ([str(VIDEO), "--question", "q", "--start", "5", "--end", "2"], 2, "--end 2.0 must come after --start 5.0"),
        ([str(VIDEO), "--question", "q", "--fps", "0"], 2, "expected a positive number"),
        ([str(VIDEO), "--question", "q", "--update-ratio", "1.5"], 2, "expected a ratio in (0, 1]"),
        ([str(VIDEO), "--question", "q", "--start", "10000"], 1, "is at or past the end"),
    ],
)
def test_user_errors_are_one_line(capsys, args, status, message):
    assert run(["stream", *args, "--quiet"]) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_truncated_video_warns_and_still_answers(tmp_path, capsys):
    cut = tmp_path / "cut.avi"
    data = VIDEO.read_bytes()
    cut.write_bytes(data[: len(data) // 4])
    assert run(["stream", str(cut), "--question", "q", "--fps", "1", "--max-new-tokens", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "Q: q" in captured.out


def test_progress_bar_counts_on_a_log():
    stream = io.StringIO()
    with Progress(stream=stream).bar("streaming", 20) as bar:
        for _ in range(20):
            bar.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("omnipress: streaming 1/20 frames (5%)")
    assert lines[-1].startswith("omnipress: streaming 20/20 frames (100%)")
    assert len(lines) == 11  # a line at each tenth (and the first)
