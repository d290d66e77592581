"""`omnipress demo` and `omnipress compare`: build the model and prompt, run the presses, print (and save) the table."""

from __future__ import annotations

import argparse

import torch

from ..kv.base import KVPress
from .compare import Comparison, default_window, make_presses, run_comparison
from .models import load_model, read_text, tiny_prompt, user_prompt
from .options import DEFAULT_FAMILY, DEFAULT_TEXT, press_list
from .progress import Progress

DEMO_PRESS = "mixkv-adakv"


def demo(args: argparse.Namespace, progress: Progress) -> Comparison:
    """MixKV-AdaKV on a tiny model's real-media prompt, with a budget of half the prompt unless one is given."""
    with progress.step(f"building the tiny {args.family} model and its prompt"):
        model, inputs = tiny_prompt(args.family)
    budget = args.budget or max(1, inputs["input_ids"].shape[1] // 2)
    window = default_window(budget) if args.window is None else args.window
    presses = make_presses([DEMO_PRESS], budget, window)
    label = f"tiny random {args.family} (built from config, no download)"
    return _run(args, model, inputs, presses, budget, window, label, progress)


def compare(args: argparse.Namespace, progress: Progress) -> Comparison:
    """The untouched model and each of `--presses` on the tiny model's prompt or on `--model` with the user's media."""
    window = default_window(args.budget) if args.window is None else args.window
    presses = make_presses(press_list(args.presses), args.budget, window)
    if args.model is None:
        family = args.family or DEFAULT_FAMILY
        with progress.step(f"building the tiny {family} model and its prompt"):
            model, inputs = tiny_prompt(family, args.video_frames or 0)
        label = f"tiny random {family} (built from config, no download)"
    else:
        with progress.step(f"loading {args.model}"):
            model, processor = load_model(args.model, gguf_file=args.gguf_file)
        text = args.text if args.text is not None else DEFAULT_TEXT
        if args.text_file is not None:
            text = read_text(args.text_file) + "\n\n" + text
        with progress.step("building the prompt"):
            inputs = user_prompt(
                model, processor, text=text, images=args.image or (), video=args.video, audio=args.audio
            )
        label = args.model
    return _run(args, model, inputs, presses, args.budget, window, label, progress)


def _run(
    args: argparse.Namespace,
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    presses: dict[str, KVPress],
    budget: int,
    window: int,
    label: str,
    progress: Progress,
) -> Comparison:
    """Run the comparison, print its table and save it as JSON where `--json` asks."""
    comparison = run_comparison(
        model,
        inputs,
        presses,
        budget=budget,
        window=window,
        max_new_tokens=args.max_new_tokens,
        label=label,
        progress=progress,
    )
    print(comparison.table())
    if args.json is not None:
        comparison.save_json(args.json)
    return comparison
