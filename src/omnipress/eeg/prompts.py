"""Prompt templates for the RAICL ablation ladder, and strict parsing of the answer.

Four variants (arXiv:2601.17844, §2 step 7, prompt files of the official code; wording here is our own):

- ``"base"``: the bare task and the output format, zero-shot.
- ``"reasoning"``: + diagnostic criteria and an analysis protocol (zero-shot chain of thought).
- ``"reasoning_random"``: + ``k`` seizure and ``k`` non-seizure reference images chosen at random.
- ``"raicl"``: + reference images chosen by retrieval (:mod:`omnipress.eeg.retrieve`).

A template is plain text with two markers: ``[[REFERENCES]]`` (expanded to one block per reference image,
each rendered with :data:`REFERENCE_BLOCK`) and ``[[TEST_IMAGE]]``. ``{n_refs}`` and ``{background_note}``
are filled in. Images stay separate parts of a :class:`Prompt` so each backend interleaves them in its own
format. Custom templates (``--template file.txt``) use the same markers.

Reference order: ``"paper"`` shows the seizure references from farthest to nearest to the query (so the
nearest sits next to the non-seizure ones, as in RAICL), then the non-seizure references. ``"patient_first"``
shows the same-patient non-seizure references first; with the local backend that turns them into a prefix
shared by the patient's queries, whose KV cache can be reused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

VARIANTS: tuple[str, ...] = ("base", "reasoning", "reasoning_random", "raicl")
SEIZURE, NON_SEIZURE, UNPARSABLE = 1, 0, -1
LABEL_TEXT = {SEIZURE: "SEIZURE", NON_SEIZURE: "NON-SEIZURE"}

TASK = (
    "You are an experienced clinical neurophysiologist reading scalp EEG. The image labelled "
    '"Test EEG Image" shows a short multichannel EEG window drawn as stacked waveforms: one coloured trace '
    "per bipolar channel (channel names on the left), time in seconds along the bottom. Classify the test "
    "window as exactly one of two classes: SEIZURE or NON-SEIZURE."
)

CRITERIA = """Diagnostic criteria.
NON-SEIZURE:
- Background activity that looks disorganised and irregular, without a sustained rhythm.
- Isolated artefacts (an eye blink, a burst of muscle activity, an electrode pop) that do not repeat rhythmically.
- Post-ictal slowing: irregular 1-3 Hz slow waves without spikes is NON-SEIZURE unless clear spike-and-wave \
complexes are present.
SEIZURE: a clear break from the background, judged by
- Morphology: spike-and-slow-wave complexes (a sharp spike shorter than about 0.1 s followed by a slow wave) \
repeating at 2-10 Hz, or polyspikes followed by a slow wave; amplitude visibly larger than the background.
- Synchrony: the rhythmic pattern appears in several channels at nearly the same time (within about 0.2 s).
- Frequency: repetitive waves in the 2-10 Hz range (delta to alpha).
- Special case: intense, sustained muscle activity that hides the cerebral signal can mark a tonic-clonic seizure."""

PROTOCOL = """Analysis protocol. Before deciding, describe the test image briefly under three checks:
1. Frequency: is there a rhythmic 2-10 Hz pattern, or is the activity chaotic?
2. Morphology: are there spike-and-wave complexes, or only irregular noise-like activity?
3. Synchrony: does the same pattern occur simultaneously in several channels?"""

REFERENCES_RAICL = (
    "Reference examples. The {n_refs} labelled images below are ground-truth anchors. "
    "{background_note} Compare the test image with them."
)
REFERENCES_RANDOM = (
    "Reference examples. The {n_refs} labelled images below are ground-truth examples of both classes. "
    "Compare the test image with them."
)
BACKGROUND_NOTES = {
    "same-patient": "The NON-SEIZURE references come from the same patient as the test image; the SEIZURE "
    "references come from other patients.",
    "other-patients": "All references come from other patients.",
}

OUTPUT_BASE = """Output requirement: answer with one line, exactly one of
FINAL DECISION: SEIZURE
FINAL DECISION: NON-SEIZURE"""

OUTPUT_REASONING = """Output requirement:
1. List what you observe for frequency, morphology and synchrony.
2. {compare}
3. Classify the test image.
The very last line of your answer must be exactly one of these two lines and nothing else:
FINAL DECISION: SEIZURE
FINAL DECISION: NON-SEIZURE"""

REFERENCE_BLOCK = "Reference Image {n}:\n[[IMAGE]]\nLabel: {label}."

TEMPLATES: dict[str, str] = {
    "base": f"{TASK}\n\nTest EEG Image:\n[[TEST_IMAGE]]\n\n{OUTPUT_BASE}",
    "reasoning": f"{TASK}\n\n{CRITERIA}\n\n{PROTOCOL}\n\nTest EEG Image:\n[[TEST_IMAGE]]\n\n"
    + OUTPUT_REASONING.replace("{compare}", "Explain how the observations match the criteria."),
    "reasoning_random": f"{TASK}\n\n{CRITERIA}\n\n{PROTOCOL}\n\n{REFERENCES_RANDOM}\n\n[[REFERENCES]]\n\n"
    "Test EEG Image:\n[[TEST_IMAGE]]\n\n"
    + OUTPUT_REASONING.replace("{compare}", "Compare the test image with the reference images."),
    "raicl": f"{TASK}\n\n{CRITERIA}\n\n{PROTOCOL}\n\n{REFERENCES_RAICL}\n\n[[REFERENCES]]\n\n"
    "Test EEG Image:\n[[TEST_IMAGE]]\n\n"
    + OUTPUT_REASONING.replace("{compare}", "Compare the test image with the reference images."),
}


@dataclass(frozen=True)
class PromptImage:
    """One image slot of a prompt: a rendered window and, for references, its label."""

    path: Path
    window: int
    role: Literal["test", "reference"]
    label: int | None = None


@dataclass(frozen=True)
class Prompt:
    """Interleaved text and images, in display order."""

    parts: tuple[str | PromptImage, ...]
    variant: str

    @property
    def images(self) -> list[PromptImage]:
        return [p for p in self.parts if isinstance(p, PromptImage)]

    def text(self, image_marker: str = "<image>") -> str:
        """The prompt with each image replaced by ``image_marker`` (for logs)."""
        return "".join(p if isinstance(p, str) else image_marker for p in self.parts)


def build_prompt(
    variant: str,
    test: PromptImage,
    seizure_refs: Sequence[PromptImage] = (),
    background_refs: Sequence[PromptImage] = (),
    *,
    order: Literal["paper", "patient_first"] = "paper",
    background_source: str = "same-patient",
    template: str | None = None,
) -> Prompt:
    """Assemble the prompt of ``variant`` (or a custom ``template``) around the images.

    Parameters
    ----------
    variant : str
        One of :data:`VARIANTS`.
    test : PromptImage
        The query image.
    seizure_refs, background_refs : sequence of PromptImage
        References nearest-to-query first (seizure) and most representative first (background), as returned
        by :class:`~omnipress.eeg.retrieve.Retriever`. Required for the two variants with references.
    order : {"paper", "patient_first"}
        Display order of the references (module docstring).
    background_source : str
        ``"same-patient"`` or ``"other-patients"``; picks the sentence describing where references come from.
    template : str, optional
        Custom template text with ``[[TEST_IMAGE]]`` and, if references are given, ``[[REFERENCES]]``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown prompt variant {variant!r}; expected one of {VARIANTS}")
    text = template if template is not None else TEMPLATES[variant]
    if text.count("[[TEST_IMAGE]]") != 1:
        raise ValueError("a template must contain [[TEST_IMAGE]] exactly once")
    refs = _ordered_refs(seizure_refs, background_refs, order)
    wants_refs = "[[REFERENCES]]" in text
    if wants_refs and not refs:
        raise ValueError(f"variant {variant!r} shows reference images but none were given")
    if refs and not wants_refs:
        raise ValueError(f"variant {variant!r} has no [[REFERENCES]] slot but {len(refs)} references were given")
    if test.role != "test" or any(r.role != "reference" or r.label not in LABEL_TEXT for r in refs):
        raise ValueError("the test image needs role='test'; references need role='reference' and a 0/1 label")
    if background_source not in BACKGROUND_NOTES:
        raise ValueError(f"background_source must be one of {sorted(BACKGROUND_NOTES)}, got {background_source!r}")
    text = text.replace("{n_refs}", str(len(refs))).replace("{background_note}", BACKGROUND_NOTES[background_source])
    parts: list[str | PromptImage] = []
    for chunk in re.split(r"(\[\[TEST_IMAGE\]\]|\[\[REFERENCES\]\])", text):
        if chunk == "[[TEST_IMAGE]]":
            parts.append(test)
        elif chunk == "[[REFERENCES]]":
            for n, ref in enumerate(refs, start=1):
                before, after = REFERENCE_BLOCK.format(n=n, label=LABEL_TEXT[ref.label]).split("[[IMAGE]]")
                parts.extend([before if n == 1 else "\n\n" + before, ref, after])
        elif chunk:
            parts.append(chunk)
    return Prompt(parts=tuple(_merge_text(parts)), variant=variant)


def _ordered_refs(seizure, background, order) -> list[PromptImage]:
    if order not in ("paper", "patient_first"):
        raise ValueError(f"order must be 'paper' or 'patient_first', got {order!r}")
    seizure_far_first = list(seizure)[::-1]
    if order == "paper":
        return seizure_far_first + list(background)
    return list(background) + seizure_far_first


def _merge_text(parts: list) -> list:
    out: list = []
    for p in parts:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif not (isinstance(p, str) and p == ""):
            out.append(p)
    return out


def load_template(path: str | Path) -> str:
    """Read a custom template file and check its markers."""
    text = Path(path).read_text(encoding="utf-8")
    if text.count("[[TEST_IMAGE]]") != 1:
        raise ValueError(f"{path}: a template must contain [[TEST_IMAGE]] exactly once")
    return text


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """Parsed answer: ``value`` 1 (seizure), 0 (non-seizure) or -1 (unparsable); ``line`` that decided."""

    value: int
    status: Literal["ok", "unparsable", "empty"]
    line: str | None = None

    @property
    def parsed(self) -> bool:
        return self.value != UNPARSABLE


_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2212"), "-")
_DECISION = re.compile(r"^FINAL\s+DECISION\s*[:：]\s*(NON\s*-?\s*SEIZURE|SEIZURE)$")


def normalize_line(line: str) -> str:
    """Upper-case, unify dashes, drop markdown emphasis/quote/bullet marks and trailing punctuation."""
    s = line.translate(_DASHES).strip()
    s = re.sub(r"[*_`]+", "", s)  # **bold**, _italic_, `code`
    s = re.sub(r"^(?:[#>\-+]+\s*)+", "", s)  # headings, quotes, bullets
    s = re.sub(r"\s+", " ", s).strip().rstrip(".!").strip()
    return s.upper()


def parse_decision(text: str | None, *, require_last_line: bool = False) -> Decision:
    """Parse ``FINAL DECISION: SEIZURE`` / ``FINAL DECISION: NON-SEIZURE`` from a model answer.

    A decision line must consist of the decision alone (case, markdown emphasis, a trailing period and
    unicode dashes are tolerated). When several decision lines occur, the last one wins; a line that
    mentions both options is not a decision, and an answer ending with both options on its last two lines
    (the instruction echoed back) is unparsable. Anything else is unparsable (-1),
    which the scorer counts instead of silently dropping.

    Parameters
    ----------
    text : str or None
        The raw answer.
    require_last_line : bool
        Only accept a decision on the last non-empty line.
    """
    if text is None or not text.strip():
        return Decision(UNPARSABLE, "empty")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    decisions = [_line_decision(ln) for ln in lines]
    if len(lines) >= 2 and UNPARSABLE not in decisions[-2:] and decisions[-1] != decisions[-2]:
        return Decision(UNPARSABLE, "unparsable")  # both options on the last two lines: an echoed instruction
    candidates = range(len(lines) - 1, -1, -1) if not require_last_line else [len(lines) - 1]
    for i in candidates:
        if decisions[i] != UNPARSABLE:
            return Decision(decisions[i], "ok", lines[i].strip())
    return Decision(UNPARSABLE, "unparsable")


def _line_decision(line: str) -> int:
    m = _DECISION.match(normalize_line(line))
    if not m:
        return UNPARSABLE
    return SEIZURE if m.group(1) == "SEIZURE" else NON_SEIZURE


__all__ = [
    "LABEL_TEXT",
    "NON_SEIZURE",
    "SEIZURE",
    "TEMPLATES",
    "UNPARSABLE",
    "VARIANTS",
    "Decision",
    "Prompt",
    "PromptImage",
    "build_prompt",
    "load_template",
    "normalize_line",
    "parse_decision",
]
