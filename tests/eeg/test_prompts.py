from __future__ import annotations

from pathlib import Path

import pytest

from omnipress.eeg.prompts import (
    NON_SEIZURE,
    SEIZURE,
    UNPARSABLE,
    VARIANTS,
    PromptImage,
    build_prompt,
    load_template,
    parse_decision,
)

TEST = PromptImage(Path("q.png"), 50, "test")
SZ = [PromptImage(Path(f"sz{i}.png"), 10 + i, "reference", 1) for i in range(2)]  # nearest first
NS = [PromptImage(Path(f"ns{i}.png"), 20 + i, "reference", 0) for i in range(2)]  # most representative first


def test_four_variants_interleave_text_and_images():
    expected_images = {"base": 1, "reasoning": 1, "reasoning_random": 5, "raicl": 5}
    for variant in VARIANTS:
        refs = (SZ, NS) if expected_images[variant] == 5 else ((), ())
        prompt = build_prompt(variant, TEST, *refs)
        assert len(prompt.images) == expected_images[variant]
        assert prompt.images[-1] is TEST
        assert isinstance(prompt.parts[0], str) and isinstance(prompt.parts[-1], str)
        assert all(not (isinstance(a, str) and isinstance(b, str)) for a, b in zip(prompt.parts, prompt.parts[1:]))
        text = prompt.text()
        assert text.count("<image>") == expected_images[variant]
        assert text.rstrip().endswith("FINAL DECISION: NON-SEIZURE")
        assert ("Diagnostic criteria" in text) == (variant != "base")
        assert "[[" not in text and "{" not in text


def test_raicl_reference_order_and_labels():
    prompt = build_prompt("raicl", TEST, SZ, NS)
    # paper order: 2nd-nearest seizure, nearest seizure, then the two backgrounds, then the test image
    assert [img.window for img in prompt.images] == [11, 10, 20, 21, 50]
    text = prompt.text()
    assert text.index("Reference Image 1:\n<image>\nLabel: SEIZURE.") < text.index(
        "Reference Image 3:\n<image>\nLabel: NON-SEIZURE."
    )
    assert "same patient" in text
    first = build_prompt("raicl", TEST, SZ, NS, order="patient_first")
    assert [img.window for img in first.images] == [20, 21, 11, 10, 50]
    other = build_prompt("raicl", TEST, SZ, NS, background_source="other-patients")
    assert "All references come from other patients" in other.text()


def test_prompt_errors():
    with pytest.raises(ValueError, match="variant"):
        build_prompt("zero_shot", TEST)
    with pytest.raises(ValueError, match="none were given"):
        build_prompt("raicl", TEST)
    with pytest.raises(ValueError, match="no \\[\\[REFERENCES\\]\\] slot"):
        build_prompt("base", TEST, SZ, NS)
    with pytest.raises(ValueError, match="role"):
        build_prompt("raicl", SZ[0], SZ, NS)
    with pytest.raises(ValueError, match="exactly once"):
        build_prompt("base", TEST, template="no image here")


def test_custom_template(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Look at {n_refs} refs:\n[[REFERENCES]]\nNow this one:\n[[TEST_IMAGE]]\nAnswer.")
    prompt = build_prompt("raicl", TEST, SZ, NS, template=load_template(path))
    assert prompt.text().startswith("Look at 4 refs:\nReference Image 1:\n<image>")
    bad = tmp_path / "bad.txt"
    bad.write_text("[[TEST_IMAGE]] [[TEST_IMAGE]]")
    with pytest.raises(ValueError, match="exactly once"):
        load_template(bad)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("FINAL DECISION: SEIZURE", SEIZURE),
        ("FINAL DECISION: NON-SEIZURE", NON_SEIZURE),
        ("Frequency: 3 Hz rhythmic...\nSynchrony: widespread.\nFINAL DECISION: SEIZURE", SEIZURE),
        ("final decision: non-seizure.", NON_SEIZURE),
        ("**FINAL DECISION: SEIZURE**", SEIZURE),
        ("**Final Decision:** NON-SEIZURE", NON_SEIZURE),
        ("### FINAL DECISION: NON SEIZURE", NON_SEIZURE),
        ("FINAL DECISION: NON\u2013SEIZURE", NON_SEIZURE),  # en dash
        ("FINAL DECISION : SEIZURE  ", SEIZURE),
        ("> FINAL DECISION: `SEIZURE`", SEIZURE),
        # the last decision line wins
        (
            "FINAL DECISION: SEIZURE\nOn reflection the pattern is an artefact.\nFINAL DECISION: NON-SEIZURE",
            NON_SEIZURE,
        ),
        # a decision followed by a closing line still counts (not the default strict-last-line mode)
        ("FINAL DECISION: SEIZURE\n```", SEIZURE),
        # echoing the instruction (both options on one line) is not a decision
        ("FINAL DECISION: SEIZURE or FINAL DECISION: NON-SEIZURE", UNPARSABLE),
        # ... nor both options on the last two lines
        ("The answer format is\nFINAL DECISION: SEIZURE\nFINAL DECISION: NON-SEIZURE", UNPARSABLE),
        ("SEIZURE", UNPARSABLE),
        ("The final decision is seizure.", UNPARSABLE),
        ("FINAL DECISION: SEIZURE (likely)", UNPARSABLE),
        ("FINAL DECISION: PROBABLY SEIZURE", UNPARSABLE),
        ("FINAL DECISION: NOT SEIZURE", UNPARSABLE),
        ("", UNPARSABLE),
        ("   \n\n", UNPARSABLE),
        (None, UNPARSABLE),
    ],
)
def test_parse_decision(answer, value):
    decision = parse_decision(answer)
    assert decision.value == value
    assert decision.parsed == (value != UNPARSABLE)
    if value == UNPARSABLE:
        assert decision.status in ("unparsable", "empty") and decision.line is None


def test_parse_decision_require_last_line():
    text = "FINAL DECISION: SEIZURE\nThanks for asking."
    assert parse_decision(text).value == SEIZURE
    assert parse_decision(text, require_last_line=True).value == UNPARSABLE
    assert parse_decision("x\nFINAL DECISION: SEIZURE\n\n", require_last_line=True).value == SEIZURE
    assert parse_decision("").status == "empty"
