"""The `omnipress` argument parser and the checks of its options (no torch import: help and errors come at once)."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from .. import __version__
from .errors import CLIError, UsageError

#: the press names `--presses` accepts (the keys of `omnipress.cli.compare.PRESSES`)
PRESS_NAMES: tuple[str, ...] = (
    "snapkv",
    "pyramidkv",
    "adakv",
    "h2o",
    "knorm",
    "streamingllm",
    "random",
    "mixkv-snapkv",
    "mixkv-adakv",
    "mixkv-pyramidkv",
)
#: the tiny built-in model families `--family` accepts (`omnipress.testing.FAMILIES`)
FAMILIES: tuple[str, ...] = (
    "llama",
    "qwen2",
    "qwen3",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "llava",
    "llava_onevision",
    "qwen2_audio",
    "qwen2_5_omni",
)
DEFAULT_FAMILY = "qwen2_vl"
DEFAULT_PRESSES = "snapkv,adakv,mixkv-snapkv,mixkv-adakv"
DEFAULT_TEXT = "Describe the image."
#: compare's options that build a prompt for `--model` and mean nothing for the tiny built-in model
MODEL_ONLY = ("image", "video", "audio", "text", "text_file", "gguf_file")
#: compare's options for the tiny built-in model only
TINY_ONLY = ("family", "video_frames")
#: further subcommands: name -> module of this package defining `add_parsers(sub)` (adds every subcommand the module
#: runs; no torch import at module level, so help and option errors stay instant), `check(args)` (raises
#: `UsageError`/`CLIError`) and `run(args, progress) -> int`
COMMAND_MODULES: dict[str, str] = {
    "stream": "stream",
    "transcribe": "audio",
    "eval-asr": "audio",
    "profile": "profile",
}
#: `name` or `namespace/name`, the shape of a Hugging Face Hub id (anything else is taken as a local path)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

FAMILY_HELP = f"tiny built-in model family, one of: {', '.join(FAMILIES)}"
DESCRIPTION = "Compress the KV cache of transformers multimodal models and compare presses side by side."
EPILOG = """examples:
  omnipress demo --family llava
  omnipress compare --presses snapkv,mixkv-snapkv --budget 48 --video-frames 4
  omnipress compare --model /models/Qwen2.5-VL-3B-Instruct --image photo.jpg --text "What is shown?" --budget 128
  omnipress stream clip.mp4 --question "What happens?" --at 10 --tokens-per-frame 64 --memory window
  omnipress eeg --help

Add --debug to see the Python traceback of an error."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line (`omnipress compare: error: ...`), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends `(default: ...)` to an option's help where the default means something and the help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or default == [] or "default" in text or not action.help:
            return action.help
        return f"{text} (default: {default})"


class RawHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """`HelpFormatter` that keeps the description's and epilog's line breaks (the examples)."""


def build_parser() -> Parser:
    """The parser of `omnipress demo|compare|eeg` and the subcommands of `COMMAND_MODULES`."""
    parser = Parser(prog="omnipress", description=DESCRIPTION, epilog=EPILOG, formatter_class=RawHelpFormatter)
    parser.add_argument("--version", action="version", version=f"omnipress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_demo(sub)
    _add_compare(sub)
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        command_module(module).add_parsers(sub)
    eeg = sub.add_parser("eeg", help="RAICL EEG seizure detection pipeline (needs the eeg extra)", add_help=False)
    eeg.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def command_module(name: str) -> ModuleType:
    """The module `omnipress.cli.<name>` of a subcommand in `COMMAND_MODULES`."""
    return importlib.import_module(f".{name}", __package__)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="compress a real-media prompt on a tiny built-in model and print the report",
        description="MixKV-AdaKV on a real-media prompt of a tiny random-weight model built from its config "
        "(nothing is downloaded): the untouched model and the press side by side, then the press's report.",
        formatter_class=HelpFormatter,
    )
    demo.add_argument("--family", choices=FAMILIES, default=DEFAULT_FAMILY, metavar="FAMILY", help=FAMILY_HELP)
    demo.add_argument(
        "--budget",
        type=_positive_int,
        metavar="N",
        help="KV entries kept per head, window included (default: half the prompt)",
    )
    _add_run_options(demo)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    cmp_ = sub.add_parser(
        "compare",
        help="untouched model vs several presses, side by side",
        description="Generate with the untouched model and under each press on one prompt, and print a table: "
        "KV entries kept per head, KV memory held, generate and prefill time, and the fraction of generated tokens "
        "equal to the untouched model's. Without --model the prompt is a tiny built-in model's.",
        formatter_class=HelpFormatter,
    )
    cmp_.add_argument(
        "--presses",
        default=DEFAULT_PRESSES,
        metavar="NAMES",
        help=f"comma-separated press names, from: {', '.join(PRESS_NAMES)} (default: {DEFAULT_PRESSES})",
    )
    cmp_.add_argument(
        "--budget", type=_positive_int, default=48, metavar="N", help="KV entries kept per head, window included"
    )
    tiny = cmp_.add_argument_group("tiny built-in model (without --model)")
    tiny.add_argument("--family", choices=FAMILIES, metavar="FAMILY", help=f"{FAMILY_HELP} (default: {DEFAULT_FAMILY})")
    tiny.add_argument(
        "--video-frames", type=_non_negative_int, metavar="N", help="frames of real video in the prompt (default: 0)"
    )
    own = cmp_.add_argument_group("your model (--model)")
    own.add_argument("--model", metavar="FOLDER", help="a local model folder (or a hub id) of any supported family")
    own.add_argument("--gguf-file", metavar="NAME", help="GGUF file name inside the --model folder (real extra)")
    own.add_argument("--text", help=f"the question (default: {DEFAULT_TEXT!r})")
    own.add_argument("--text-file", metavar="FILE", help="put this file's text before the question (long contexts)")
    own.add_argument("--image", action="append", metavar="FILE", help="an image for the prompt (repeat for several)")
    own.add_argument("--video", metavar="FILE", help="a video for the prompt")
    own.add_argument("--audio", metavar="FILE", help="an audio clip for the prompt")
    _add_run_options(cmp_)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window",
        type=_non_negative_int,
        metavar="N",
        help="observation window, always kept (default: 32, at most half the budget)",
    )
    parser.add_argument("--max-new-tokens", type=_positive_int, default=8, metavar="N", help="tokens to generate")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save the table (and each report) as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error"
    )


def check_args(args: argparse.Namespace) -> None:
    """Refuse options that do not go together (`UsageError`) and missing files or folders (`CLIError`)."""
    if getattr(args, "json", None) is not None and not args.json.parent.is_dir():
        raise UsageError(f"--json {args.json}: the folder {args.json.parent} does not exist")
    if args.command in COMMAND_MODULES:
        command_module(COMMAND_MODULES[args.command]).check(args)
        return
    if args.command != "compare":
        return
    if args.model is None:
        given = [_flag(name) for name in MODEL_ONLY if getattr(args, name) is not None]
        if given:
            raise UsageError(
                f"{_listing(given, 'needs', 'need')} --model (a model folder); without --model, compare runs a tiny "
                "built-in model on its own prompt"
            )
    else:
        given = [_flag(name) for name in TINY_ONLY if getattr(args, name) is not None]
        if given:
            raise UsageError(f"{_listing(given, 'is', 'are')} for the tiny built-in model and cannot go with --model")
    press_list(args.presses)
    if args.model is not None:
        check_model_path(args.model, args.gguf_file)
        for name in [*(args.image or []), args.video, args.audio, args.text_file]:
            if name is not None and not Path(name).is_file():
                raise CLIError(f"file not found: {name}")


def check_model_path(path: str, gguf_file: str | None = None) -> None:
    """`CLIError` unless `path` is a model folder (holding `gguf_file` if given) or has the shape of a hub id."""
    local = Path(path).expanduser()
    if local.is_dir():
        if gguf_file and not (local / gguf_file).is_file():
            raise CLIError(f"GGUF file {gguf_file} not found in the model folder {path}")
    elif local.exists():
        hint = " (give its folder as --model and its name as --gguf-file)" if local.suffix == ".gguf" else ""
        raise CLIError(f"--model {path} is a file, not a model folder{hint}")
    elif not HUB_ID.fullmatch(path) or path.endswith("."):
        raise CLIError(f"model folder {path} does not exist")


def press_list(spec: str) -> list[str]:
    """The names of a comma-separated `--presses`; `UsageError` for an empty list or an unknown name."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    valid = ", ".join(PRESS_NAMES)
    if not names:
        raise UsageError(f"--presses is empty; give one or more of: {valid}")
    unknown = [name for name in names if name not in PRESS_NAMES]
    if unknown:
        raise UsageError(f"unknown press {', '.join(map(repr, unknown))} in --presses; choose from: {valid}")
    return names


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _listing(flags: list[str], singular: str, plural: str) -> str:
    """`--video needs` / `--video and --audio need`."""
    return f"{flags[0]} {singular}" if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]} {plural}"


def _positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value
