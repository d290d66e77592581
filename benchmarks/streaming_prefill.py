"""LLM prefill time per frame of a streamed video, with and without token pruning (issue 9, items 3 and 5).

A LLaVA-OneVision-shaped model (random weights): a SigLIP tower at 384 px with patch 14 (27 x 27 patches, pooled
to 14 x 14 = 196 tokens per frame by the model's own `get_video_features`) and a Qwen2-0.5B-shaped language model
(width 896, 14 query / 2 KV heads, MLP 4864; `--llm-layers` of its 24 layers). Real frames of
`../shared/data/video/vtest.avi` are encoded once (the encoder is not timed here); then, for every method, the video
is streamed into the language model's cache chunk by chunk (`--chunk-frames` frames per call): the pruner picks each
chunk's kept tokens (`TokenPruner.compress`, timed with the prefill) and the language model prefills them at their
unpruned positions, appending to its cache. Reported: milliseconds of pruning + prefill per frame (median over
interleaved repeats), its change against keeping all 196 tokens (of the medians, and the median of per-repeat
ratios), and the pruner's own share.

Run alone::

    python benchmarks/streaming_prefill.py --frames 16 --repeats 5 --threads 1
    python benchmarks/streaming_prefill.py --device cuda --llm-layers 24 --frames 64

or call `run_prefill_benchmark(...)` (the streaming-video benchmark does) and `markdown(results)` for the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parent))

import omnipress as op
from _common import environment, median
from omnipress.adapters import get_adapter
from omnipress.testing import data_dir

RESULTS = Path(__file__).resolve().parent / "results" / "streaming_prefill.json"

#: method name -> pruner factory for `tokens_per_frame` (None: keep every token)
METHODS: dict[str, Callable[[int], op.TokenPruner] | None] = {
    "dense": None,
    "stc": lambda k: op.STCPruner(tokens_per_frame=k),
    "stc_dual_anchor": lambda k: op.STCPruner(tokens_per_frame=k, strategy="dual_anchor"),
    "visionzip": lambda k: op.VisionZipPruner(tokens_per_frame=k),
    "vidcom2": lambda k: op.VidCom2Pruner(tokens_per_frame=k),
    "divprune": lambda k: op.DivPrunePruner(tokens_per_frame=k),
    "uniform": lambda k: op.UniformPruner(tokens_per_frame=k),
    "random": lambda k: op.RandomPruner(tokens_per_frame=k),
}


@dataclass(frozen=True)
class Shape:
    """The benchmark model: a SigLIP tower at LLaVA-OneVision's geometry and a Qwen2-0.5B-shaped language model."""

    llm_layers: int = 4
    hidden: int = 896
    heads: int = 14
    kv_heads: int = 2
    intermediate: int = 4864
    vision_layers: int = 1
    vision_hidden: int = 64
    image_size: int = 384
    patch_size: int = 14


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A `LlavaOnevisionForConditionalGeneration` of `shape` with random weights."""
    torch.manual_seed(seed)
    config = T.LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=shape.vision_hidden,
            intermediate_size=4 * shape.vision_hidden,
            num_hidden_layers=shape.vision_layers,
            num_attention_heads=max(1, shape.vision_hidden // 32),
            image_size=shape.image_size,
            patch_size=shape.patch_size,
            vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate,
            num_hidden_layers=shape.llm_layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads,
            vocab_size=1024,
            max_position_embeddings=65536,
            tie_word_embeddings=True,
        ),
        image_token_index=1000,
        video_token_index=1001,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    config._attn_implementation = "sdpa"
    model = T.LlavaOnevisionForConditionalGeneration(config).eval()
    return model.to(device=device, dtype=dtype)


def read_frames(frames: int, fps: float, video: Path | None = None) -> tuple[list[Any], list[float]]:
    """`frames` real frames (PIL) and their timestamps from `video` (default `<data>/video/vtest.avi`)."""
    path = video or data_dir() / "video" / "vtest.avi"
    pairs = list(op.read_video(path, fps=fps, max_frames=frames))
    if len(pairs) < frames:
        raise ValueError(f"{path} gave {len(pairs)} frames at {fps} fps; asked for {frames}")
    return [f for _, f in pairs], [t for t, _ in pairs]


@torch.no_grad()
def video_features(model: torch.nn.Module, frames: Sequence[Any], times: Sequence[float]) -> torch.Tensor:
    """`(frames, P, D)` LLM-side features of the frames (tower, projector, 2x2 bilinear pooling; newline dropped)."""
    adapter = get_adapter(model)
    side = int(model.config.vision_config.image_size)
    video_id = adapter.modality_token_ids["video"]
    inputs = adapter.build_inputs([video_id], video=list(frames), video_timestamps=list(times), video_size=(side, side))
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    pixels = inputs["pixel_values_videos"].to(device=device, dtype=dtype)
    out = model.model.get_video_features(pixel_values_videos=pixels, vision_feature_layer=-1)
    per_frame = adapter.tokens_per_video_frame
    return out.pooler_output[0, :-1].reshape(len(frames), per_frame, -1)  # drop the closing newline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def stream_prefill(
    model: torch.nn.Module, features: torch.Tensor, pruner: op.TokenPruner | None, chunk_frames: int
) -> dict[str, Any]:
    """Stream `features` `(F, P, D)` into a fresh cache, `chunk_frames` frames per call; kept tokens keep their
    unpruned positions. Returns the total and pruner-only seconds and the tokens prefilled."""
    lm = get_adapter(model).language_model
    device = features.device
    frames, per_frame, _ = features.shape
    cache = T.DynamicCache(config=model.config.get_text_config())
    if pruner is not None:
        pruner.reset()
    total = pruning = 0.0
    tokens = 0
    for start in range(0, frames, chunk_frames):
        chunk = features[start : start + chunk_frames]  # (f, P, D)
        _sync(device)
        began = time.perf_counter()
        if pruner is None:
            kept = chunk.reshape(1, -1, chunk.shape[-1])
            positions = torch.arange(start * per_frame, (start + chunk.shape[0]) * per_frame, device=device)
        else:
            selection = pruner.compress(chunk)
            real = selection.indices >= 0  # (f, k)
            offsets = (start + torch.arange(chunk.shape[0], device=device)).unsqueeze(1) * per_frame
            positions = (selection.indices + offsets)[real]  # frame-major, ascending inside each frame
            kept = selection.features[real].unsqueeze(0)
            _sync(device)
            pruning += time.perf_counter() - began
        lm(inputs_embeds=kept, position_ids=positions.unsqueeze(0), cache=cache, use_cache=True)
        _sync(device)
        total += time.perf_counter() - began
        tokens += int(kept.shape[1])
    return {"seconds": total, "pruner_seconds": pruning, "tokens": tokens, "cache_length": cache.get_seq_length()}


def run_prefill_benchmark(
    *,
    frames: int = 16,
    tokens_per_frame: int = 64,
    chunk_frames: int = 4,
    repeats: int = 5,
    methods: Sequence[str] = tuple(METHODS),
    shape: Shape | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    fps: float = 1.0,
    video: Path | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every method in `methods`, interleaved: each repeat streams the video once per method (in a rotated
    order); the first pass of every method is a warm-up and not counted. Returns settings, per-method raw seconds
    and medians (ms per frame, change against `"dense"`)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    shape = shape or Shape()
    if threads is not None:
        torch.set_num_threads(threads)
    torch_device = torch.device(device)
    model = build_model(shape, torch_device, getattr(torch, dtype))
    clips, times = read_frames(frames, fps, video)
    features = video_features(model, clips, times)  # (F, 196, D)
    names = ["dense", *[m for m in methods if m != "dense"]]
    pruners = {m: (None if METHODS[m] is None else METHODS[m](tokens_per_frame)) for m in names}
    raw: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    for m in names:  # warm-up
        stream_prefill(model, features, pruners[m], chunk_frames)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for m in order:
            raw[m].append(stream_prefill(model, features, pruners[m], chunk_frames))
        if progress is not None:
            progress(f"repeat {r + 1}/{repeats} done")
    return {
        "settings": {
            "frames": frames,
            "tokens_per_frame": tokens_per_frame,
            "unpruned_tokens_per_frame": int(features.shape[1]),
            "chunk_frames": chunk_frames,
            "repeats": repeats,
            "device": device,
            "device_name": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else "cpu",
            "dtype": dtype,
            "fps": fps,
            "video": str(video or data_dir() / "video" / "vtest.avi"),
            "shape": asdict(shape),
        },
        "environment": environment(),
        "summary": summarize(raw, frames),
        "raw": raw,
    }


def summarize(raw: dict[str, list[dict[str, Any]]], frames: int) -> dict[str, dict[str, float]]:
    """Per method: median ms per frame, the pruner's median share, tokens per frame, and the change against
    `"dense"` twice: of the medians, and the median of the per-repeat ratios (each repeat runs every method back to
    back, so its ratio cancels slow drifts of a shared machine)."""
    dense = [x["seconds"] for x in raw["dense"]]
    dense_ms = median(dense) * 1000 / frames
    summary = {}
    for m, runs in raw.items():
        seconds = [x["seconds"] for x in runs]
        ms = median(seconds) * 1000 / frames
        summary[m] = {
            "ms_per_frame": ms,
            "pruner_ms_per_frame": median([x["pruner_seconds"] for x in runs]) * 1000 / frames,
            "tokens_per_frame": runs[0]["tokens"] / frames,
            "change_vs_dense": ms / dense_ms - 1.0,
            "paired_change_vs_dense": median([a / b for a, b in zip(seconds, dense)]) - 1.0,
        }
    return summary


def markdown(result: dict[str, Any]) -> str:
    """The summary as a markdown table."""
    s = result["settings"]
    lines = [
        f"| method ({s['frames']} frames, {s['chunk_frames']} per call, {s['device_name']}, {s['dtype']}) "
        "| tokens/frame | ms/frame (median) | vs all tokens: medians | vs all tokens: paired | pruner ms/frame |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["summary"].items():
        change = "—" if name == "dense" else f"{row['change_vs_dense']:+.1%}"
        paired = "—" if name == "dense" else f"{row['paired_change_vs_dense']:+.1%}"
        lines.append(
            f"| {name} | {row['tokens_per_frame']:.0f} | {row['ms_per_frame']:.1f} | {change} | {paired} "
            f"| {row['pruner_ms_per_frame']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--tokens-per-frame", type=int, default=64)
    p.add_argument("--chunk-frames", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    p.add_argument("--llm-layers", type=int, default=Shape.llm_layers)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--video", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON file; the run is stored under its settings key")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_prefill_benchmark(
        frames=args.frames,
        tokens_per_frame=args.tokens_per_frame,
        chunk_frames=args.chunk_frames,
        repeats=args.repeats,
        methods=[m for m in args.methods.split(",") if m],
        shape=Shape(llm_layers=args.llm_layers),
        device=args.device,
        dtype=args.dtype,
        fps=args.fps,
        video=args.video,
        threads=args.threads,
        progress=lambda text: print(text, file=sys.stderr),
    )
    s = result["settings"]
    parts = (s["device_name"], s["dtype"], args.llm_layers, s["frames"], s["chunk_frames"], s["tokens_per_frame"])
    key = "{}|{}|L{}|F{}|c{}|k{}".format(*parts)
    if list(result["summary"]) != list(METHODS):
        key += "|" + ",".join(result["summary"])
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
    stored[key] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(stored, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
