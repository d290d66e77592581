"""The README's streaming example runs as written (from the project root, where its relative video path points)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_readme_streaming_example_runs(capsys, monkeypatch):
    video = ROOT.parent / "shared" / "data" / "video" / "vtest.avi"
    if not video.exists():
        pytest.skip(f"no {video}")
    monkeypatch.chdir(ROOT)
    section = (ROOT / "README.md").read_text().split("### Streaming video", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in printed] == ["[9 s", "[19 s"]
    session = namespace["session"]
    assert session.stats.frames == 20 and len([b for b in session.blocks if b.where == "live"]) == 17  # 1 + 16
