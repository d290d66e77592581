"""Memory and time per frame of a long video stream under each memory policy (issue 9, item 4).

A `StreamingSession` on a small LLaVA-OneVision model (omnipress's tiny random-weight test model: SigLIP-shaped tower
at 112 px, 16 pooled tokens per frame, a 2-layer language model) takes `--frames` real frames of
`../shared/data/video/vtest.avi` (decoded at 2 fps and cycled) one by one, with a uniform token pruner keeping
`--tokens-per-frame` tokens per frame, under each memory policy:

- `full`: every frame stays in the live cache;
- `window`: attention sinks + the most recent frames (`WindowMemory(frames=W, sinks=1)`);
- `retrieval`: the same live window, older frames offloaded to host memory and retrieved per question
  (`RetrievalMemory(frames=W, sinks=1, retrieve=R)`, ReKV-style).

Every `--sample-every` frames it records the live cache's physical KV bytes, the entries per KV head, the offloaded
host bytes, the process's resident memory and (on CUDA) the allocated accelerator memory; ms per frame is the mean
over each sampling window. At the end it asks one question and times the answer (question prefill, retrieval
included, and decoding). Policies run one after the other in one process.

Run alone::

    python benchmarks/streaming_memory.py --frames 2000 --threads 1
    python benchmarks/streaming_memory.py --device cuda --frames 2000

or call `run_memory_benchmark(...)` (the streaming-video benchmark does) and `markdown(results)` for the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import omnipress as op
from _common import environment
from omnipress.testing import data_dir, tiny_model, tiny_processor

RESULTS = Path(__file__).resolve().parent / "results" / "streaming_memory.json"
POLICIES = ("full", "window", "retrieval")
QUESTION = "What are the people in the video doing?"


def policy(name: str, window: int, retrieve: int) -> Any:
    """The memory policy `name` with the benchmark's window (frames) and retrieval count."""
    if name == "full":
        return op.FullMemory()
    if name == "window":
        return op.WindowMemory(frames=window, sinks=1)
    if name == "retrieval":
        return op.RetrievalMemory(frames=window, sinks=1, retrieve=retrieve)
    raise ValueError(f"unknown policy {name!r}; choose from {POLICIES}")


def video_frames(count: int, path: Path | None = None, fps: float = 2.0) -> list[Any]:
    """Up to `count` distinct real frames (RGB PIL) of the benchmark video; the stream cycles through them."""
    path = path or data_dir() / "video" / "vtest.avi"
    return [frame for _, frame in op.read_video(path, fps=fps, max_frames=count)]


def rss_bytes() -> int:
    """Resident memory of this process now (Linux `/proc/self/statm`; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def run_policy(
    model: torch.nn.Module,
    processor: Any,
    frames: list[Any],
    name: str,
    *,
    num_frames: int,
    tokens_per_frame: int,
    window: int,
    retrieve: int,
    sample_every: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Stream `num_frames` frames (cycling `frames`) under policy `name`; samples, totals and one answer."""
    cuda = next(model.parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    session = op.StreamingSession(
        model,
        processor,
        methods=[op.UniformPruner(tokens_per_frame=tokens_per_frame)],
        memory=policy(name, window, retrieve),
    )
    samples = []
    rss_start = rss_bytes()
    window_start = time.perf_counter()
    for i in range(num_frames):
        session.append_frame(frames[i % len(frames)], i / 2.0)
        if (i + 1) % sample_every == 0 or i + 1 == num_frames:
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            count = (i + 1) - (samples[-1]["frames"] if samples else 0)
            store = session.offloaded
            samples.append(
                {
                    "frames": i + 1,
                    "ms_per_frame": 1e3 * (now - window_start) / count,
                    "kv_bytes": session.kv_bytes(),
                    "entries_per_head": int(session.cache.layers[0].host_lengths[0]),
                    "offloaded_bytes": store.nbytes if store is not None else 0,
                    "rss_bytes": rss_bytes(),
                    "cuda_allocated_bytes": torch.cuda.memory_allocated() if cuda else None,
                }
            )
            window_start = time.perf_counter()
    t0 = time.perf_counter()
    answer = session.ask(QUESTION, max_new_tokens=max_new_tokens)
    if cuda:
        torch.cuda.synchronize()
    answer_s = time.perf_counter() - t0
    report = answer.report
    per_frame = session.stats.ms_per_frame()
    return {
        "policy": name,
        "frames": num_frames,
        "samples": samples,
        "encode_ms_per_frame": per_frame["encode"],
        "prefill_ms_per_frame": per_frame["prefill"],
        "memory_ms_per_frame": per_frame["memory"],
        "kv_bytes_first": samples[0]["kv_bytes"],
        "kv_bytes_last": samples[-1]["kv_bytes"],
        "kv_bytes_max": max(s["kv_bytes"] for s in samples),
        "offloaded_bytes": samples[-1]["offloaded_bytes"],
        "rss_growth_bytes": samples[-1]["rss_bytes"] - rss_start,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "ms_per_frame_first_window": samples[0]["ms_per_frame"],
        "ms_per_frame_last_window": samples[-1]["ms_per_frame"],
        "answer_s": answer_s,
        "answer_prefill_s": report.prefill_s,
        "answer_decode_s": report.decode_s,
        "answer_tokens": len(answer.token_ids),
        "answer_kv_bytes": report.answer_kv_bytes,
        "frames_in_cache": report.frames_in_cache,
    }


def run_memory_benchmark(
    *,
    frames: int = 2000,
    policies: tuple[str, ...] = POLICIES,
    tokens_per_frame: int = 4,
    window: int = 32,
    retrieve: int = 8,
    sample_every: int = 100,
    max_new_tokens: int = 8,
    device: str = "cpu",
    distinct_frames: int = 64,
    video: Path | None = None,
) -> dict[str, Any]:
    """Every policy on one model; returns `{"settings", "environment", "policies": [per-policy dicts]}`."""
    model = tiny_model("llava_onevision").to(device)
    processor = tiny_processor("llava_onevision", model)
    clip = video_frames(min(distinct_frames, frames), video)
    knobs = {"num_frames": frames, "tokens_per_frame": tokens_per_frame, "window": window, "retrieve": retrieve}
    knobs |= {"sample_every": sample_every, "max_new_tokens": max_new_tokens}
    results = [run_policy(model, processor, clip, name, **knobs) for name in policies]
    settings = {
        "model": "omnipress.testing.tiny_model('llava_onevision')",
        "frames": frames,
        "tokens_per_frame": tokens_per_frame,
        "window_frames": window,
        "sinks": 1,
        "retrieve": retrieve,
        "sample_every": sample_every,
        "device": device,
        "video": str(video or "vtest.avi"),
    }
    env = environment()
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return {"settings": settings, "environment": env, "policies": results}


def markdown(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of a `run_memory_benchmark` result."""
    s = results["settings"]
    cuda = s["device"].startswith("cuda")
    lines = [
        f"{s['frames']} frames, {s['tokens_per_frame']} tokens/frame, window {s['window_frames']} frames + 1 sink, "
        f"retrieve {s['retrieve']} blocks; device {s['device']}",
        "",
        "| policy | KV bytes @ first sample | KV bytes @ end | offloaded (host) | RSS growth | "
        + ("CUDA peak | " if cuda else "")
        + "ms/frame first window | ms/frame last window | answer ms (prefill + decode) |",
        "|---|---|---|---|---|" + ("---|" if cuda else "") + "---|---|---|",
    ]
    for r in results["policies"]:
        lines.append(
            f"| {r['policy']} | {_mib(r['kv_bytes_first'])} | {_mib(r['kv_bytes_last'])} "
            f"| {_mib(r['offloaded_bytes'])} | {_mib(r['rss_growth_bytes'])} | "
            + (f"{_mib(r['cuda_peak_bytes'])} | " if cuda else "")
            + f"{r['ms_per_frame_first_window']:.1f} | {r['ms_per_frame_last_window']:.1f} | "
            f"{1e3 * r['answer_s']:.0f} ({1e3 * r['answer_prefill_s']:.0f} + {1e3 * r['answer_decode_s']:.0f}) |"
        )
    return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--tokens-per-frame", type=int, default=4)
    parser.add_argument("--window", type=int, default=32, help="live window (frames) of window/retrieval")
    parser.add_argument("--retrieve", type=int, default=8, help="blocks retrieved per layer and question")
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_memory_benchmark(
        frames=args.frames, policies=tuple(args.policies), tokens_per_frame=args.tokens_per_frame, window=args.window,
        retrieve=args.retrieve, sample_every=args.sample_every, device=args.device,
    )  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    print(f"\nraw results: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
