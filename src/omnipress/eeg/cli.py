"""``omnipress eeg ...``: the RAICL pipeline from the command line (`EXAMPLES` lists the stages).

Every stage shows a progress bar (``--quiet`` hides it) and can be rerun: finished work is skipped. A user error
(a missing file, a bad value, a server that is not there, a missing extra) prints one line starting with ``error:``
and exits with 1 (``--debug`` also prints the traceback); anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, NoReturn

from omnipress.eeg.backends.base import BackendFatalError
from omnipress.eeg.windows import RULES
from omnipress.extras import MissingExtraError

EMBEDDER_HELP = "'features' (no weights) or 'clip:<local folder or hub id>' (transformers CLIPModel)"
EXAMPLES = """\
examples:
  omnipress eeg synth   --out cohort --patients 20 --seed 0            # synthetic EDF+ cohort
  omnipress eeg prepare cohort --out windows                            # EDF -> 4 s bipolar windows
  omnipress eeg import  CHSZ --dataset CHSZ --out windows               # or: the official X.npy / y.npy
  omnipress eeg render  --windows windows --out images --workers 2      # stacked-waveform PNGs
  omnipress eeg index   --windows windows --out index --embedder features
  omnipress eeg knn     --windows windows --index index --out runs/knn  # retrieval-only baseline
  omnipress eeg run     --windows windows --index index --images images --out runs/raicl \\
                        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
  omnipress eeg score   runs/raicl --plots runs/raicl/plots

Every stage shows a progress bar (--quiet hides it) and can be rerun: finished work is skipped.
"""
#: errors caused by what the user asked for: one line, exit code 1 (other exceptions are bugs: traceback)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MissingExtraError, BackendFatalError)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows every option's default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        unset = default is None or default is False or default == argparse.SUPPRESS
        if unset or "default" in text or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like the other errors of ``omnipress eeg``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def add_subparsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth|prepare|import|render|index|knn|run|score`` commands to an existing subparsers action.

    Each command sets ``func`` (called with the parsed namespace, returns an exit code).
    """
    _add_synth(subparsers)
    _add_prepare(subparsers)
    _add_import(subparsers)
    _add_render(subparsers)
    _add_index(subparsers)
    _add_knn(subparsers)
    _add_run(subparsers)
    _add_score(subparsers)


def build_parser(prog: str = "omnipress eeg") -> argparse.ArgumentParser:
    """The ``omnipress eeg`` parser: one subcommand per pipeline stage."""
    parser = _Parser(
        prog=prog,
        description="RAICL EEG seizure detection: EEG windows drawn as images, classified by a VLM with retrieved "
        "examples.",
        epilog=EXAMPLES,
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="eeg_command", required=True, metavar="command")
    add_subparsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``omnipress eeg``; returns the exit code (0 ok, 1 error, 130 interrupted).

    Usage errors exit through `SystemExit` with code 2, as argparse does.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print the traceback of an error")


def _number(kind: type, low: float, strict: bool):
    """An argparse type: a `kind` number above `low` (``strict``) or at least `low`."""
    bound = f"> {low:g}" if strict else f">= {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (strict and value == low) or value != value:
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


POSITIVE_INT = _number(int, 0, strict=True)
POSITIVE = _number(float, 0.0, strict=True)
NON_NEGATIVE = _number(float, 0.0, strict=False)
AT_LEAST_ONE = _number(float, 1.0, strict=False)


def _queries(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("queries (RAICL test-set protocol)")
    g.add_argument(
        "--queries",
        choices=("every", "all_seizures", "all"),
        default="every",
        help="every: rows that are multiples of --every (NICU); all_seizures: + all seizure windows (CHSZ); "
        "all: every window",
    )
    g.add_argument("--every", type=POSITIVE_INT, default=10, help="subsampling step")
    g.add_argument("--patients", nargs="+", default=None, help="only these patients")
    g.add_argument("--limit", type=POSITIVE_INT, default=None, help="at most this many queries (smoke tests)")


# --------------------------------------------------------------------------------------------------
# synth / prepare
# --------------------------------------------------------------------------------------------------
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic EDF+ cohort with seizure annotations")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--patients", type=POSITIVE_INT, default=20, help="number of patients")
    p.add_argument("--seed", type=int, default=0, help="random seed (patient i depends only on the seed and i)")
    p.add_argument("--minutes", type=POSITIVE, default=10.0, help="recorded minutes per patient")
    p.add_argument("--recordings", type=POSITIVE_INT, default=2, help="files per patient")
    p.add_argument(
        "--seizures", type=POSITIVE_INT, nargs=2, default=(2, 4), metavar=("MIN", "MAX"), help="seizures per patient"
    )
    p.add_argument("--seizure-gain", type=POSITIVE, default=1.0, help="seizure amplitude factor (lower = harder)")
    p.add_argument("--overwrite", action="store_true", help="write every file again, even those already there")
    _common(p)
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    from omnipress.eeg.synth import write_cohort

    before = {f: f.stat().st_mtime_ns for f in args.out.glob("*.edf")} if args.out.is_dir() else {}
    paths = write_cohort(
        args.out,
        patients=args.patients,
        seed=args.seed,
        minutes_per_patient=args.minutes,
        recordings_per_patient=args.recordings,
        seizures_per_patient=tuple(args.seizures),
        seizure_gain=args.seizure_gain,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    kept = sum(before.get(f) == f.stat().st_mtime_ns for f in paths)
    if kept == len(paths):
        print(f"{len(paths)} recordings in {args.out} are up to date (--overwrite to write them again)")
    else:
        already = f" ({kept} already there)" if kept else ""
        print(f"wrote {len(paths) - kept} recordings to {args.out}{already}")
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="read EDF/BDF recordings into labelled bipolar windows")
    p.add_argument("inputs", nargs="+", type=Path, help="recording files or folders")
    p.add_argument("--out", required=True, type=Path, help="WindowSet folder")
    p.add_argument("--annotations", type=Path, default=None, help="seizure annotation file (CHB-MIT, TUSZ, CSV, ...)")
    p.add_argument("--window", type=POSITIVE, default=4.0, help="window length in seconds")
    p.add_argument("--stride", type=POSITIVE, default=None, help="seconds between windows (default: the window length)")
    p.add_argument(
        "--rule",
        choices=RULES,
        default="any",
        help="labelling rule for windows straddling a seizure boundary",
    )
    p.add_argument("--sfreq", type=POSITIVE, default=256.0, help="resample to this rate in Hz")
    p.add_argument(
        "--band", type=POSITIVE, nargs=2, default=(0.5, 40.0), metavar=("LOW", "HIGH"), help="band-pass in Hz"
    )
    p.add_argument("--notch", type=POSITIVE, default=None, help="notch frequency in Hz (default: none)")
    p.add_argument(
        "--allow-truncated",
        action="store_true",
        help="keep a file shorter than its header declares (with a warning) instead of listing it in failures.csv",
    )
    p.add_argument("--overwrite", action="store_true", help="prepare every file again, even those done before")
    _common(p)
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from omnipress.eeg.io import TruncatedRecordingWarning
    from omnipress.eeg.prepare import prepare

    inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedRecordingWarning)  # printed below, one line per file
        result = prepare(
            inputs,
            args.out,
            annotations=args.annotations,
            window=args.window,
            stride=args.stride,
            rule=args.rule,
            sfreq=args.sfreq,
            band=tuple(args.band),
            notch=args.notch,
            allow_truncated=args.allow_truncated,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    reused = len(result.reused)
    if reused == len(result.recordings) + len(result.failures):
        print(f"{result.windows!r} in {args.out} is up to date (--overwrite to prepare it again)")
    else:
        note = f" ({reused} recordings reused from the earlier run)" if reused else ""
        print(f"{result.windows!r} -> {args.out}{note}")
    for truncation in result.truncated:
        if truncation.kept:
            print(f"warning: {truncation.message()}", file=sys.stderr)
    for _, message in result.failures:
        print(f"skipped: {message}", file=sys.stderr)
    if result.failures:
        print(f"{len(result.failures)} files skipped, listed in {args.out / 'failures.csv'}", file=sys.stderr)
    return 0


def _add_import(sub) -> None:
    p = sub.add_parser(
        "import", help="turn the official code's ready-made windows (X.npy, y.npy, subject counts) into a WindowSet"
    )
    p.add_argument("source", type=Path, help="folder holding X.npy and y.npy, or the X.npy file itself")
    p.add_argument("--out", required=True, type=Path, help="WindowSet folder")
    p.add_argument("--labels", type=Path, default=None, help="y.npy (default: beside X.npy)")
    p.add_argument(
        "--dataset",
        choices=("CHSZ", "NICU"),
        default=None,
        help="a published cohort: supplies its sampling rate and subject counts (CHSZ 250 Hz, 27 subjects; "
        "NICU 256 Hz, 39 subjects)",
    )
    p.add_argument(
        "--counts", default=None, help="windows per subject in storage order: '191,41,...' or a .txt/.json/.npy file"
    )
    p.add_argument("--sfreq", type=POSITIVE, default=None, help="sampling rate in Hz (default: the dataset's)")
    p.add_argument(
        "--channels", default=None, help="comma-separated channel names (default: the 18-channel double banana)"
    )
    p.add_argument(
        "--stride",
        type=POSITIVE,
        default=None,
        help="seconds between window starts within a subject, if known (default: the window length)",
    )
    p.add_argument("--overwrite", action="store_true", help="import again over an existing WindowSet")
    _common(p)
    p.set_defaults(func=_cmd_import)


def _cmd_import(args) -> int:
    from omnipress.eeg.official import import_official, read_counts

    if not args.source.exists():
        raise FileNotFoundError(f"no such file or directory: {args.source}")
    x_path = args.source / "X.npy" if args.source.is_dir() else args.source
    y_path = args.labels or x_path.with_name("y.npy")
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    counts = read_counts(args.counts) if args.counts else None
    request = {
        "X": _file_stamp(x_path),
        "y": _file_stamp(y_path),
        "dataset": args.dataset,
        "counts": counts,
        "sfreq": args.sfreq,
        "channels": channels,
        "stride": args.stride,
    }
    record = args.out / "import.json"
    if (args.out / "windows.npz").exists() and not args.overwrite:
        if record.exists() and json.loads(record.read_text()) == request:
            print(f"{args.out} is up to date (--overwrite to import again)")
            return 0
        raise ValueError(f"{args.out} already holds other windows; use --overwrite or another --out")
    windows = import_official(
        x_path, y_path, dataset=args.dataset, counts=counts, sfreq=args.sfreq, channels=channels, stride=args.stride
    )
    windows.save(args.out)
    record.write_text(json.dumps(request, indent=2))
    print(f"{windows!r} -> {args.out}")
    return 0


def _file_stamp(path: Path) -> dict[str, Any]:
    """Path, size and modification time of a file (``None`` fields if it is missing), to tell a rerun."""
    stat = path.stat() if path.is_file() else None
    return {
        "path": str(path.resolve()),
        "bytes": stat.st_size if stat else None,
        "mtime_ns": stat.st_mtime_ns if stat else None,
    }


# --------------------------------------------------------------------------------------------------
# render / index
# --------------------------------------------------------------------------------------------------
def _add_render(sub) -> None:
    p = sub.add_parser("render", help="draw windows as stacked-waveform PNGs (vision: retrieval, vlm: the VLM)")
    p.add_argument("--windows", required=True, type=Path, help="WindowSet folder (from prepare)")
    p.add_argument("--out", required=True, type=Path, help="image folder")
    p.add_argument("--kinds", default="vision,vlm", help="comma-separated: vision, vlm")
    p.add_argument(
        "--scaling",
        choices=("robust", "fixed"),
        default="robust",
        help="robust: RAICL per-window per-channel 1-99%% scaling; fixed: clinical µV per channel spacing",
    )
    p.add_argument("--uv-per-spacing", type=POSITIVE, default=200.0, help="µV per channel spacing for --scaling fixed")
    p.add_argument("--vision-size", type=POSITIVE_INT, default=None, help="vision image side in px (default: 512)")
    p.add_argument("--vlm-size", type=POSITIVE_INT, default=None, help="vlm image side in px (default: 1024)")
    p.add_argument("--workers", type=POSITIVE_INT, default=None, help="processes (default: all cores)")
    p.add_argument("--only-queries", action="store_true", help="render only the query windows (see the query options)")
    p.add_argument("--overwrite", action="store_true", help="re-render existing images / allow a new config")
    p.add_argument("--previews", action="store_true", help="also write the CLIP view and a JPEG-50 copy of window 0")
    p.add_argument(
        "--old-names",
        action="store_true",
        help="label vlm images with the old 10-20 names T3/T4/T5/T6, as the official images are",
    )
    _queries(p)
    _common(p)
    p.set_defaults(func=_cmd_render)


def _cmd_render(args) -> int:
    from omnipress.eeg.render import RenderConfig, render_windows, write_previews
    from omnipress.eeg.run import select_queries
    from omnipress.eeg.windows import WindowSet

    windows = WindowSet.load(args.windows)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    sizes = {"vision": args.vision_size, "vlm": args.vlm_size}
    configs = {
        k: RenderConfig(
            kind=k,
            size=sizes.get(k),
            scaling=args.scaling,
            uv_per_spacing=args.uv_per_spacing,
            old_names=args.old_names and k == "vlm",
        )
        for k in kinds
    }
    rows = None
    if args.only_queries:
        rows = select_queries(windows.label, args.queries, args.every, windows.patient, args.patients)
        rows = rows[: args.limit] if args.limit is not None else rows
    result = render_windows(
        windows,
        args.out,
        configs=configs,
        indices=rows,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"rendered {result.rendered} windows ({', '.join(kinds)}), skipped {result.skipped} already done, "
        f"{result.windows_per_second:.1f} windows/s -> {args.out}"
    )
    if args.previews:
        for path in write_previews(windows, args.out):
            print(f"preview: {path}")
    return 0


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="embed every window for retrieval and save the index")
    p.add_argument("--windows", required=True, type=Path, help="WindowSet folder (from prepare)")
    p.add_argument("--out", required=True, type=Path, help="index folder")
    p.add_argument("--embedder", default="features", help=EMBEDDER_HELP)
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="rendered image folder to reuse for image embedders (default: render in memory)",
    )
    p.add_argument(
        "--image-kind",
        choices=("vision", "vlm"),
        default="vision",
        help="image embedders: the axis-free image (paper) or the labelled one sent to the VLM",
    )
    p.add_argument("--device", default="cpu", help="torch device for image embedders")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="images per forward pass")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing index")
    _common(p)
    p.set_defaults(func=_cmd_index)


def _cmd_index(args) -> int:
    import time

    from omnipress.eeg.embed import EmbeddingIndex, build_index, make_embedder, windows_fingerprint
    from omnipress.eeg.render import ImageStore
    from omnipress.eeg.windows import WindowSet

    windows = WindowSet.load(args.windows)
    if (args.out / "index.npz").exists() and not args.overwrite:
        index = EmbeddingIndex.load(args.out)
        if index.fingerprint == windows_fingerprint(windows):
            print(
                f"index in {args.out} is up to date ({len(index)} windows, {index.embedder.get('type')}); "
                "--overwrite to rebuild"
            )
            return 0
        raise ValueError(f"{args.out} holds an index of other windows; use --overwrite or another folder")
    if args.embedder == "features" and args.image_kind != "vision":
        raise ValueError("--image-kind applies to image embedders (clip:...); 'features' reads the signal")
    kwargs = {} if args.embedder == "features" else {"device": args.device, "batch_size": args.batch_size}
    if args.embedder != "features":
        kwargs["image_kind"] = args.image_kind
    embedder = make_embedder(args.embedder, **kwargs)
    images = ImageStore(windows, args.images) if args.images is not None and embedder.needs_images else None
    start = time.perf_counter()
    index = build_index(windows, embedder, images=images, progress=not args.quiet)
    seconds = time.perf_counter() - start
    index.save(args.out)
    print(
        f"indexed {len(index)} windows ({index.dim}-d, {embedder.name}) in {seconds:.1f} s "
        f"({len(index) / max(seconds, 1e-9):.0f} windows/s) -> {args.out}"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# knn / run
# --------------------------------------------------------------------------------------------------
def _add_knn(sub) -> None:
    p = sub.add_parser("knn", help="retrieval-only k-NN vote baseline on the same queries (no VLM)")
    p.add_argument("--windows", required=True, type=Path, help="WindowSet folder (from prepare)")
    p.add_argument("--index", required=True, type=Path, help="embedding index folder (from index)")
    p.add_argument("--out", required=True, type=Path, help="run folder (results.jsonl)")
    p.add_argument("--k", type=POSITIVE_INT, default=5, help="neighbours per vote")
    p.add_argument(
        "--pool",
        choices=("raicl", "loso"),
        default="raicl",
        help="raicl: other patients + the patient's own past background; loso: other patients only",
    )
    p.add_argument(
        "--weighting",
        choices=("balanced", "uniform"),
        default="balanced",
        help="balanced: each vote divided by its class's size in the pool; uniform: plain majority",
    )
    p.add_argument(
        "--guard",
        type=NON_NEGATIVE,
        default=0.0,
        help="seconds around the query also excluded (overlapping windows always are)",
    )
    _queries(p)
    _common(p)
    p.set_defaults(func=_cmd_knn)


def _cmd_knn(args) -> int:
    from omnipress.eeg.embed import EmbeddingIndex
    from omnipress.eeg.knn import knn_rows
    from omnipress.eeg.run import RESULTS, RUN_META, select_queries
    from omnipress.eeg.score import score_rows
    from omnipress.eeg.windows import WindowSet

    windows = WindowSet.load(args.windows)
    index = EmbeddingIndex.load(args.index)
    queries = select_queries(windows.label, args.queries, args.every, windows.patient, args.patients)
    queries = queries[: args.limit] if args.limit is not None else queries
    rows = knn_rows(
        windows,
        index,
        queries,
        k=args.k,
        pool=args.pool,
        weighting=args.weighting,
        guard=args.guard,
        progress=not args.quiet,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / RESULTS).open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    settings = {
        "k": args.k,
        "pool": args.pool,
        "weighting": args.weighting,
        "guard": args.guard,
        "queries": args.queries,
        "every": args.every,
        "embedder": index.embedder.get("type"),
    }
    (args.out / RUN_META).write_text(json.dumps({"config": {"variant": "knn", **settings}}, indent=2))
    report = score_rows(rows)
    print(f"k-NN vote ({args.pool}, k={args.k}, {args.weighting}) on {len(rows)} queries -> {args.out}")
    print(
        f"macro BCA {100 * report.macro['bca']:.1f}  sensitivity {100 * report.macro['sensitivity']:.1f}  "
        f"specificity {100 * report.macro['specificity']:.1f}"
    )
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="ask a VLM about every query window (resumable, streamed to results.jsonl)")
    p.add_argument("--windows", required=True, type=Path, help="WindowSet folder (from prepare)")
    p.add_argument("--images", required=True, type=Path, help="image folder (missing images are rendered)")
    p.add_argument("--index", type=Path, default=None, help="embedding index (needed with references)")
    p.add_argument("--out", required=True, type=Path, help="run folder; rerun the same command to resume")
    p.add_argument("--force", action="store_true", help="resume even if the settings differ from run.json")
    g = p.add_argument_group("prompt and retrieval")
    g.add_argument(
        "--variant", choices=("base", "reasoning", "reasoning_random", "raicl"), default="raicl", help="prompt variant"
    )
    g.add_argument("--k", type=POSITIVE_INT, default=2, help="reference images per class")
    g.add_argument(
        "--seizure-mode",
        choices=("nearest", "representative", "random"),
        default="nearest",
        help="how the other patients' seizure references are chosen",
    )
    g.add_argument(
        "--background-mode",
        choices=("representative", "random"),
        default="representative",
        help="how the patient's own non-seizure references are chosen",
    )
    g.add_argument(
        "--order",
        choices=("paper", "patient_first"),
        default="paper",
        help="reference order; patient_first lets the local backend reuse a patient's prefix",
    )
    g.add_argument("--guard", type=NON_NEGATIVE, default=0.0, help="seconds around the query excluded from references")
    g.add_argument("--seed", type=int, default=0, help="seed of the random reference modes")
    g.add_argument("--template", type=Path, default=None, help="custom template file ([[TEST_IMAGE]], [[REFERENCES]])")
    g.add_argument("--require-last-line", action="store_true", help="accept the decision on the last line only")
    g.add_argument(
        "--parse",
        choices=("strict", "official"),
        default="strict",
        help="strict: a line holding the decision alone, the last one wins; official: the official code's "
        "substring search (seizure first)",
    )
    g.add_argument(
        "--image-kind",
        choices=("vlm", "vision"),
        default="vlm",
        help="image sent to the VLM: labelled (vlm) or axis-free (vision)",
    )
    g.add_argument(
        "--reask-unparsable",
        action="store_true",
        help="resume, also asking again every window whose answer did not parse (old answers go to reasked.jsonl)",
    )
    _queries(p)
    b = p.add_argument_group("backend")
    b.add_argument(
        "--backend", choices=("http", "local"), default="http", help="OpenAI-compatible server or in-process model"
    )
    b.add_argument(
        "--model",
        required=True,
        help="http: model name on the server; local: folder / hub id, or 'tiny:qwen2_vl' (random weights)",
    )
    b.add_argument("--max-tokens", type=POSITIVE_INT, default=2048, help="answer length limit")
    b.add_argument("--temperature", type=NON_NEGATIVE, default=0.0, help="sampling temperature")
    b.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="http: API root")
    b.add_argument("--api-key-env", default="OPENAI_API_KEY", help="http: environment variable holding the key")
    b.add_argument("--concurrency", type=POSITIVE_INT, default=1, help="http: requests in flight")
    b.add_argument("--timeout", type=POSITIVE, default=180.0, help="http: seconds per request")
    b.add_argument("--max-attempts", type=POSITIVE_INT, default=3, help="http: attempts per query")
    b.add_argument("--wait-429", type=NON_NEGATIVE, default=15.0, help="http: first wait after HTTP 429 (s)")
    b.add_argument(
        "--wait-5xx", type=NON_NEGATIVE, default=5.0, help="http: first wait after HTTP 5xx or a timeout (s)"
    )
    b.add_argument(
        "--backoff", type=AT_LEAST_ONE, default=2.0, help="http: factor on each further wait (1: fixed waits)"
    )
    b.add_argument(
        "--wait-empty", type=NON_NEGATIVE, default=2.0, help="http: wait before asking again after an empty answer (s)"
    )
    b.add_argument("--image-format", choices=("png", "jpeg"), default="png", help="http: image encoding")
    b.add_argument(
        "--safety-settings",
        default=None,
        help="http: provider safety settings passed through: 'off' (Gemini's four harm filters at BLOCK_NONE, as "
        "the official client) or a JSON list / file",
    )
    b.add_argument(
        "--safety-field",
        default="safety_settings",
        help="http: dotted path in the request body for --safety-settings (e.g. extra_body.google.safety_settings)",
    )
    b.add_argument("--press", default="none", help="local: none, mixkv-snapkv, mixkv-adakv, snapkv, adakv")
    b.add_argument("--budget", type=POSITIVE_INT, default=256, help="local: KV entries kept per head with --press")
    b.add_argument("--no-prefix-reuse", action="store_true", help="local: do not reuse the cached prompt prefix")
    b.add_argument(
        "--max-pixels", type=POSITIVE_INT, default=None, help="local, Qwen-VL: pixel cap per image (fewer tokens)"
    )
    b.add_argument("--device", default="cpu", help="local: torch device")
    b.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto", help="local: torch dtype"
    )
    _common(p)
    p.set_defaults(func=_cmd_run)


def _make_backend(args):
    if args.backend == "http":
        from omnipress.eeg.backends.http import OpenAIChatBackend

        return OpenAIChatBackend(
            args.base_url,
            args.model,
            api_key_env=args.api_key_env or None,
            concurrency=args.concurrency,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            wait_429=args.wait_429,
            wait_5xx=args.wait_5xx,
            backoff=args.backoff,
            wait_empty=args.wait_empty,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            image_format=args.image_format,
            safety_settings=args.safety_settings,
            safety_field=args.safety_field,
        )
    if not args.model.startswith("tiny:"):
        from omnipress.model_source import model_source

        model_source(args.model, what="model")  # a missing folder is reported before torch and transformers load
    from omnipress.eeg.backends.local import LocalVLMBackend, make_press

    press = make_press(args.press, args.budget)
    return LocalVLMBackend.from_pretrained(
        args.model,
        press=press,
        prefix_reuse=not args.no_prefix_reuse,
        max_new_tokens=args.max_tokens,
        device=args.device,
        dtype=args.dtype,
        max_pixels=args.max_pixels,
    )


def _safety_settings(spec: str | None) -> list[dict] | None:
    """``None``, ``"off"`` (:data:`~omnipress.eeg.backends.http.SAFETY_OFF`), a JSON list, or a file holding one."""
    if spec is None:
        return None
    if spec == "off":
        from omnipress.eeg.backends.http import SAFETY_OFF

        return [dict(x) for x in SAFETY_OFF]
    text = Path(spec).read_text() if not spec.lstrip().startswith(("[", "{")) and Path(spec).is_file() else spec
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--safety-settings: expected 'off', a JSON list or a file holding one ({err})") from None
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise ValueError('--safety-settings must be a JSON list of objects, e.g. [{"category": ..., "threshold": ...}]')
    return value


def _cmd_run(args) -> int:
    args.safety_settings = _safety_settings(args.safety_settings)  # checked before any data is read
    from omnipress.eeg.embed import EmbeddingIndex
    from omnipress.eeg.prompts import load_template
    from omnipress.eeg.run import RunConfig, run
    from omnipress.eeg.windows import WindowSet

    config = RunConfig(
        variant=args.variant,
        k=args.k,
        seizure_mode=args.seizure_mode,
        background_mode=args.background_mode,
        order=args.order,
        guard=args.guard,
        queries=args.queries,
        every=args.every,
        patients=args.patients,
        limit=args.limit,
        seed=args.seed,
        require_last_line=args.require_last_line,
        parse=args.parse,
        image_kind=args.image_kind,
        template=load_template(args.template) if args.template else None,
    )
    windows = WindowSet.load(args.windows)
    index = EmbeddingIndex.load(args.index) if args.index is not None else None
    with _make_backend(args) as backend:
        summary = run(
            windows,
            backend,
            args.out,
            images=args.images,
            index=index,
            config=config,
            progress=not args.quiet,
            force=args.force,
            reask_unparsable=args.reask_unparsable,
        )
    print(summary)
    for message in summary.error_messages:
        print(f"failed request: {message}", file=sys.stderr)
    return 0 if summary.remaining == 0 else 1


# --------------------------------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------------------------------
def _add_score(sub) -> None:
    p = sub.add_parser("score", help="per-patient BCA, sensitivity, specificity, F1, events, false alarms/h")
    p.add_argument("runs", nargs="+", type=Path, help="run folders or results.jsonl files")
    p.add_argument("--merge-gap", type=NON_NEGATIVE, default=0.0, help="seconds between windows merged into one event")
    p.add_argument(
        "--unparsable",
        choices=("exclude", "wrong"),
        default="exclude",
        help="exclude unparsable answers from window metrics (RAICL) or count them as wrong",
    )
    p.add_argument(
        "--parse",
        choices=("strict", "official"),
        default=None,
        help="parse the stored answers again under this rule, without asking again (default: as recorded)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON (one run only)")
    p.add_argument("--plots", type=Path, default=None, help="write confusion, per-patient and example plots here")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="image folder for the example plot (default: the run's, from run.json)",
    )
    _common(p)
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    from omnipress.eeg.progress import progress_bar
    from omnipress.eeg.score import load_results, percent, score_rows

    if (args.json or args.plots) and len(args.runs) > 1:
        raise ValueError("--json and --plots take a single run")
    summary = []
    reports = []
    for path in progress_bar(args.runs, enabled=not args.quiet, desc="score", unit="run"):
        rows = load_results(path)
        last_line = bool(_run_config(path).get("require_last_line", False))
        report = score_rows(
            rows, merge_gap=args.merge_gap, unparsable=args.unparsable, parse=args.parse, require_last_line=last_line
        )
        reports.append((path, rows, report))
    for path, rows, report in reports:
        print(f"## {path}\n\n{report.to_markdown()}\n")
        settings = report.settings
        if settings["answers"]:
            print(
                f"decisions {'re-parsed with the ' + args.parse + ' rule' if args.parse else 'as recorded'}; "
                f"the strict and official rules decide {settings['rules_disagree']} of {settings['answers']} "
                "answers differently\n"
            )
        m = report.macro
        summary.append((str(path), m["bca"], m["sensitivity"], m["specificity"], m["unparsable_rate"], len(rows)))
        if args.json:
            report.save(args.json)
        if args.plots:
            from omnipress.eeg.plots import plot_run

            images = args.images or _images_from_meta(path)
            for out in plot_run(report, rows, args.plots, images, progress=not args.quiet):
                print(f"plot: {out}")
    if len(summary) > 1:
        print("| run | macro BCA | sens | spec | unparsable | n |\n|---|---|---|---|---|---|")
        for name, bca, sens, spec, unp, n in summary:
            print(f"| {name} | {percent(bca)} | {percent(sens)} | {percent(spec)} | {percent(unp)} | {n} |")
    return 0


def _run_config(path: Path) -> dict[str, Any]:
    meta_path = (path if path.is_dir() else path.parent) / "run.json"
    return json.loads(meta_path.read_text()).get("config", {}) if meta_path.exists() else {}


def _images_from_meta(path: Path) -> Path | None:
    meta_path = (path if path.is_dir() else path.parent) / "run.json"
    if meta_path.exists():
        images = json.loads(meta_path.read_text()).get("images")
        return Path(images) if images else None
    return None


if __name__ == "__main__":
    sys.exit(main())
