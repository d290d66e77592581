"""Streaming video, encoder side: ms/frame of a vision tower dense vs STC-Cacher vs ToMe-style merging, on real video.

Two random-weight towers with real shapes:

- `siglip`: SigLIP-so400m at 384 px (LLaVA-OneVision's tower): width 1152, MLP 4304, 16 heads, patch 14, 729 patches
  per frame, 27 layers (`--siglip-layers`);
- `qwen2_5_vl`: the Qwen2.5-VL-7B ViT (width 1280, gated MLP 3420, 16 heads, patch 14, 2x2 merge, 112 px windows,
  full attention every 8th block and in the last one), frames of 336 x 336 px (one temporal patch group of two video
  frames = 576 patches), `--qwen-layers` of its 32 blocks.

Frames come from `../shared/data/video/vtest.avi` at `--fps` (0.5, the STC paper's rate). Every frame goes through
the tower once per method, the methods interleaved frame by frame (their order rotated) so that load changes on a
shared machine hit all of them alike; a method's stream state carries over from frame to frame (the cacher's context
is re-entered per frame, its state stays with the cacher). Times are the CPU time of the (single) torch thread,
which a loaded shared machine disturbs far less than wall-clock time (also recorded); with `--device cuda` both are
wall-clock times around synchronized calls. Reported per method: the mean ms/frame over the stream (with N=2 the
cacher alternates refresh and selective frames, so the mean is what a stream costs; the median of each kind of frame
is reported too), its change against dense, and the relative error `||out - dense|| / ||dense||` of the
features that leave the tower (SigLIP: `last_hidden_state`; Qwen: the merged patches the LLM gets; ToMe's merged
tokens are unmerged back to the patches they hold), mean over the frames (and the median over the cacher's selective
frames).

    python benchmarks/streaming_encoder.py                  # both towers; writes results/streaming_encoder.json
    python benchmarks/streaming_encoder.py --towers siglip --siglip-layers 6 --frames 6 --append
    python benchmarks/streaming_encoder.py --table         # the table of an existing results file

`run(...)` is the same as a function (`benchmarks/streaming_video.py` calls it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import omnipress as op
from _common import environment, markdown_table, median

RESULTS = Path(__file__).resolve().parent / "results" / "streaming_encoder.json"
VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "vtest.avi"
TOWERS = ("siglip", "qwen2_5_vl")


@dataclass
class TowerShape:
    """A vision tower's shape (random weights)."""

    name: str
    layers: int
    width: int
    mlp: int
    heads: int
    side: int  # frame side in pixels
    patch: int = 14

    @property
    def tokens(self) -> int:
        return (self.side // self.patch) ** 2


def shape_of(tower: str, layers: int | None = None, *, tiny: bool = False) -> TowerShape:
    """The benchmark shape of `tower` (`"siglip"`, `"qwen2_5_vl"`); `tiny` shrinks it for smoke tests."""
    if tower == "siglip":
        shape = TowerShape("siglip", 27, 1152, 4304, 16, 384)
    elif tower == "qwen2_5_vl":
        shape = TowerShape("qwen2_5_vl", 32, 1280, 3420, 16, 336)
    else:
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
    if tiny:
        shape = TowerShape(shape.name, 2, 64, 128, 4, 112)
    if layers is not None:
        shape.layers = layers
    return shape


def build_tower(shape: TowerShape, seed: int = 0) -> torch.nn.Module:
    """A random-weight `SiglipVisionModel` or `Qwen2_5_VisionTransformerPretrainedModel` of `shape` (fp32, eval)."""
    import transformers as T
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    torch.manual_seed(seed)
    if shape.name == "siglip":
        config = T.SiglipVisionConfig(
            hidden_size=shape.width,
            intermediate_size=shape.mlp,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            image_size=shape.side,
            patch_size=shape.patch,
            vision_use_head=False,
        )
        config._attn_implementation = "sdpa"
        return T.SiglipVisionModel(config).eval()
    full = list(range(7, shape.layers, 8))
    if not full or full[-1] != shape.layers - 1:
        full.append(shape.layers - 1)
    config = T.Qwen2_5_VLVisionConfig(
        depth=shape.layers,
        hidden_size=shape.width,
        intermediate_size=shape.mlp,
        num_heads=shape.heads,
        out_hidden_size=2 * shape.width,
        patch_size=shape.patch,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=full,
    )
    config._attn_implementation = "sdpa"
    return Qwen2_5_VisionTransformerPretrainedModel._from_config(config).eval()


def video_frames(count: int, side: int, fps: float, video: Path = VIDEO) -> torch.Tensor:
    """`(count, 3, side, side)` real frames in [-1, 1], read at `fps`."""
    frames = [f.resize((side, side)) for _, f in op.read_video(video, fps=fps, max_frames=count)]
    if len(frames) < count:
        raise ValueError(f"{video} gives only {len(frames)} frames at {fps} fps, {count} asked")
    arrays = np.stack([np.asarray(f, dtype=np.float32) for f in frames])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


def qwen_patches(pair: torch.Tensor, patch: int = 14, merge: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Two consecutive frames `(2, 3, H, W)` as the Qwen-VL video processor packs them: `(H/p * W/p, 3 * 2 * p * p)`
    patches in 2x2 merge-group order, and `grid_thw` `(1, 3)`."""
    t, c, h, w = pair.shape
    gh, gw = h // patch, w // patch
    x = pair.reshape(1, t, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (grid_t, gh/m, gw/m, m, m, c, t, p, p)
    return x.reshape(gh * gw, c * t * patch * patch), torch.tensor([[1, gh, gw]])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _features(shape: TowerShape, output: Any) -> torch.Tensor:
    return output.last_hidden_state if shape.name == "siglip" else output.pooler_output


def run(
    towers: Sequence[str] = TOWERS,
    *,
    frames: int = 6,
    fps: float = 0.5,
    siglip_layers: int | None = None,
    qwen_layers: int = 8,
    update_ratio: float = 0.25,
    interval: int = 2,
    tome_ratio: float = 0.5,
    tiny: bool = False,
    threads: int | None = 1,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time dense / STC-Cacher / ToMe per frame on each tower; returns the raw results (see module docstring).

    ToMe applies to the SigLIP tower only (the Qwen-VL towers' 2x2 patch merger needs every patch; see `op.ToMe`).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "settings": {
            "frames": frames,
            "fps": fps,
            "update_ratio": update_ratio,
            "interval": interval,
            "tome_merge_ratio": tome_ratio,
            "video": VIDEO.name,
            "tiny": tiny,
            "device": device,
        },
        "environment": environment(),
        "towers": {},
    }
    for name in towers:
        shape = shape_of(name, siglip_layers if name == "siglip" else qwen_layers, tiny=tiny)
        tower = build_tower(shape).to(device)
        video_count = frames if name == "siglip" else 2 * frames
        clip = video_frames(video_count, shape.side, fps)
        calls: list[tuple[tuple, dict]] = []
        for k in range(frames):
            if name == "siglip":
                calls.append(((clip[k : k + 1].to(device),), {}))
            else:
                pixels, grid = qwen_patches(clip[2 * k : 2 * k + 2], shape.patch)
                calls.append(((pixels.to(device),), {"grid_thw": grid.to(device)}))
        cacher = op.STCCacher(update_ratio=update_ratio, interval=interval)
        methods: dict[str, Any] = {"dense": None, f"STC-Cacher (r={update_ratio}, N={interval})": cacher}
        tome = op.ToMe(merge_ratio=tome_ratio) if name == "siglip" else None
        if tome is not None:
            methods[f"ToMe (merge {tome_ratio:.0%})"] = tome
        times: dict[str, list[float]] = {m: [] for m in methods}  # CPU seconds of this thread
        walls: dict[str, list[float]] = {m: [] for m in methods}  # wall-clock seconds
        errors: dict[str, list[float]] = {m: [] for m in methods}
        log(f"{name}: {shape.layers} layers, {shape.tokens} patches/frame, {frames} frames")
        labels = list(methods)
        for k, (args, kwargs) in enumerate(calls):
            order = labels[k % len(labels) :] + labels[: k % len(labels)]
            outs: dict[str, torch.Tensor] = {}
            for label in order:
                method = methods[label]
                with torch.no_grad(), method(tower) if method is not None else contextlib.nullcontext():
                    _sync(device)
                    wall, cpu = time.perf_counter(), time.thread_time()
                    out = tower(*args, **kwargs)
                    _sync(device)
                    wall = time.perf_counter() - wall
                    # on an accelerator the host thread's CPU time says nothing: both columns are wall-clock
                    times[label].append(time.thread_time() - cpu if device == "cpu" else wall)
                    walls[label].append(wall)
                features = _features(shape, out)
                if tome is not None and method is tome:
                    features = tome.stats.unmerge(features)
                outs[label] = features
            dense = outs["dense"]
            for label, features in outs.items():
                errors[label].append(float((features - dense).norm() / dense.norm()))
            log(f"  frame {k} (CPU ms): " + ", ".join(f"{label} {1000 * times[label][-1]:.0f}" for label in labels))
        dense_ms = 1000 * statistics.fmean(times["dense"])
        dense_wall = 1000 * statistics.fmean(walls["dense"])
        rows = {}
        for label in labels:
            ms, wall = 1000 * statistics.fmean(times[label]), 1000 * statistics.fmean(walls[label])
            rows[label] = {
                "ms_per_frame": ms,
                "change_vs_dense": ms / dense_ms - 1.0,
                "wall_ms_per_frame": wall,
                "wall_change_vs_dense": wall / dense_wall - 1.0,
                "wall_ms_all_frames": [1000 * t for t in walls[label]],
                "relative_error": statistics.fmean(errors[label]),
                "ms_all_frames": [1000 * t for t in times[label]],
                "relative_error_all_frames": errors[label],
            }
        stc = rows[labels[1]]
        stc["recomputed_fraction"] = cacher.stats.recomputed_fraction
        refresh = [f.refresh for f in cacher.stats.per_frame]
        for key, kind in (("ms_refresh_frames", True), ("ms_selective_frames", False)):
            stc[key] = 1000 * median([t for t, r in zip(times[labels[1]], refresh, strict=True) if r == kind])
            stc[key.replace("ms_", "dense_ms_")] = 1000 * median(
                [t for t, r in zip(times["dense"], refresh, strict=True) if r == kind]
            )
        stc["relative_error_selective_frames"] = median(
            [e for e, r in zip(errors[labels[1]], refresh, strict=True) if not r]
        )
        if tome is not None:
            rows[labels[2]]["tokens_out"] = tome.stats.tokens_out
        results["towers"][f"{name} ({shape.layers} layers)"] = {
            "shape": asdict(shape),
            "tokens_per_frame": shape.tokens,
            "settings": dict(results["settings"]),
            "methods": rows,
        }
    return results


def table(results: dict[str, Any]) -> str:
    """The markdown table of `run`'s results."""
    body = []
    for entry in results["towers"].values():
        shape = entry["shape"]
        label = f"{shape['name']} ({shape['layers']} layers, {entry['tokens_per_frame']} patches)"
        for method, row in entry["methods"].items():
            change = "" if method == "dense" else f"{100 * row['change_vs_dense']:+.1f}%"
            wall = "" if method == "dense" else f"{100 * row['wall_change_vs_dense']:+.1f}%"
            error = "0" if method == "dense" else f"{row['relative_error']:.3f}"
            body.append(
                [label, method, f"{row['ms_per_frame']:.0f}", change, f"{row['wall_ms_per_frame']:.0f}", wall, error]
            )
            if "ms_selective_frames" in row:
                selective = row["ms_selective_frames"] / row["dense_ms_selective_frames"] - 1
                body.append(
                    [
                        label,
                        "  of which: refresh / selective frames",
                        f"{row['ms_refresh_frames']:.0f} / {row['ms_selective_frames']:.0f}",
                        f"{100 * selective:+.1f}% (selective)",
                        "",
                        "",
                        f"{row['relative_error_selective_frames']:.3f} (selective)",
                    ]
                )
    headers = ["tower", "method", "CPU ms/frame", "vs dense", "wall ms/frame", "vs dense (wall)", "rel. error"]
    return markdown_table(headers, body)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS))
    p.add_argument("--frames", type=int, default=6, help="frames per tower (default 6)")
    p.add_argument("--fps", type=float, default=0.5)
    p.add_argument("--siglip-layers", type=int, default=None, help="SigLIP layers (default 27, the real depth)")
    p.add_argument("--qwen-layers", type=int, default=8, help="Qwen2.5-VL ViT blocks (default 8 of 32)")
    p.add_argument("--update-ratio", type=float, default=0.25)
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--tome-ratio", type=float, default=0.5, help="ToMe: share of the tokens merged away")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (on cuda both time columns are wall-clock)")
    p.add_argument("--tiny", action="store_true", help="tiny towers (smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS, help="raw results JSON")
    p.add_argument("--table", action="store_true", help="only print the table of the results in --out")
    p.add_argument("--append", action="store_true", help="add this run's towers to those already in --out")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return 0
    results = run(
        args.towers,
        frames=args.frames,
        fps=args.fps,
        siglip_layers=args.siglip_layers,
        qwen_layers=args.qwen_layers,
        update_ratio=args.update_ratio,
        interval=args.interval,
        tome_ratio=args.tome_ratio,
        tiny=args.tiny,
        threads=args.threads,
        device=args.device,
    )
    command = "python benchmarks/streaming_encoder.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results["commands"] = [command]
    if args.append and args.out.is_file():  # add this run's towers to the file's
        previous = json.loads(args.out.read_text())
        previous["towers"].update(results["towers"])
        previous["commands"] = [*previous.get("commands", []), command]
        results = {**previous, "environment": results["environment"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
