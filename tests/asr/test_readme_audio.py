"""The README's Whisper example runs as written (on a real clip instead of `clip.wav`)."""

from __future__ import annotations

import re
from pathlib import Path

import omnipress

from .real import SPEECH, needs_speech, needs_weights, whisper_tiny_en_cached

README = Path(__file__).resolve().parents[2] / "README.md"


@needs_weights
@needs_speech
def test_readme_whisper_example_runs(monkeypatch, capsys):
    section = README.read_text().split("### Speech recognition with Whisper", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace('"clip.wav"', repr(str(SPEECH / "harvard_15.wav")))
    monkeypatch.setattr(omnipress, "whisper_tiny_en", whisper_tiny_en_cached)  # loaded once per test session
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.decode_steps > 0 and result.kv_bytes > 0
    assert result.text in capsys.readouterr().out
    wer = omnipress.word_error_rate(["Help the woman get back to her feet."], [result.text]).wer
    assert wer <= 0.5, result.text
