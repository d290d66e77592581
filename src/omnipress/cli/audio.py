"""`omnipress transcribe` and `omnipress eval-asr`: Whisper speech recognition under omnipress methods.

    omnipress transcribe clip.wav --model whisper-tiny-en --press audiokv --compression 0.4
    omnipress eval-asr manifest.jsonl --methods full,audiokv:0.4,headrouter:0.7,snapkv:0.4

Method specs are `name:ratio` or `name[knob=value;...]:ratio`: the compression (fraction removed) for KV presses, the
retained share of audio tokens for token pruners (`omnipress.asr.methods`). No torch import at module level.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .errors import CLIError, UsageError
from .options import HelpFormatter, _positive_int
from .progress import Progress

DEFAULT_MODEL = "whisper-tiny-en"
DEFAULT_METHODS = "full,audiokv:0.4,headrouter:0.7,snapkv:0.4"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser(
        "transcribe",
        help="transcribe audio files with Whisper, optionally under a KV press or token pruner",
        description="Transcribe each audio file (any format FFmpeg reads, at most 30 s) with Whisper "
        "(default: tiny.en, real weights offline) under one omnipress method, and print the text with the "
        "decode time per token and the KV cache bytes.",
        formatter_class=HelpFormatter,
    )
    tr.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files")
    tr.add_argument(
        "--press", metavar="NAME", help="a method name, with knobs as name[knob=value;...] (see eval-asr --help)"
    )
    tr.add_argument("--compression", type=float, metavar="C", help="a KV press's compression ratio, in [0, 1)")
    tr.add_argument("--retain", type=float, metavar="R", help="a token pruner's retained share, in (0, 1]")
    _add_common(tr)

    ev = sub.add_parser(
        "eval-asr",
        help="WER, decode ms/token and KV bytes of several methods over a speech manifest",
        description="Transcribe every utterance of a JSONL manifest ({'audio': path relative to the manifest, "
        "'text': reference}) under each method and print one row per method: WER (Whisper-normalised), decode "
        "ms per token (median) and KV cache bytes (mean). With --results, each transcript is written as it is "
        "done and a rerun resumes where it stopped.",
        formatter_class=HelpFormatter,
    )
    ev.add_argument("manifest", type=Path, metavar="MANIFEST", help="JSONL manifest")
    ev.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        metavar="SPECS",
        help="comma-separated name[:ratio], knobs as name[knob=value;...]:ratio: full, KV presses with a "
        "compression (snapkv, adakv, pyramidkv, h2o, streamingllm, knorm, random, mixkv, audiokv, audiokv-topk) and "
        "token pruners with a retained share (headrouter, headrouter-topk, fastv, dart, frame, random-tokens); the "
        f"-topk variants rank the whole audio span at once, without temporal coverage (default: {DEFAULT_METHODS})",
    )
    ev.add_argument("--results", type=Path, metavar="FILE", help="JSONL file of per-utterance results (resumable)")
    ev.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N utterances")
    _add_common(ev)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="NAME", help="whisper-tiny-en or a folder with a saved Whisper"
    )
    parser.add_argument("--num-beams", type=_positive_int, default=5, metavar="N", help="beam search width")
    parser.add_argument("--max-new-tokens", type=_positive_int, metavar="N", help="cap on generated tokens")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="AudioKV head profile (JSON)")
    parser.add_argument("--router-profiles", type=Path, metavar="FILE", help="HeadRouter task profiles (JSON)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error"
    )


def check(args: argparse.Namespace) -> None:
    from ..asr.methods import METHODS, parse_method_list, parse_method_spec

    if args.model != DEFAULT_MODEL and not Path(args.model).is_dir():
        raise CLIError(f"--model {args.model}: neither {DEFAULT_MODEL} nor a model folder")
    for flag, path in (("--profile", args.profile), ("--router-profiles", args.router_profiles)):
        if path is not None and not path.is_file():
            raise CLIError(f"{flag} {path}: file not found")
    if args.command == "transcribe":
        for name in args.audio:
            if not Path(name).is_file():
                raise CLIError(f"audio file not found: {name}")
        if args.press is None:
            if args.compression is not None or args.retain is not None:
                raise UsageError("--compression/--retain need --press")
            args.spec = parse_method_spec("full")
            return
        kind = METHODS.get(args.press.partition("[")[0].strip().lower())
        if kind is None:
            raise UsageError(f"--press {args.press}: unknown method; known: {', '.join(METHODS)}")
        wanted, other = ("compression", "retain") if kind.stage == "kv" else ("retain", "compression")
        if getattr(args, other) is not None:
            raise UsageError(f"--{other} does not apply to {kind.name}; it takes --{wanted}")
        value = getattr(args, wanted)
        if value is None:
            raise UsageError(f"--press {kind.name} needs --{wanted}")
        try:
            args.spec = parse_method_spec(f"{args.press}:{value}")
        except ValueError as error:
            raise UsageError(str(error)) from None
        _check_knobs([args.spec])
        return
    if not args.manifest.is_file():
        raise CLIError(f"manifest not found: {args.manifest}")
    if args.results is not None and not args.results.parent.is_dir():
        raise UsageError(f"--results {args.results}: the folder {args.results.parent} does not exist")
    try:
        args.specs = parse_method_list(args.methods)
    except ValueError as error:
        raise UsageError(f"--methods: {error}") from None
    _check_knobs(args.specs)


def _check_knobs(specs: list[Any]) -> None:
    """Unknown knob names fail here, before the model loads (this imports the classes of specs with knobs)."""
    from ..asr.methods import MethodUnavailableError, check_knobs

    for spec in specs:
        if spec.knobs:
            try:
                check_knobs(spec)
            except (MethodUnavailableError, ValueError) as error:
                raise UsageError(f"{spec.label}: {error}") from None


def method_options(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """Profiles for AudioKV / HeadRouter from --profile / --router-profiles (checked against the model), else the
    ones shipped in the package for this model, if any."""
    from ..asr.methods import shipped_method_options

    options: dict[str, Any] = shipped_method_options(model)
    try:
        if args.profile is not None:
            from ..profiles import HeadProfile

            options["profile"] = HeadProfile.load(args.profile, model=model)
        if args.router_profiles is not None:
            from ..profiles.router import RouterProfiles

            options["profiles"] = RouterProfiles.load(args.router_profiles, model=model)
    except ValueError as error:
        raise CLIError(str(error)) from None
    return options


def load_model(name: str) -> tuple[Any, Any]:
    from ..asr.models import load_asr_model

    try:
        return load_asr_model(name)
    except FileNotFoundError as error:
        raise CLIError(str(error)) from None


def run(args: argparse.Namespace, progress: Progress) -> int:
    from ..asr.methods import MethodUnavailableError

    with progress.step(f"loading {args.model}"):
        model, processor = load_model(args.model)
    options = method_options(args, model)
    try:
        if args.command == "transcribe":
            return _transcribe(args, progress, model, processor, options)
        return _eval(args, progress, model, processor, options)
    except MethodUnavailableError as error:
        raise CLIError(str(error)) from None


def _build(spec: Any, options: dict[str, Any]) -> Any:
    from ..asr.methods import build_method

    try:
        return build_method(spec, **options)
    except (TypeError, ValueError) as error:
        raise CLIError(f"{spec.label}: {error}") from None


def _transcribe(
    args: argparse.Namespace, progress: Progress, model: Any, processor: Any, options: dict[str, Any]
) -> int:
    from ..asr.manifest import load_audio
    from ..asr.transcription import transcribe

    rows = []
    for index, name in enumerate(args.audio, start=1):
        try:
            audio = load_audio(name)
        except (FileNotFoundError, ValueError) as error:
            raise CLIError(str(error)) from None
        method = _build(args.spec, options)
        with progress.step(f"transcribing {index}/{len(args.audio)} {name} ({args.spec.label})"):
            try:
                result = transcribe(
                    model, processor, audio, method=method, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens
                )
            except ValueError as error:
                raise CLIError(f"{name}: {error}") from None
        print(f"{name}: {result.text}")
        print(
            f"  {args.spec.label}: {result.decode_ms_per_token:.1f} ms/token, KV {result.kv_bytes / 2**20:.2f} MiB "
            f"(cross-attention {result.cross_kv_bytes / 2**20:.2f} MiB), audio positions {result.audio_positions}"
        )
        rows.append(
            {
                "audio": name,
                "method": args.spec.label,
                "text": result.text,
                "decode_ms_per_token": result.decode_ms_per_token,
                "kv_bytes": result.kv_bytes,
                "cross_kv_bytes": result.cross_kv_bytes,
            }
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _eval(args: argparse.Namespace, progress: Progress, model: Any, processor: Any, options: dict[str, Any]) -> int:
    from ..asr.evaluate import KEY_FIELDS, evaluate_asr, summary_table
    from ..asr.manifest import read_manifest
    from ..asr.results import ResultsFile

    try:
        items = read_manifest(args.manifest)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from None
    items = items[: args.limit] if args.limit else items
    for spec in args.specs:  # unavailable methods and bad profiles fail before any transcription
        _build(spec, options)
    try:
        results = ResultsFile(args.results, KEY_FIELDS) if args.results is not None else None
    except ValueError as error:
        raise CLIError(str(error)) from None
    current: dict[str, Any] = {}

    def on_start(spec: Any, item: Any, done: int, total: int) -> None:
        step = current.pop("step", None)
        if step is not None:
            step.__exit__(None, None, None)
        current["step"] = progress.step(f"[{done + 1}/{total}] {spec.label} {item.key}")
        current["step"].__enter__()

    try:
        summaries = evaluate_asr(
            model,
            processor,
            items,
            args.specs,
            results=results,
            num_beams=args.num_beams,
            max_new_tokens=(lambda item, n: args.max_new_tokens) if args.max_new_tokens else None,
            method_options=options,
            extra={"model": args.model},
            on_start=on_start,
        )
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(str(error)) from None
    finally:
        step = current.pop("step", None)
        if step is not None:
            step.__exit__(None, None, None)
    print(summary_table(summaries))
    if args.json is not None:
        args.json.write_text(json.dumps([s.to_dict() for s in summaries], indent=2))
    return 0
