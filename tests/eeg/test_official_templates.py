"""Templates in the official prompt files' placeholder format, and the built-in variants' alignment with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnipress.eeg.prompts import TEMPLATES, PromptImage, build_prompt, is_official_template, load_template
from omnipress.eeg.run import RunConfig

TEST = PromptImage(Path("q.png"), 50, "test")
SZ = [PromptImage(Path(f"sz{i}.png"), 10 + i, "reference", 1) for i in range(2)]  # nearest to the query first
NS = [PromptImage(Path(f"ns{i}.png"), 20 + i, "reference", 0) for i in range(2)]  # most representative first

# Our own text, laid out like the official retrieval prompt: the most query-similar seizure example sits next to the
# background examples (Reference Image 2), the test image last.
OFFICIAL_STYLE = """[Task]
Say whether "Test EEG Image" shows a seizure.

[Examples]
Reference Image 1:
<Nearest Neighbor Example 2>
Label: SEIZURE.
Reference Image 2:
<Nearest Neighbor Example 1>
Label: SEIZURE.
Reference Image 3:
<Non-Seizure Example EEG Image 1>
Label: NON-SEIZURE.
Reference Image 4:
<Non-Seizure Example EEG Image 2>
Label: NON-SEIZURE.

[Test Input]
<Test EEG Image>

[Output]
The absolute last line must be exactly:
FINAL DECISION: SEIZURE or FINAL DECISION: NON-SEIZURE
"""


def test_official_placeholders_render_the_built_in_example_order(tmp_path):
    path = tmp_path / "prompt-style.txt"
    path.write_text(OFFICIAL_STYLE)
    template = load_template(path)
    assert is_official_template(template)
    official = build_prompt("raicl", TEST, SZ, NS, template=template)
    built_in = build_prompt("raicl", TEST, SZ, NS)
    assert [i.window for i in official.images] == [i.window for i in built_in.images] == [11, 10, 20, 21, 50]
    # every placeholder is replaced in place; the rest of the text is sent unchanged
    assert official.text("<img>") == (
        OFFICIAL_STYLE.replace("<Nearest Neighbor Example 2>", "<img>")
        .replace("<Nearest Neighbor Example 1>", "<img>")
        .replace("<Non-Seizure Example EEG Image 1>", "<img>")
        .replace("<Non-Seizure Example EEG Image 2>", "<img>")
        .replace("<Test EEG Image>", "<img>")
    )
    assert official.parts[0].endswith("Reference Image 1:\n") and official.parts[1] is SZ[1]
    assert official.parts[-2] is TEST and official.parts[-1].startswith("\n\n[Output]")


def test_random_example_placeholders_and_zero_shot_files():
    random_style = "A:\n<Seizure Example EEG Image 1>\nB:\n<Seizure Example EEG Image 2>\n" + (
        "C:\n<Non-Seizure Example EEG Image 2>\nD:\n<Non-Seizure Example EEG Image 1>\nTest:\n<Test EEG Image>\n"
    )
    prompt = build_prompt("reasoning_random", TEST, SZ, NS, template=random_style)
    assert [i.window for i in prompt.images] == [10, 11, 21, 20, 50]
    zero_shot = "[Task Definition]\nClassify the Test EEG Image.\n\n[Test Input]\n<Test EEG Image>\n"
    prompt = build_prompt("base", TEST, template=zero_shot)
    assert prompt.images == [TEST] and prompt.text() == zero_shot.replace("<Test EEG Image>", "<image>")


def test_official_template_errors():
    with pytest.raises(ValueError, match="Nearest Neighbor Example 2> but 1 seizure references"):
        build_prompt("raicl", TEST, SZ[:1], NS, template=OFFICIAL_STYLE)
    with pytest.raises(ValueError, match="shows 4 of the 6 references"):
        three = [*SZ, PromptImage(Path("sz2.png"), 12, "reference", 1)]
        build_prompt("raicl", TEST, three, [*NS, PromptImage(Path("ns2.png"), 22, "reference", 0)],
                     template=OFFICIAL_STYLE)  # fmt: skip
    with pytest.raises(ValueError, match="no reference placeholders but 4"):
        build_prompt("raicl", TEST, SZ, NS, template="<Test EEG Image>")
    with pytest.raises(ValueError, match="none were given"):
        build_prompt("base", TEST, template=OFFICIAL_STYLE)
    with pytest.raises(ValueError, match="fixes the reference order"):
        build_prompt("raicl", TEST, SZ, NS, template=OFFICIAL_STYLE, order="patient_first")
    with pytest.raises(ValueError, match="fixes the reference order"):
        RunConfig(template=OFFICIAL_STYLE, order="patient_first")  # refused before any request
    with pytest.raises(ValueError, match="not both"):
        build_prompt("base", TEST, template="[[TEST_IMAGE]] <Test EEG Image>")
    with pytest.raises(ValueError, match="exactly once"):
        build_prompt("base", TEST, template="<Test EEG Image> and again <Test EEG Image>")


def test_built_in_variants_ask_what_the_official_variants_ask():
    base, reasoning, random, raicl = (TEMPLATES[v] for v in ("base", "reasoning", "reasoning_random", "raicl"))
    # base: the bare task and the answer format; no persona, no description of the image, free to reason
    assert "expert" not in base.lower() and "stacked" not in base and "one line" not in base
    assert "Diagnostic criteria" not in base and "very last line of your answer" in base
    # reasoning: expert reader, criteria, protocol; list the observations, then classify (two steps)
    assert "expert" in reasoning and "Diagnostic criteria" in reasoning and "Analysis protocol" in reasoning
    assert "1. List" in reasoning and "2. Classify" in reasoning and "3." not in reasoning.split("Output")[-1]
    # both reference variants say where the references come from, and compare before classifying
    for text in (random, raicl):
        assert "{background_note}" in text and "2. Compare" in text and "3. Classify" in text
    prompt = build_prompt("reasoning_random", TEST, SZ, NS)
    assert "NON-SEIZURE references come from the same patient" in prompt.text()
    for template in TEMPLATES.values():
        assert template.rstrip().endswith("FINAL DECISION: SEIZURE\nFINAL DECISION: NON-SEIZURE")
