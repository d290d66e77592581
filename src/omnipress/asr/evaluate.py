"""ASR evaluation of many methods over a manifest: transcripts and costs written as they go, WER per method.

`evaluate_asr(model, processor, items, specs, results=ResultsFile(...))` transcribes every utterance under every
method (`omnipress.asr.methods` specs), appends one JSON line per (method, utterance) to the results file as soon as
it is done, skips what the file already holds (a crashed run resumes with no duplicate) and summarises each method:
corpus WER, decode milliseconds per generated token and KV bytes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .manifest import ManifestItem, load_audio
from .methods import MethodSpec, build_method
from .results import ResultsFile
from .transcription import transcribe
from .wer import word_error_rate

KEY_FIELDS = ("method", "utterance")


@dataclass(frozen=True)
class MethodSummary:
    """One method over the evaluated utterances."""

    method: str
    utterances: int
    wer: float
    decode_ms_per_token: float  # median over utterances
    kv_bytes: float  # mean physical cache bytes at the end of decoding (self + cross, all beams)
    cross_kv_bytes: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def utterance_record(spec: MethodSpec, item: ManifestItem, result: Any, extra: dict[str, Any]) -> dict[str, Any]:
    report = result.report
    return {
        "method": spec.label,
        "utterance": item.key,
        "reference": item.text,
        "hypothesis": result.text,
        "audio_positions": result.audio_positions,
        "decode_steps": result.decode_steps,
        "decode_ms_per_token": result.decode_ms_per_token if result.decode_steps else None,
        "generate_seconds": result.generate_seconds,
        "kv_bytes": result.kv_bytes,
        "cross_kv_bytes": result.cross_kv_bytes,
        "compressed": bool(getattr(report, "compressed", False)),
        **extra,
    }


def evaluate_asr(
    model: nn.Module,
    processor: Any,
    items: Sequence[ManifestItem],
    specs: Sequence[MethodSpec],
    *,
    results: ResultsFile | None = None,
    num_beams: int = 5,
    max_new_tokens: Callable[[ManifestItem, int], int | None] | None = None,
    method_options: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    on_start: Callable[[MethodSpec, ManifestItem, int, int], None] | None = None,
) -> list[MethodSummary]:
    """Transcribe `items` under every spec and summarise (see module docstring).

    `max_new_tokens(item, num_samples)` bounds each generation (None: the model's limit); `method_options` go to
    `build_method` (profiles, ...); `extra` fields are added to every record; `on_start(spec, item, done, total)` is
    called before each transcription (progress display).
    """
    if results is not None and results.key_fields != KEY_FIELDS:
        raise ValueError(f"the results file must be keyed by {KEY_FIELDS}, not {results.key_fields}")
    records: dict[str, list[dict[str, Any]]] = {spec.label: [] for spec in specs}
    total, done = len(specs) * len(items), 0
    for spec in specs:
        for item in items:
            record = results.get(method=spec.label, utterance=item.key) if results is not None else None
            if record is None:
                if on_start is not None:
                    on_start(spec, item, done, total)
                audio = load_audio(item)
                method = build_method(spec, **(method_options or {}))
                limit = max_new_tokens(item, audio.size) if max_new_tokens is not None else None
                result = transcribe(model, processor, audio, method=method, num_beams=num_beams, max_new_tokens=limit)
                record = utterance_record(spec, item, result, {"num_beams": num_beams, **(extra or {})})
                if results is not None:
                    results.append(record)
            records[spec.label].append(record)
            done += 1
    return [summarize(label, rows) for label, rows in records.items()]


def summarize(label: str, rows: Sequence[dict[str, Any]]) -> MethodSummary:
    """WER, median decode ms/token and mean KV bytes of one method's utterance records."""
    if not rows:
        raise ValueError(f"no utterance to summarise for {label}")
    wer = word_error_rate([r["reference"] for r in rows], [r["hypothesis"] for r in rows]).wer
    speeds = [r["decode_ms_per_token"] for r in rows if r.get("decode_ms_per_token") is not None]
    return MethodSummary(
        method=label,
        utterances=len(rows),
        wer=wer,
        decode_ms_per_token=statistics.median(speeds) if speeds else float("nan"),
        kv_bytes=statistics.fmean(r["kv_bytes"] for r in rows),
        cross_kv_bytes=statistics.fmean(r["cross_kv_bytes"] for r in rows),
    )


def summary_table(summaries: Sequence[MethodSummary]) -> str:
    """A fixed-width table: method, WER %, decode ms/token, KV MiB (mean), utterances (the method column as wide as
    the longest label, knobs included)."""
    width = max([18, *(len(s.method) for s in summaries)])
    header = f"{'method':<{width}} {'WER %':>7} {'decode ms/token':>16} {'KV MiB':>8} {'cross KV MiB':>13} {'utts':>5}"
    lines = [header, "-" * len(header)]
    for s in summaries:
        lines.append(
            f"{s.method:<{width}} {100 * s.wer:>7.2f} {s.decode_ms_per_token:>16.2f} {s.kv_bytes / 2**20:>8.2f} "
            f"{s.cross_kv_bytes / 2**20:>13.2f} {s.utterances:>5}"
        )
    return "\n".join(lines)
