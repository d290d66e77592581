"""`omnipress` command line: `demo`, `compare` and the RAICL `eeg` pipeline."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch


def _presses() -> dict[str, Callable[[int, int], object]]:
    import omnipress as op

    return {
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


def _run_once(model, inputs: dict, press, max_new_tokens: int) -> tuple[list[int], float, object]:
    from contextlib import nullcontext

    from omnipress.cache import cache_kv_bytes, generated_cache

    start = time.perf_counter()
    with torch.no_grad(), press(model) if press is not None else nullcontext():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True)
    seconds = time.perf_counter() - start
    new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    return new, seconds, cache_kv_bytes(generated_cache(out))


def load_model(path: str, *, gguf_file: str | None = None) -> tuple[torch.nn.Module, object]:
    """A supported model and its processor (or tokenizer) from a local folder (or a hub id where the hub is reachable).

    Vision/audio models load with `AutoModelForImageTextToText` (falling back to `AutoModelForCausalLM`); when no
    processor can be built (for example without torchvision), the tokenizer is used and omnipress builds the media
    inputs itself.
    """
    import transformers as T

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        model = T.AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (ValueError, KeyError):
        model = T.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    try:
        processor = T.AutoProcessor.from_pretrained(path, **kwargs)
    except (OSError, ValueError, TypeError, AttributeError, ImportError):
        processor = T.AutoTokenizer.from_pretrained(path, **kwargs)
    return model.eval(), processor


def _tiny_prompt(family: str, video_frames: int) -> tuple[torch.nn.Module, dict]:
    from omnipress.testing import tiny_inputs, tiny_model

    model = tiny_model(family)
    return model, tiny_inputs(family, model, image=True, video_frames=video_frames, question="Describe the image.")


def compare(
    model: torch.nn.Module,
    inputs: dict,
    press_names: list[str],
    budget: int,
    max_new_tokens: int,
    label: str,
    window: int = 32,
) -> str:
    """Run the untouched model and each press on one prompt; return a side-by-side table and the last report."""
    factories = _presses()
    unknown = [p for p in press_names if p not in factories]
    if unknown:
        raise SystemExit(f"unknown press {unknown}; choose from {sorted(factories)}")
    base_tokens, base_s, base_bytes = _run_once(model, inputs, None, max_new_tokens)
    rows = [("none", len(inputs["input_ids"][0]), base_bytes, base_s, 1.0, "")]
    reports = []
    for name in press_names:
        press = factories[name](budget, window)
        tokens, seconds, kv_bytes = _run_once(model, inputs, press, max_new_tokens)
        report = press.report
        reports.append(report)
        agree = sum(a == b for a, b in zip(tokens, base_tokens)) / max(1, len(base_tokens))
        kept = f"{report.tokens_after / max(1, len(report.layers) * report.batch_size * report.num_kv_heads):.0f}"
        rows.append((name, kept, kv_bytes, seconds, agree, f"{report.prefill_seconds * 1e3:.1f}"))
    lines = [
        f"model: {label}; prompt: {inputs['input_ids'].shape[1]} tokens; budget {budget} entries per KV head",
        f"{'press':<16}{'kept/head':>10}{'KV MiB':>10}{'generate s':>12}{'prefill ms':>12}{'same tokens':>13}",
    ]
    for name, kept, kv_bytes, seconds, agree, prefill in rows:
        lines.append(f"{name:<16}{kept!s:>10}{kv_bytes / 2**20:>10.3f}{seconds:>12.3f}{prefill:>12}{agree:>13.0%}")
    lines.append("")
    lines.extend(str(r) for r in reports[-1:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omnipress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="compress a real image prompt on an embedded tiny model and print the report")
    demo.add_argument("--family", default="qwen2_vl")
    demo.add_argument("--budget", type=int, default=48)
    demo.add_argument("--window", type=int, default=32)
    demo.add_argument("--max-new-tokens", type=int, default=8)

    cmp_ = sub.add_parser("compare", help="untouched model vs several presses, side by side")
    cmp_.add_argument("--family", default="qwen2_vl", help="tiny embedded model family (when --model is not given)")
    cmp_.add_argument("--model", help="a local model folder (or hub id): any supported family")
    cmp_.add_argument("--gguf-file", help="GGUF file name inside --model (e.g. SmolLM2's)")
    cmp_.add_argument("--text", default="Describe the image.", help="the question (with --model)")
    cmp_.add_argument("--image", action="append", default=[], help="image file(s) for the prompt (with --model)")
    cmp_.add_argument("--video", help="video file for the prompt (with --model)")
    cmp_.add_argument("--audio", help="audio file for the prompt (with --model)")
    cmp_.add_argument("--text-file", help="prepend this file's text to the question (long-context prompts)")
    cmp_.add_argument("--presses", default="snapkv,adakv,mixkv-snapkv,mixkv-adakv")
    cmp_.add_argument("--budget", type=int, default=48, help="KV entries kept per head, window included")
    cmp_.add_argument("--window", type=int, default=32, help="observation window (always kept)")
    cmp_.add_argument("--max-new-tokens", type=int, default=8)
    cmp_.add_argument("--video-frames", type=int, default=0, help="frames of real video (tiny model only)")

    eeg = sub.add_parser("eeg", help="RAICL EEG seizure detection pipeline (needs the [eeg] extra)", add_help=False)
    eeg.add_argument("rest", nargs=argparse.REMAINDER)

    args, rest = parser.parse_known_args(argv)
    if args.command == "eeg":
        from omnipress.eeg.cli import main as eeg_main

        return eeg_main([*args.rest, *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        model, inputs = _tiny_prompt(args.family, 0)
        label = f"tiny random {args.family} (built from config, no download), real image"
        print(compare(model, inputs, ["mixkv-adakv"], args.budget, args.max_new_tokens, label, args.window))
        return 0
    names = [p.strip() for p in args.presses.split(",") if p.strip()]
    if args.model:
        from pathlib import Path

        from omnipress.generation import build_inputs

        model, processor = load_model(args.model, gguf_file=args.gguf_file)
        text = args.text
        if args.text_file:
            text = Path(args.text_file).read_text() + "\n\n" + text
        inputs = build_inputs(
            model, processor, text=text, images=args.image or None, video=args.video, audio=args.audio
        )
        label = args.model
    else:
        model, inputs = _tiny_prompt(args.family, args.video_frames)
        label = f"tiny random {args.family} (built from config, no download), real media"
    print(compare(model, inputs, names, args.budget, args.max_new_tokens, label, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
