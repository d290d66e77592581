"""Streaming video benchmark (issue 9): the three sections side by side, each also runnable alone.

- ``encoder`` (`streaming_encoder.py`): vision-tower ms/frame dense vs STC-Cacher (r=0.25, N=2) vs ToMe-style merging
  on a SigLIP-so400m-shaped tower and a Qwen2.5-VL-shaped ViT, with the relative error of the encoder outputs;
- ``prefill`` (`streaming_prefill.py`): language-model prefill ms/frame at 196 vs 64 tokens/frame (STC-Pruner,
  VisionZip-, VidCom2-style and the other pruners) on a LLaVA-OneVision-shaped model;
- ``memory`` (`streaming_memory.py`): KV bytes, process/accelerator memory and ms/frame over a 2,000-frame stream for
  each memory policy (full, window, retrieval), and the time to answer a question.

Every section reads the real video in ``../shared/data/video`` and writes its raw results under
``benchmarks/results/``; its table is printed, and BENCHMARKS.md holds the measured ones::

    python benchmarks/streaming_video.py                          # all three, CPU (about an hour on 2 cores)
    python benchmarks/streaming_video.py --sections prefill memory --device cuda
    python benchmarks/streaming_video.py --sections encoder --encoder-args "--towers siglip --frames 4"

``--<section>-args`` passes further options to that section's script (see its ``--help``).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
SECTIONS = ("encoder", "prefill", "memory")


def load_section(name: str) -> ModuleType:
    """The module `benchmarks/streaming_<name>.py` (benchmarks is not a package)."""
    path = HERE / f"streaming_{name}.py"
    spec = importlib.util.spec_from_file_location(f"streaming_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def section_argv(name: str, args: argparse.Namespace) -> list[str]:
    """The command line of one section: the shared options it takes, then its own `--<name>-args`."""
    argv: list[str] = []
    if args.device != "cpu":
        argv += ["--device", args.device]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return argv + shlex.split(getattr(args, f"{name}_args") or "")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--device", default="cpu", help="cpu or cuda (every section)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of every section")
    for name in SECTIONS:
        p.add_argument(f"--{name}-args", default="", metavar="ARGS", help=f"further options of the {name} section")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    status = 0
    for name in args.sections:
        print(f"\n## Streaming video: {name}\n", flush=True)
        status = max(status, int(load_section(name).main(section_argv(name, args)) or 0))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
