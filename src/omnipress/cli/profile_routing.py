"""`omnipress profile routing`: HeadRouter's task profiles from one calibration manifest per task.

    omnipress profile routing --task semantic=speech/manifest.jsonl --task acoustic=sounds/manifest.jsonl \\
        --out router.json --layer 2 --include 'harvard_0*'

Each task's manifest lists clips (`{"audio": path relative to the manifest, "text": ..., "question": optional}`);
the text is not used (profiles are unsupervised), the optional question is the prompt an audio LLM gets (default
"Transcribe the audio."). Registered in `omnipress.cli.profile.PROFILE_COMMANDS`. No torch import at module level.
"""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path
from typing import Any

from .errors import CLIError, UsageError
from .options import HelpFormatter, _positive_int
from .progress import Progress

QUESTION = "Transcribe the audio."


def add_routing(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "routing",
        help="build HeadRouter's task profiles (semantic vs acoustic head weights) from calibration manifests",
        description="Probe the text-to-audio attention of layer K-1 on every clip of each task's manifest and write "
        "HeadRouter's task profiles (position prior, behaviour centroids, sparse head weights) as a versioned JSON "
        "file (RouterProfiles.load, or HeadRouter(profiles=...)). Whisper: the decoder prompt's cross-attention.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="NAME=MANIFEST",
        help="a task (profile) and its JSONL calibration manifest (repeat: e.g. semantic=... acoustic=...)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the profiles (JSON)")
    p.add_argument("--model", metavar="NAME", help="whisper-tiny-en (default) or a local model folder")
    p.add_argument(
        "--family",
        choices=("whisper", "qwen2_audio", "qwen2_5_omni"),
        help="a tiny random-weight model of this family instead of --model (to try the pipeline)",
    )
    p.add_argument("--layer", type=_positive_int, default=2, metavar="K", help="HeadRouter's pruning layer (probe K-1)")
    p.add_argument("--include", action="append", metavar="PATTERN", help="only clips matching this shell pattern")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N clips per task")
    p.add_argument("--bins", type=_positive_int, default=32, metavar="B", help="position-prior bins (default 32)")
    p.add_argument("--head-fraction", type=float, default=0.15, metavar="F", help="share of weighted heads")
    p.add_argument("--name", metavar="NAME", help="model name written in the profiles (default: the model's own)")
    p.add_argument("--description", metavar="TEXT", help="calibration data description written in the profiles")
    p.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error"
    )


def _tasks(args: argparse.Namespace) -> dict[str, Path]:
    tasks: dict[str, Path] = {}
    for entry in args.task:
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"--task {entry!r}: expected NAME=MANIFEST")
        if name in tasks:
            raise UsageError(f"--task {name} given twice")
        tasks[name.strip()] = Path(path.strip())
    return tasks


def check_routing(args: argparse.Namespace) -> None:
    if args.model is not None and args.family is not None:
        raise UsageError("--family is for a tiny built-in model and cannot go with --model")
    for name, path in _tasks(args).items():
        if not path.is_file():
            raise CLIError(f"--task {name}: manifest not found: {path}")
    if not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {args.out.parent} does not exist")
    if not 0.0 < args.head_fraction <= 1.0:
        raise UsageError(f"--head-fraction must be in (0, 1], got {args.head_fraction}")


def _sample(model: Any, processor: Any, audio: Any, question: str) -> dict[str, Any]:
    import torch

    from ..adapters import get_adapter
    from ..profiles.calibrate import whisper_prompt_ids

    if get_adapter(model).family == "whisper":
        encoded = processor.feature_extractor(
            audio, sampling_rate=16000, return_attention_mask=True, return_tensors="pt"
        )
        return {
            "input_features": encoded["input_features"],
            "attention_mask": encoded["attention_mask"],
            "decoder_input_ids": torch.tensor([whisper_prompt_ids(model)]),
        }
    from ..generation import build_inputs

    return dict(build_inputs(model, processor, text=question, audio=[audio]))


def run_routing(args: argparse.Namespace, progress: Progress) -> int:
    from ..asr.manifest import load_audio, read_manifest
    from ..profiles.router import RouterProfiles
    from .profile import _load_model

    tasks = _tasks(args)
    chosen = {}
    for name, path in tasks.items():
        try:
            items = read_manifest(path)
        except (FileNotFoundError, ValueError) as error:
            raise CLIError(str(error)) from None
        if args.include:
            items = [i for i in items if any(fnmatch.fnmatch(i.key, pattern) for pattern in args.include)]
        items = items[: args.limit] if args.limit is not None else items
        if not items:
            raise CLIError(f"--task {name}: no clip of {path} matches --include {' '.join(args.include or [])}")
        chosen[name] = items
    with progress.step(f"loading {args.family or args.model or 'whisper-tiny-en'}"):
        model, processor = _load_model(args)
    calibration = {}
    total = sum(len(items) for items in chosen.values())
    with progress.bar("preparing", total=total, unit="clips") as bar:
        for name, items in chosen.items():
            samples = []
            for item in items:
                samples.append(_sample(model, processor, load_audio(item), str(item.meta.get("question", QUESTION))))
                bar.advance()
            calibration[name] = samples
    description = args.description or "; ".join(
        f"{name}: {len(items)} clips of {tasks[name].name}" for name, items in chosen.items()
    )
    with progress.step(f"probing {total} clips"):
        try:
            profiles = RouterProfiles.build(
                model,
                calibration,
                probe_layer=args.layer - 1,
                bins=args.bins,
                head_fraction=args.head_fraction,
                description=description,
                model_name=args.name or "",
            )
        except ValueError as error:
            raise CLIError(str(error)) from None
    profiles.save(args.out)
    weighted = {
        name: [int(h) for h in profiles.weights[i].nonzero().squeeze(-1).tolist()]
        for i, name in enumerate(profiles.names)
    }
    print(
        f"wrote {args.out}: headrouter profiles of {profiles.model.describe()}, probe layer {profiles.probe_layer}, "
        f"weighted heads {weighted}"
    )
    return 0


#: the `PROFILE_COMMANDS` entry of `omnipress profile routing`
ROUTING_COMMAND = (add_routing, check_routing, run_routing)
