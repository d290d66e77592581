"""Prompt templates for the RAICL ablation ladder, and parsing of the answer.

Four variants (arXiv:2601.17844, §2 step 7). Each asks for what the matching prompt file of the official code
(VLM4EEG) asks for: the same information, the same answer format and the same freedom to reason; the wording here
is our own.

- ``"base"``: the bare task and the answer format, zero-shot (``prompt-base.txt``).
- ``"reasoning"``: + an expert reader, diagnostic criteria and an analysis protocol, and the answer first lists
  the observations (``prompt-reasoning.txt``).
- ``"reasoning_random"``: + ``k`` seizure and ``k`` non-seizure reference images chosen at random, with where they
  come from, and the answer also compares the test image with them (``prompt-reasoning+randexamples.txt``).
- ``"raicl"``: the same text with references chosen by retrieval (:mod:`omnipress.eeg.retrieve`, ``prompt-Z.txt``).

Our templates are plain text with two markers: ``[[REFERENCES]]`` (expanded to one block per reference image,
each rendered with :data:`REFERENCE_BLOCK`) and ``[[TEST_IMAGE]]``; ``{n_refs}`` and ``{background_note}`` are
filled in. Custom templates (``--template file.txt``) may use the same markers, or be an official prompt file as
published: ``<Test EEG Image>``, ``<Nearest Neighbor Example n>`` / ``<Seizure Example EEG Image n>`` (the n-th
seizure reference, nearest to the query first) and ``<Non-Seizure Example EEG Image n>`` (the n-th background
reference, most representative first) are each replaced by their image where they stand, and the rest of the text
is sent unchanged. Images stay separate parts of a :class:`Prompt` so each backend interleaves them in its own
format.

Reference order: ``"paper"`` shows the seizure references from farthest to nearest to the query (so the
nearest sits next to the non-seizure ones, as in RAICL), then the non-seizure references. ``"patient_first"``
shows the same-patient non-seizure references first; with the local backend that turns them into a prefix
shared by the patient's queries, whose KV cache can be reused. An official template fixes the order itself.

Parsing (:data:`PARSE_RULES`): ``"strict"`` (default, :func:`parse_decision`) accepts only a line holding the
decision alone, the last one winning; ``"official"`` (:func:`parse_official`) is the official code's substring
search.
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

TASK_BASE = (
    'Classify the electroencephalogram (EEG) time-series plot labelled "Test EEG Image" as exactly one of two '
    'classes: "SEIZURE" or "NON-SEIZURE".'
)
TASK = (
    "As an expert reader of clinical EEG, classify the electroencephalogram (EEG) time-series plot labelled "
    '"Test EEG Image" as exactly one of two classes: "SEIZURE" or "NON-SEIZURE".'
)

CRITERIA = """Diagnostic criteria.
NON-SEIZURE:
- Background activity that looks disorganised and irregular, without a sustained rhythm.
- Isolated artefacts (an eye blink, a burst of muscle activity) that do not repeat rhythmically.
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

REFERENCES_NOTE = (
    "Reference examples. The {n_refs} labelled images below are ground-truth anchors for the classification. "
    "{background_note}"
)
BACKGROUND_NOTES = {
    "same-patient": "The NON-SEIZURE references come from the same patient as the test image; the SEIZURE "
    "references come from other patients who had seizures.",
    "other-patients": "All references come from other patients.",
}

ANSWER_LINES = """The very last line of your answer must be exactly one of:
FINAL DECISION: SEIZURE
FINAL DECISION: NON-SEIZURE"""

OUTPUT_BASE = f"Output requirement: classify the test image. {ANSWER_LINES}"
OUTPUT_REASONING = f"""Output requirement:
1. List briefly what you observe for frequency, morphology and synchrony, as in the analysis protocol.
2. Classify the test image. {ANSWER_LINES}"""
OUTPUT_REFERENCES = f"""Output requirement:
1. List briefly what you observe for frequency, morphology and synchrony, as in the analysis protocol.
2. Compare the patterns of the test image with those of the reference images.
3. Classify the test image. {ANSWER_LINES}"""

REFERENCE_BLOCK = "Reference Image {n}:\n[[IMAGE]]\nLabel: {label}."

_REFERENCE_VARIANT = (
    f"{TASK}\n\n{CRITERIA}\n\n{PROTOCOL}\n\n{REFERENCES_NOTE}\n\n[[REFERENCES]]\n\n"
    f"Test EEG Image:\n[[TEST_IMAGE]]\n\n{OUTPUT_REFERENCES}"
)
#: Built-in templates. They ask for what the official prompt files ask for (same information, same answer format,
#: same freedom to reason) in our own words; ``--template`` loads the official files themselves.
TEMPLATES: dict[str, str] = {
    "base": f"{TASK_BASE}\n\nTest EEG Image:\n[[TEST_IMAGE]]\n\n{OUTPUT_BASE}",
    "reasoning": f"{TASK}\n\n{CRITERIA}\n\n{PROTOCOL}\n\nTest EEG Image:\n[[TEST_IMAGE]]\n\n{OUTPUT_REASONING}",
    "reasoning_random": _REFERENCE_VARIANT,
    "raicl": _REFERENCE_VARIANT,
}

# Placeholders of the official prompt files (VLM4EEG prompt-*.txt): each stands for one image, in place.
OFFICIAL_TEST = "<Test EEG Image>"
_OFFICIAL_PLACEHOLDER = re.compile(
    r"<(Test EEG Image|Nearest Neighbor Example (\d+)|Seizure Example EEG Image (\d+)|"
    r"Non-Seizure Example EEG Image (\d+))>"
)


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
    check_template(text)
    refs = _ordered_refs(seizure_refs, background_refs, order)
    if test.role != "test" or any(r.role != "reference" or r.label not in LABEL_TEXT for r in refs):
        raise ValueError("the test image needs role='test'; references need role='reference' and a 0/1 label")
    if is_official_template(text):
        if order != "paper":
            raise ValueError(f"an official-format template fixes the reference order; order={order!r} does not apply")
        parts = _official_parts(text, test, seizure_refs, background_refs)
        return Prompt(parts=tuple(_merge_text(parts)), variant=variant)
    wants_refs = "[[REFERENCES]]" in text
    if wants_refs and not refs:
        raise ValueError(f"variant {variant!r} shows reference images but none were given")
    if refs and not wants_refs:
        raise ValueError(f"variant {variant!r} has no [[REFERENCES]] slot but {len(refs)} references were given")
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


def _official_parts(text: str, test: PromptImage, seizure, background) -> list:
    """Each placeholder of an official prompt file replaced by its image, in place (module docstring)."""
    pools = {"seizure": list(seizure), "non-seizure": list(background)}
    given = len(pools["seizure"]) + len(pools["non-seizure"])
    slots = [m for m in _OFFICIAL_PLACEHOLDER.finditer(text) if m.group(1) != "Test EEG Image"]
    if slots and not given:
        raise ValueError("the template shows reference images but none were given")
    if given and not slots:
        raise ValueError(f"the template has no reference placeholders but {given} references were given")
    parts: list = []
    used: set[tuple[str, int]] = set()
    pos = 0
    for m in _OFFICIAL_PLACEHOLDER.finditer(text):
        parts.append(text[pos : m.start()])
        pos = m.end()
        if m.group(1) == "Test EEG Image":
            parts.append(test)
            continue
        kind = "non-seizure" if m.group(4) else "seizure"
        n = int(m.group(2) or m.group(3) or m.group(4))
        if not 1 <= n <= len(pools[kind]):
            raise ValueError(
                f"the template asks for {m.group(0)} but {len(pools[kind])} {kind} references were given "
                "(its placeholders must match k)"
            )
        parts.append(pools[kind][n - 1])
        used.add((kind, n))
    parts.append(text[pos:])
    if len(used) != given:
        raise ValueError(
            f"the template shows {len(used)} of the {given} references given (its placeholders must match k)"
        )
    return parts


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


def is_official_template(text: str) -> bool:
    """Whether ``text`` uses the placeholders of the official prompt files (``<Test EEG Image>``, ...)."""
    return OFFICIAL_TEST in text


def check_template(text: str) -> None:
    """Raise ``ValueError`` unless ``text`` holds exactly one test-image marker of one of the two formats."""
    ours, official = text.count("[[TEST_IMAGE]]"), text.count(OFFICIAL_TEST)
    if ours and official:
        raise ValueError("a template uses either [[TEST_IMAGE]] or <Test EEG Image>, not both")
    if ours != 1 and official != 1:
        raise ValueError("a template must contain [[TEST_IMAGE]] (or the official <Test EEG Image>) exactly once")


def load_template(path: str | Path) -> str:
    """Read a template file (our markers or an official ``prompt-*.txt`` as published) and check its markers."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        check_template(text)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
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


PARSE_RULES: tuple[str, ...] = ("strict", "official")
_OFFICIAL_PHRASES = (("FINAL DECISION: SEIZURE", SEIZURE), ("FINAL DECISION: NON-SEIZURE", NON_SEIZURE))
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2212"), "-")
_DECISION = re.compile(r"^FINAL\s+DECISION\s*[:：]\s*(NON\s*-?\s*SEIZURE|SEIZURE)$")


def normalize_line(line: str) -> str:
    """Upper-case, unify dashes, drop markdown emphasis/quote/bullet marks and trailing punctuation."""
    s = line.translate(_DASHES).strip()
    s = re.sub(r"[*_`]+", "", s)  # **bold**, _italic_, `code`
    s = re.sub(r"^(?:[#>\-+]+\s*)+", "", s)  # headings, quotes, bullets
    s = re.sub(r"\s+", " ", s).strip().rstrip(".!").strip()
    return s.upper()


def parse_decision(text: str | None, *, require_last_line: bool = False, rule: str = "strict") -> Decision:
    """Parse ``FINAL DECISION: SEIZURE`` / ``FINAL DECISION: NON-SEIZURE`` from a model answer.

    ``rule="official"`` applies :func:`parse_official` instead of the strict rule below.

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
        Only accept a decision on the last non-empty line (strict rule only).
    rule : {"strict", "official"}
        Which rule decides (:data:`PARSE_RULES`).
    """
    if rule not in PARSE_RULES:
        raise ValueError(f"parse rule must be one of {PARSE_RULES}, got {rule!r}")
    if rule == "official":
        if require_last_line:
            raise ValueError("require_last_line belongs to the strict rule; the official rule reads the whole answer")
        return parse_official(text)
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


def parse_official(text: str | None) -> Decision:
    """The official code's rule: upper-case the answer, then look anywhere in it for ``FINAL DECISION: SEIZURE``
    first and ``FINAL DECISION: NON-SEIZURE`` second (exact spacing, ASCII hyphen).

    More permissive than the strict rule (``"FINAL DECISION: SEIZURE (focal)"`` counts) and biased towards
    seizure: an echoed instruction ``"FINAL DECISION: SEIZURE or FINAL DECISION: NON-SEIZURE"`` reads as SEIZURE,
    and so does any answer that mentions the seizure decision anywhere, whatever it concludes.
    """
    if text is None or not text.strip():
        return Decision(UNPARSABLE, "empty")
    upper = text.upper()
    for phrase, value in _OFFICIAL_PHRASES:
        if phrase in upper:
            return Decision(value, "ok", phrase)
    return Decision(UNPARSABLE, "unparsable")


def rules_disagree(text: str | None, *, require_last_line: bool = False) -> bool:
    """Whether the strict and the official rule read ``text`` differently."""
    strict = parse_decision(text, require_last_line=require_last_line).value
    return strict != parse_official(text).value


def _line_decision(line: str) -> int:
    m = _DECISION.match(normalize_line(line))
    if not m:
        return UNPARSABLE
    return SEIZURE if m.group(1) == "SEIZURE" else NON_SEIZURE


__all__ = [
    "LABEL_TEXT",
    "NON_SEIZURE",
    "OFFICIAL_TEST",
    "PARSE_RULES",
    "SEIZURE",
    "TEMPLATES",
    "UNPARSABLE",
    "VARIANTS",
    "Decision",
    "Prompt",
    "PromptImage",
    "build_prompt",
    "check_template",
    "is_official_template",
    "load_template",
    "normalize_line",
    "parse_decision",
    "parse_official",
    "rules_disagree",
]
