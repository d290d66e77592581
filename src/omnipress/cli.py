"""`omnipress` command line: `demo`, `compare` and the RAICL `eeg` pipeline."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch


def _presses() -> dict[str, Callable[[int], object]]:
    import omnipress as op

    return {
        "snapkv": lambda b: op.SnapKV(budget=b),
        "pyramidkv": lambda b: op.PyramidKV(budget=b),
        "adakv": lambda b: op.AdaKV(budget=b),
        "h2o": lambda b: op.H2O(budget=b),
        "knorm": lambda b: op.KNorm(budget=b),
        "streamingllm": lambda b: op.StreamingLLM(budget=b),
        "random": lambda b: op.RandomPress(budget=b),
        "mixkv-snapkv": lambda b: op.MixKV(op.SnapKV(budget=b)),
        "mixkv-adakv": lambda b: op.MixKV(op.AdaKV(budget=b)),
        "mixkv-pyramidkv": lambda b: op.MixKV(op.PyramidKV(budget=b)),
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


def compare(family: str, press_names: list[str], budget: int, max_new_tokens: int, video_frames: int) -> str:
    """Run the untouched model and each press on one real-image prompt; return a side-by-side table."""
    from omnipress.testing import tiny_inputs, tiny_model

    model = tiny_model(family)
    inputs = tiny_inputs(family, model, image=True, video_frames=video_frames, question="Describe the image.")
    factories = _presses()
    unknown = [p for p in press_names if p not in factories]
    if unknown:
        raise SystemExit(f"unknown press {unknown}; choose from {sorted(factories)}")
    base_tokens, base_s, base_bytes = _run_once(model, inputs, None, max_new_tokens)
    rows = [("none", len(inputs["input_ids"][0]), base_bytes, base_s, 1.0, "")]
    reports = []
    for name in press_names:
        press = factories[name](budget)
        tokens, seconds, kv_bytes = _run_once(model, inputs, press, max_new_tokens)
        report = press.report
        reports.append(report)
        agree = sum(a == b for a, b in zip(tokens, base_tokens)) / max(1, len(base_tokens))
        kept = f"{report.tokens_after / max(1, len(report.layers) * report.batch_size * report.num_kv_heads):.0f}"
        rows.append((name, kept, kv_bytes, seconds, agree, f"{report.prefill_seconds * 1e3:.1f}"))
    lines = [
        f"model: tiny random {family} (built from config, no download); prompt: {inputs['input_ids'].shape[1]} tokens "
        f"with a real image; budget {budget} entries per KV head",
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
    demo.add_argument("--max-new-tokens", type=int, default=8)

    cmp_ = sub.add_parser("compare", help="untouched model vs several presses, side by side")
    cmp_.add_argument("--family", default="qwen2_vl")
    cmp_.add_argument("--presses", default="snapkv,adakv,mixkv-snapkv,mixkv-adakv")
    cmp_.add_argument("--budget", type=int, default=48)
    cmp_.add_argument("--max-new-tokens", type=int, default=8)
    cmp_.add_argument("--video-frames", type=int, default=0)

    eeg = sub.add_parser("eeg", help="RAICL EEG seizure detection pipeline (needs the [eeg] extra)", add_help=False)
    eeg.add_argument("rest", nargs=argparse.REMAINDER)

    args, rest = parser.parse_known_args(argv)
    if args.command == "eeg":
        from omnipress.eeg.cli import main as eeg_main

        return eeg_main([*args.rest, *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        print(compare(args.family, ["mixkv-adakv"], args.budget, args.max_new_tokens, 0))
    else:
        names = [p.strip() for p in args.presses.split(",") if p.strip()]
        print(compare(args.family, names, args.budget, args.max_new_tokens, args.video_frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
