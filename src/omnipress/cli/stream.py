"""`omnipress stream VIDEO --question ...`: a video streamed frame by frame into a `StreamingSession`, questions
answered at given stream times, and a timing table (encoder and prefill ms/frame, KV bytes, peak memory)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CLIError, UsageError
from .options import HelpFormatter, _non_negative_int, _positive_int, check_model_path

#: tiny built-in video families and the frame size their vision towers take (None: the family's default)
STREAM_FAMILIES: dict[str, tuple[int, int] | None] = {
    "llava_onevision": None,
    "qwen2_vl": (56, 56),
    "qwen2_5_vl": (56, 56),
    "qwen3_vl": (64, 64),
}
MEMORIES = ("full", "window", "retrieval")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `omnipress stream`."""
    p = sub.add_parser(
        "stream",
        help="stream a video into a VLM frame by frame and answer questions at given times",
        description="Frames are read at --fps, encoded (with the STC-Cacher unless --no-cacher), pruned to "
        "--tokens-per-frame (STC-Pruner) and appended to the language model's cache under the --memory policy; each "
        "--question is answered at its --at time (default: the end of the video), and the stream goes on. Prints the "
        "answers with their stream time and a timing table. Without --model a tiny random-weight model is used "
        "(timings and memory only; its answers are noise).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("video", metavar="VIDEO", help="a video file (any container PyAV reads) or a stream URL")
    p.add_argument(
        "--question", action="append", required=True, metavar="TEXT", help="a question (repeat to ask several)"
    )
    p.add_argument(
        "--at",
        action="append",
        type=_seconds,
        metavar="SECONDS",
        help="stream time at which to ask (repeat; one --question is asked at every --at, or one --at per --question; "
        "default: at the end of the video)",
    )
    p.add_argument("--fps", type=_positive_float, default=1.0, help="frames read per second of video")
    p.add_argument("--start", type=_seconds, metavar="SECONDS", help="start reading at this time")
    p.add_argument("--end", type=_seconds, metavar="SECONDS", help="stop reading at this time")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")
    p.add_argument(
        "--cacher",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse vision-encoder work across similar frames (STC-Cacher)",
    )
    p.add_argument("--update-ratio", type=_ratio, default=0.25, help="STC-Cacher: share of tokens recomputed")
    p.add_argument("--interval", type=_positive_int, default=2, help="STC-Cacher: frames between full passes")
    p.add_argument(
        "--tokens-per-frame",
        type=_positive_int,
        metavar="K",
        help="keep K visual tokens per frame with the STC-Pruner (default: keep all)",
    )
    p.add_argument("--memory", choices=MEMORIES, default="full", help="memory policy of the stream's cache")
    p.add_argument(
        "--window-frames",
        type=_positive_int,
        metavar="N",
        help="frames kept in the live cache under window/retrieval memory (default: 16 / 8)",
    )
    p.add_argument("--sinks", type=_non_negative_int, metavar="N", help="frames kept as attention sinks (default: 1)")
    p.add_argument("--retrieve", type=_positive_int, metavar="N", help="retrieval: blocks brought back (default: 8)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=32, metavar="N", help="answer length cap")
    own = p.add_argument_group("model")
    own.add_argument("--model", metavar="FOLDER", help="a local LLaVA-OneVision or Qwen-VL model folder (or hub id)")
    own.add_argument(
        "--family",
        choices=tuple(STREAM_FAMILIES),
        metavar="FAMILY",
        help=f"tiny built-in model without --model, one of: {', '.join(STREAM_FAMILIES)} (default: llava_onevision)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also save the answers and the timing table as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error"
    )


def check(args: argparse.Namespace) -> None:
    """One-line errors for options that do not go together and for missing files."""
    if args.model is not None and args.family is not None:
        raise UsageError("--family is for the tiny built-in model and cannot go with --model")
    if args.model is not None:
        check_model_path(args.model)
    if "://" not in args.video and not Path(args.video).is_file():
        raise CLIError(f"video file not found: {args.video}")
    schedule(args.question, args.at)
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise UsageError(f"--end {args.end} must come after --start {args.start}")
    if args.memory == "full" and any(x is not None for x in (args.window_frames, args.sinks, args.retrieve)):
        raise UsageError("--window-frames, --sinks and --retrieve need --memory window or retrieval")
    if args.memory == "window" and args.retrieve is not None:
        raise UsageError("--retrieve needs --memory retrieval")


def schedule(questions: list[str], times: list[float] | None) -> list[tuple[float | None, str]]:
    """The (stream time, question) pairs to ask, sorted by time (`None`: at the end of the video)."""
    if not times:
        return [(None, q) for q in questions]
    if len(questions) == 1:
        pairs = [(t, questions[0]) for t in times]
    elif len(questions) == len(times):
        pairs = list(zip(times, questions))
    else:
        raise UsageError(
            f"got {len(questions)} --question and {len(times)} --at: give one question for every time, or one --at "
            "per --question"
        )
    return sorted(pairs, key=lambda pair: pair[0])


@dataclass
class Asked:
    """One answered question."""

    at: float | None
    question: str
    answer: str
    time: float | None
    frames_in_cache: int
    kv_bytes: int
    answer_ms: float


def run(args: argparse.Namespace, progress: Any) -> int:
    """Stream the video and answer; prints answers and the timing table on stdout."""
    import warnings

    import torch

    from ..media import StreamInterruptedWarning, TruncatedMediaWarning, read_video, video_duration

    torch.set_grad_enabled(False)
    with progress.step("loading the model"):
        model, processor, frame_size = _model(args)
    session = _session(args, model, processor, frame_size)
    pending = schedule(args.question, args.at)
    answers: list[Asked] = []
    duration = video_duration(args.video) if "://" not in args.video else None
    total = None
    if duration is not None:
        span = min(duration, args.end if args.end is not None else duration) - (args.start or 0.0)
        total = max(int(span * args.fps + 0.999), 0)
        total = min(total, args.max_frames) if args.max_frames else total
    last_time: float | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncatedMediaWarning)
        warnings.simplefilter("always", StreamInterruptedWarning)
        with progress.bar("streaming", total) as bar:
            try:
                frames = read_video(
                    args.video, fps=args.fps, max_frames=args.max_frames, start=args.start, end=args.end
                )
                for t, frame in frames:
                    while pending and pending[0][0] is not None and pending[0][0] < t and _has_block(session):
                        answers.append(_ask(session, *pending.pop(0), args.max_new_tokens))
                    session.append_frame(frame, t)
                    last_time = t
                    bar.advance()
            except (ValueError, OSError) as error:
                raise CLIError(f"cannot read the video {args.video}: {error}") from error
    for warning in caught:
        if issubclass(warning.category, TruncatedMediaWarning | StreamInterruptedWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if last_time is None:
        raise CLIError(f"no frame was read from {args.video} (check --start/--end)")
    if not _has_block(session):
        raise CLIError("the video gave too few frames for one frame block of this model (Qwen-VL takes 2)")
    with progress.step("answering"):
        for at, question in pending:
            answers.append(_ask(session, at, question, args.max_new_tokens))
    table = timing_table(session, answers)
    print(render(answers, table, last_time))
    if args.json is not None:
        record = {
            "answers": [vars(a) for a in answers],
            "timing": table,
            "video": args.video,
            "fps": args.fps,
            "methods": [repr(m) for m in (*session.encoders, session.pruner) if m is not None],
            "encoder_stats": [_encoder_stats(m) for m in session.encoders],
        }
        args.json.write_text(json.dumps(record, indent=1))
    return 0


def _model(args: argparse.Namespace) -> tuple[Any, Any, tuple[int, int] | None]:
    if args.model is not None:
        from .models import load_model

        model, processor = load_model(args.model)
        return model, processor, None
    from ..testing import tiny_model, tiny_processor

    family = args.family or "llava_onevision"
    model = tiny_model(family)
    return model, tiny_processor(family, model), STREAM_FAMILIES[family]


def _session(args: argparse.Namespace, model: Any, processor: Any, frame_size: tuple[int, int] | None) -> Any:
    from ..encoders import STCCacher
    from ..streaming import RetrievalMemory, StreamingSession, WindowMemory
    from ..tokens import STCPruner

    methods: list[Any] = []
    if args.cacher:
        methods.append(STCCacher(update_ratio=args.update_ratio, interval=args.interval))
    if args.tokens_per_frame is not None:
        methods.append(STCPruner(tokens_per_frame=args.tokens_per_frame))
    knobs = {
        name: value
        for name, value in (("frames", args.window_frames), ("sinks", args.sinks), ("retrieve", args.retrieve))
        if value is not None
    }
    memory = {"full": "full", "window": WindowMemory, "retrieval": RetrievalMemory}[args.memory]
    if not isinstance(memory, str):
        memory = memory(**knobs)
    try:
        return StreamingSession(model, processor, methods=methods, memory=memory, frame_size=frame_size)
    except ValueError as error:
        raise CLIError(str(error)) from error


def _encoder_stats(method: Any) -> dict[str, Any]:
    """What an encoder method reports about the stream (the STC-Cacher: frames, refresh frames, recomputed share)."""
    stats = getattr(method, "stats", None)
    names = ("frames", "refresh_frames", "recomputed_fraction")
    return {"method": type(method).__name__, **{n: getattr(stats, n) for n in names if hasattr(stats, n)}}


def _has_block(session: Any) -> bool:
    return bool(session.blocks)


def _ask(session: Any, at: float | None, question: str, max_new_tokens: int) -> Asked:
    answer = session.ask(question, max_new_tokens=max_new_tokens)
    report = answer.report
    return Asked(
        at=at,
        question=question,
        answer=answer.text.strip(),
        time=answer.time,
        frames_in_cache=report.frames_in_cache,
        kv_bytes=report.answer_kv_bytes or report.kv_bytes,
        answer_ms=1e3 * (report.prefill_s + report.decode_s),
    )


def timing_table(session: Any, answers: list[Asked]) -> dict[str, float | int]:
    """Per-frame stage times, the live cache's bytes, the peak memory and the mean time to answer."""
    per_frame = session.stats.ms_per_frame()
    return {
        "frames": session.stats.frames,
        "encoder_ms_per_frame": per_frame["encode"],
        "prefill_ms_per_frame": per_frame["prefill"],
        "memory_ms_per_frame": per_frame["memory"],
        "kv_bytes": session.kv_bytes(),
        "peak_memory_bytes": peak_memory_bytes(),
        "answer_ms": sum(a.answer_ms for a in answers) / max(len(answers), 1),
    }


def peak_memory_bytes() -> int:
    """Peak accelerator memory on CUDA, else the process's peak resident memory."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def render(answers: list[Asked], table: dict[str, float | int], last_time: float) -> str:
    """The answers with their stream times, then the timing table (markdown)."""
    lines = []
    for a in answers:
        when = f"{a.time:.1f} s" if a.time is not None else "-"
        asked = f" (asked for {a.at:.1f} s)" if a.at is not None and a.at > last_time else ""
        lines += [f"[{when}] Q: {a.question}{asked}", f"{' ' * (len(when) + 3)}A: {a.answer or '(empty)'}"]
    mib = 1024 * 1024
    header = "| frames | encoder ms/frame | prefill ms/frame | memory ms/frame | KV MiB | peak memory MiB | answer ms |"
    row = (
        f"| {table['frames']} | {table['encoder_ms_per_frame']:.1f} | {table['prefill_ms_per_frame']:.1f} | "
        f"{table['memory_ms_per_frame']:.1f} | {table['kv_bytes'] / mib:.2f} | {table['peak_memory_bytes'] / mib:.0f} "
        f"| {table['answer_ms']:.0f} |"
    )
    return "\n".join([*lines, "", header, "|---:|---:|---:|---:|---:|---:|---:|", row])


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a ratio in (0, 1], got {text!r}")
    return value
