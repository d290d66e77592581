"""`omnipress profile ...`: measure and inspect offline profiles (versioned JSON files, `omnipress.profiles`).

    omnipress profile audio-heads manifest.jsonl --out whisper-tiny.en.json --include 'harvard_0*' \\
        --include harvard_10.wav --include harvard_long_1.wav
    omnipress profile show whisper-tiny.en.json

Subcommands live in `PROFILE_COMMANDS` (name -> (add_parser, check, run)); another profile kind adds its own entry.
No torch import at module level.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CLIError, UsageError
from .options import HelpFormatter, _positive_int
from .profile_routing import ROUTING_COMMAND
from .progress import Progress

DEFAULT_MODEL = "whisper-tiny-en"
TINY_FAMILIES = ("whisper", "qwen2_audio", "qwen2_5_omni")


def _add_audio_heads(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audio-heads",
        help="find audio-critical heads by ASR alignment (AudioKV's head profile)",
        description="Teacher-force each (audio, transcript) pair of a JSONL manifest ({'audio': path relative to the "
        "manifest, 'text': reference, optional 'words': [[start, end] seconds per word]}) through the model and score "
        "how well each head's attention over the audio follows the words (timestamp-free monotonicity by default, "
        "word-timestamp hits when every line has 'words'). Writes a versioned JSON head profile (load it with "
        "HeadProfile.load or pass it to AudioKV). Whisper: decoder cross-attention; Qwen2-Audio / Qwen2.5-Omni: the "
        "LLM self-attention over the audio span.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("manifest", type=Path, metavar="MANIFEST", help="JSONL manifest of calibration clips")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the profile (JSON)")
    p.add_argument(
        "--model",
        metavar="NAME",
        help=f"{DEFAULT_MODEL} (default, real weights offline) or a local Whisper / Qwen2-Audio / Qwen2.5-Omni folder",
    )
    p.add_argument(
        "--family",
        choices=TINY_FAMILIES,
        help="a tiny random-weight model of this family instead of --model (to try the pipeline; no real heads)",
    )
    p.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="only clips whose audio path matches this shell pattern (repeat; default: every clip)",
    )
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N (matching) clips")
    p.add_argument(
        "--score",
        choices=("auto", "monotonicity", "hit", "mass"),
        default="auto",
        help="alignment score: auto = hit with word timestamps on every clip, else monotonicity",
    )
    p.add_argument("--tolerance", type=float, default=0.15, metavar="S", help="seconds around each word (timestamps)")
    p.add_argument("--name", metavar="NAME", help="model name written in the profile (default: the model's own)")
    p.add_argument("--description", metavar="TEXT", help="calibration data description written in the profile")
    _add_common(p)


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="print a profile file's model, calibration data, settings and strongest heads",
        formatter_class=HelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="a profile file, or the name of a profile shipped with omnipress")
    p.add_argument("--top", type=_positive_int, default=8, metavar="N", help="heads listed (default 8)")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error"
    )


def _check_audio_heads(args: argparse.Namespace) -> None:
    if args.model is not None and args.family is not None:
        raise UsageError("--family is for a tiny built-in model and cannot go with --model")
    if args.model is not None and args.model != DEFAULT_MODEL and not Path(args.model).is_dir():
        raise CLIError(f"--model {args.model}: neither {DEFAULT_MODEL} nor a model folder")
    if not args.manifest.is_file():
        raise CLIError(f"manifest not found: {args.manifest}")
    if not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {args.out.parent} does not exist")
    if not args.tolerance >= 0:
        raise UsageError(f"--tolerance must be >= 0, got {args.tolerance}")


def _check_show(args: argparse.Namespace) -> None:
    from ..profiles import shipped_profiles
    from ..profiles.head_profile import shipped_name

    if not Path(args.file).is_file() and shipped_name(args.file) is None:
        raise CLIError(f"profile not found: {args.file} (shipped: {', '.join(sorted(shipped_profiles())) or 'none'})")


def _load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    if args.family is not None:
        from ..testing import tiny_model, tiny_processor

        model = tiny_model(args.family)
        if args.family == "whisper":
            import transformers as T

            from ..testing import local_tokenizer

            extractor = T.WhisperFeatureExtractor(feature_size=model.config.num_mel_bins, sampling_rate=16000)
            return model, T.WhisperProcessor(feature_extractor=extractor, tokenizer=local_tokenizer("whisper"))
        return model, tiny_processor(args.family, model)
    name = args.model or DEFAULT_MODEL
    if name == DEFAULT_MODEL or _is_whisper_folder(name):
        from ..asr.models import load_asr_model

        try:
            return load_asr_model(name)
        except (FileNotFoundError, ImportError) as error:
            raise CLIError(str(error)) from None
    import transformers as T

    config = T.AutoConfig.from_pretrained(name)
    classes = {
        "qwen2_audio": T.Qwen2AudioForConditionalGeneration,
        "qwen2_5_omni": T.Qwen2_5OmniThinkerForConditionalGeneration,
    }
    cls = classes.get(config.model_type)
    if cls is None:
        raise CLIError(
            f"--model {name}: a {config.model_type} model; audio heads are profiled on Whisper, "
            "Qwen2-Audio and Qwen2.5-Omni"
        )
    return cls.from_pretrained(name).eval(), T.AutoProcessor.from_pretrained(name)


def _is_whisper_folder(name: str) -> bool:
    config = Path(name) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "whisper"


def _run_audio_heads(args: argparse.Namespace, progress: Progress) -> int:
    from ..asr.manifest import load_audio, read_manifest
    from ..profiles import audio_head_profile
    from ..profiles.calibrate import speech_sample, transcript_token_times
    from ..weights_whisper import WHISPER_TINY_EN

    try:
        items = read_manifest(args.manifest)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from None
    if args.include:
        items = [i for i in items if any(fnmatch.fnmatch(i.key, pattern) for pattern in args.include)]
    if args.limit is not None:
        items = items[: args.limit]
    if not items:
        raise CLIError(f"no clip of {args.manifest} matches --include {' '.join(args.include or [])}")
    with progress.step(f"loading {args.family or args.model or WHISPER_TINY_EN}"):
        model, processor = _load_model(args)
    from ..adapters import get_adapter

    whisper = get_adapter(model).is_encoder_decoder
    tokenizer = getattr(processor, "tokenizer", processor)
    samples = []
    with progress.bar("preparing", total=len(items), unit="clips") as bar:
        for item in items:
            words = item.meta.get("words")
            try:
                times = (
                    None
                    if words is None
                    else transcript_token_times(
                        tokenizer, item.text, [tuple(w[-2:]) for w in words], leading_space=whisper
                    )
                )
                samples.append(
                    speech_sample(model, processor, load_audio(item), item.text, word_times=times, name=item.key)
                )
            except ValueError as error:
                raise CLIError(f"{item.key}: {error}") from None
            bar.advance()
    calibration = {
        "manifest": args.manifest.name,
        "clips": [item.key for item in items],
        "seconds": round(sum(float(item.meta.get("seconds", 0.0)) for item in items), 2),
    }
    if args.description:
        calibration["description"] = args.description
    with progress.step(f"scoring {len(samples)} clips"):
        profile = audio_head_profile(
            model, samples, score=args.score, tolerance=args.tolerance, name=args.name or "", calibration=calibration
        )
    profile.save(args.out)
    print(
        f"wrote {args.out}: {profile.kind} profile of {profile.model or type(model).__name__}, "
        f"{profile.num_layers} layers x {profile.num_kv_heads} KV heads, {len(samples)} clips, "
        f"score {profile.settings['score']}"
    )
    print(_top_heads(profile, 8))
    return 0


def _top_heads(profile: Any, top: int) -> str:
    flat = profile.scores.flatten()
    order = flat.argsort(descending=True)[:top].tolist()
    heads = profile.num_kv_heads
    return "strongest heads (layer, head: score): " + ", ".join(
        f"({i // heads}, {i % heads}: {float(flat[i]):.3f})" for i in order
    )


def _run_show(args: argparse.Namespace, progress: Progress) -> int:
    from ..profiles import HeadProfile, ProfileError

    try:
        profile = HeadProfile.load(args.file)
    except (ProfileError, FileNotFoundError) as error:
        raise CLIError(str(error)) from None
    assert profile.fingerprint is not None
    print(f"{args.file}: {profile.kind} profile, model {profile.fingerprint.describe()}")
    print(f"calibration: {json.dumps(profile.calibration)}")
    print(f"settings: {json.dumps(profile.settings)}")
    print(_top_heads(profile, args.top))
    return 0


#: profile subcommands: name -> (add its parser, check its options, run it)
PROFILE_COMMANDS: dict[str, tuple[Callable[..., None], Callable[..., None], Callable[..., int]]] = {
    "audio-heads": (_add_audio_heads, _check_audio_heads, _run_audio_heads),
    "show": (_add_show, _check_show, _run_show),
    "routing": ROUTING_COMMAND,
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `omnipress profile` and its subcommands."""
    p = sub.add_parser(
        "profile",
        help="measure or inspect offline profiles (audio-critical heads, ...)",
        description="Offline profiles are versioned JSON files bound to one model (name, layer and head counts), "
        "with the calibration data's description and the settings.",
        formatter_class=HelpFormatter,
    )
    inner = p.add_subparsers(dest="profile_command", metavar="SUBCOMMAND", required=True)
    for add, _, _ in PROFILE_COMMANDS.values():
        add(inner)


def check(args: argparse.Namespace) -> None:
    PROFILE_COMMANDS[args.profile_command][1](args)


def run(args: argparse.Namespace, progress: Progress) -> int:
    return PROFILE_COMMANDS[args.profile_command][2](args, progress)
