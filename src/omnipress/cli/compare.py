"""Run the untouched model and several presses on one prompt; the side-by-side table and its JSON form."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import omnipress as op

from ..cache import cache_kv_bytes, generated_cache
from ..kv.base import KVPress
from ..kv.report import CompressionReport
from .errors import UsageError
from .progress import Progress

#: press name on the command line -> factory(budget, window)
PRESSES: dict[str, Callable[[int, int], KVPress]] = {
    "snapkv": lambda b, w: op.SnapKV(budget=b, window=w),
    "pyramidkv": lambda b, w: op.PyramidKV(budget=b, window=w),
    "adakv": lambda b, w: op.AdaKV(budget=b, window=w),
    "h2o": lambda b, w: op.H2O(budget=b, window=w),
    "knorm": lambda b, w: op.KNorm(budget=b, window=min(w, b)),
    "streamingllm": lambda b, w: op.StreamingLLM(budget=b),
    "random": lambda b, w: op.RandomPress(budget=b),
    "mixkv-snapkv": lambda b, w: op.MixKV(op.SnapKV(budget=b, window=w)),
    "mixkv-adakv": lambda b, w: op.MixKV(op.AdaKV(budget=b, window=w)),
    "mixkv-pyramidkv": lambda b, w: op.MixKV(op.PyramidKV(budget=b, window=w)),
}
#: the observation window when `--window` is not given: this, or half the budget if that is smaller
MAX_DEFAULT_WINDOW = 32


def default_window(budget: int) -> int:
    """The observation window for `budget` when none is given: 32, or half the budget if that is smaller."""
    return min(MAX_DEFAULT_WINDOW, budget // 2)


def make_presses(names: list[str], budget: int, window: int) -> dict[str, KVPress]:
    """One press per name; `UsageError` for a budget/window pair the presses refuse."""
    try:
        return {name: PRESSES[name](budget, window) for name in names}
    except ValueError as error:
        raise UsageError(str(error)) from error


@dataclass
class Row:
    """One line of the table: the untouched model (`report is None`) or one press."""

    press: str
    kept_per_head: float
    kv_bytes: int
    generate_seconds: float
    same_tokens: float
    report: CompressionReport | None = None

    @property
    def note(self) -> str:
        if self.report is None:
            return "untouched"
        return "" if self.report.compressed else "not compressed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "press": self.press,
            "kept_per_head": self.kept_per_head,
            "kv_bytes": self.kv_bytes,
            "generate_seconds": self.generate_seconds,
            "prefill_ms": None if self.report is None else self.report.prefill_seconds * 1e3,
            "same_tokens": self.same_tokens,
            "compressed": None if self.report is None else self.report.compressed,
            "note": self.note,
            "report": None if self.report is None else self.report.to_dict(),
        }


@dataclass
class Comparison:
    """The untouched model and each press on one prompt."""

    label: str
    prompt_tokens: int
    budget: int
    window: int
    rows: list[Row]

    @property
    def modality_tokens(self) -> dict[str, int]:
        """The prompt's tokens per modality (from the first press's report; empty without one)."""
        reports = [row.report for row in self.rows if row.report is not None]
        return dict(reports[0].modality_tokens) if reports else {}

    def table(self) -> str:
        """The side-by-side table, then the last press's full report."""
        parts = ", ".join(f"{name} {count}" for name, count in self.modality_tokens.items())
        lines = [
            f"model: {self.label}; prompt: {self.prompt_tokens} tokens{f' ({parts})' if parts else ''}; "
            f"budget {self.budget} entries per KV head (window {self.window})",
            f"{'press':<16}{'kept/head':>10}{'KV MiB':>10}{'generate s':>12}{'prefill ms':>12}{'same tokens':>13}"
            "  note",
        ]
        for row in self.rows:
            prefill = "" if row.report is None else f"{row.report.prefill_seconds * 1e3:.1f}"
            lines.append(
                f"{row.press:<16}{row.kept_per_head:>10.0f}{row.kv_bytes / 2**20:>10.3f}{row.generate_seconds:>12.3f}"
                f"{prefill:>12}{row.same_tokens:>13.0%}  {row.note}".rstrip()
            )
        reports = [row.report for row in self.rows if row.report is not None]
        return "\n".join([*lines, "", *map(str, reports[-1:])])

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.label,
            "prompt_tokens": self.prompt_tokens,
            "modality_tokens": self.modality_tokens,
            "budget": self.budget,
            "window": self.window,
            "rows": [row.to_dict() for row in self.rows],
        }

    def save_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def run_comparison(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    presses: dict[str, KVPress],
    *,
    budget: int,
    window: int,
    max_new_tokens: int,
    label: str,
    progress: Progress,
) -> Comparison:
    """Generate greedily with the untouched model, then under each press, and compare them."""
    prompt_tokens = int(inputs["input_ids"].shape[1])
    total = len(presses) + 1
    with progress.step(f"[1/{total}] untouched model"):
        base, seconds, kv_bytes = _generate(model, inputs, None, max_new_tokens)
    rows = [Row("none", float(prompt_tokens), kv_bytes, seconds, 1.0)]
    for k, (name, press) in enumerate(presses.items(), start=2):
        with progress.step(f"[{k}/{total}] {name}"):
            tokens, seconds, kv_bytes = _generate(model, inputs, press, max_new_tokens)
        same = sum(a == b for a, b in zip(tokens, base)) / max(1, len(base))
        rows.append(Row(name, _kept_per_head(press.report, prompt_tokens), kv_bytes, seconds, same, press.report))
    return Comparison(label, prompt_tokens, budget, window, rows)


def _kept_per_head(report: CompressionReport | None, prompt_tokens: int) -> float:
    """Mean KV entries each (layer, row, KV head) kept; a press that compressed nothing keeps the whole prompt."""
    if report is None or not report.compressed or not report.layers:
        return float(prompt_tokens)
    return report.tokens_after / (len(report.layers) * report.batch_size * report.num_kv_heads)


def _generate(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], press: KVPress | None, max_new_tokens: int
) -> tuple[list[int], float, int]:
    """The new token ids, the seconds `generate` took, and the KV bytes its cache holds at the end."""
    start = time.perf_counter()
    with torch.no_grad(), press(model) if press is not None else nullcontext():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True)
    seconds = time.perf_counter() - start
    new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    return new, seconds, cache_kv_bytes(generated_cache(out))
