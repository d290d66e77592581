"""Decode speed of compressed KV caches: prefill s, decode ms/token, tokens/s, peak memory and KV bytes per press.

A Qwen2-7B-shaped model with random weights (28 layers, 28 query / 4 KV heads, head_dim 128, hidden 3584,
intermediate 18944, vocabulary 152064; bf16) on CUDA. On CPU a model with the same attention head layout (28 query /
4 KV heads, head_dim 128) but 2 layers, hidden 1024, intermediate 5504 and a vocabulary of 8192, in float32: the
shape is printed above every table. Prompts are random token ids (the weights are random too), batches of equal-length
rows. For each (prompt length, batch) the presses none / SnapKV / PyramidKV / AdaKV / MixKV(AdaKV) at one budget
(1024 entries per KV head, window 32) run round-robin for several rounds in one process (the order rotates every
round); the tables show medians, ratios to the uncompressed model, the prefill overhead of MixKV(AdaKV) over AdaKV,
and the targets of issue 7, each PASS or FAIL (or NOT RUN when its configuration was not measured)::

    python benchmarks/decode_speed.py --out benchmarks/results/decode_speed_cpu.jsonl        # CPU (default shape)
    python benchmarks/decode_speed.py --device cuda --out benchmarks/results/decode_speed_gpu.jsonl
    python benchmarks/decode_speed.py --report-only --out benchmarks/results/decode_speed_cpu.jsonl
    python benchmarks/decode_speed.py --quick --out /tmp/quick.jsonl                         # tiny model, seconds

Only the public API is used: presses applied with ``with press(model):`` around ``model.generate``, their
``press.report``, and ``omnipress.cache.cache_kv_bytes`` / ``generated_cache`` on the returned cache.

Measurement (one record per (configuration, press, round))
----------------------------------------------------------
- One ``model.generate(max_new_tokens=1+N, min_new_tokens=1+N)`` (greedy; EOS cannot stop it early). A stopping
  criterion stamps the time after every generated token: CUDA events on GPU (recorded on the stream, so no extra
  host-device sync), ``time.perf_counter`` on CPU. prefill s = start of ``generate`` to the first token (prefill,
  compression and the first token's selection); decode ms/token = (last stamp - first stamp) / N, i.e. the mean of
  the N decode steps that follow the prefill; tokens/s = batch * 1000 / (ms/token).
- Peak memory: ``torch.cuda.max_memory_allocated`` (reset before each ``generate``; model weights included). On CPU
  it is not measured ("n/a"); the KV bytes are.
- KV bytes: ``cache_kv_bytes`` of the cache ``generate`` returns, i.e. the physical key/value storage at the end of
  decoding (prompt entries kept + N+1 new tokens, spare capacity included). The report's prefill numbers
  (``kv_bytes_after``, ``tokens_after``, ``prefill_seconds``) are stored in the JSON records too.
- Before the rounds, every press runs once on a short prompt (``--warmup-tokens``, longer than the budget so that it
  compresses) to warm kernels and allocators; not recorded.
- Results go to ``--out`` as JSON lines, one record per measurement, appended and flushed as they come. Running the
  same command again skips the measurements already in the file (after a crash it resumes); ``--report-only``
  reprints the tables. Records of other shapes, devices or settings in the same file are reported separately.
- A CUDA out-of-memory error is recorded as "OOM" for that row (later rounds of that row are skipped) and the run
  goes on. Any other exception is recorded as "error" with its message (and retried on the next run); the exit
  status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import omnipress as op
from _common import markdown_table, median, mib
from omnipress.cache import cache_kv_bytes, generated_cache

SCHEMA = 1
REPO = Path(__file__).resolve().parents[1]


# -- model shapes --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int = 28
    kv_heads: int = 4
    head_dim: int = 128

    def describe(self) -> str:
        return (
            f"Qwen2ForCausalLM `{self.name}`: {self.layers} layers, {self.heads} query / {self.kv_heads} KV heads, "
            f"head_dim {self.head_dim}, hidden {self.hidden}, intermediate {self.intermediate}, vocab {self.vocab}, "
            "random weights"
        )


SHAPES = {
    # Qwen2-7B(-Instruct): the shape the GPU numbers were measured on.
    "qwen2-7b": Shape("qwen2-7b", layers=28, hidden=3584, intermediate=18944, vocab=152064),
    # Same attention head layout, 2 layers of width 1024 (intermediate/hidden ~ 5.3 as in Qwen2-7B), small vocabulary:
    # fits ~40 minutes on 2 CPU cores with attention a visible share of each decode step (see BENCHMARKS.md).
    "cpu-small": Shape("cpu-small", layers=2, hidden=1024, intermediate=5504, vocab=8192),
    # --quick: seconds on any machine, for the smoke test.
    "tiny": Shape("tiny", layers=2, hidden=64, intermediate=128, vocab=256, heads=4, kv_heads=2, head_dim=16),
}


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A random-weight `Qwen2ForCausalLM` of `shape`, built directly on `device` in `dtype` (no copy from CPU)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=131072,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=1,
        eos_token_id=shape.vocab - 1,
        pad_token_id=0,
    )
    config._attn_implementation = "sdpa"
    config.dtype = dtype
    torch.manual_seed(seed)
    # Parameters are created on the device in the target dtype: no fp32 copy on the host, and the random init of a
    # 7B model runs on the GPU in seconds. (`AutoModelForCausalLM.from_config` costs ~3 s of imports on CPU.)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


# -- presses -------------------------------------------------------------------------------------------------------
PRESSES: dict[str, tuple[str, Callable[[int, int], Any] | None]] = {
    "none": ("none", None),
    "snapkv": ("SnapKV", lambda b, w: op.SnapKV(budget=b, window=w)),
    "pyramidkv": ("PyramidKV", lambda b, w: op.PyramidKV(budget=b, window=w)),
    "adakv": ("AdaKV", lambda b, w: op.AdaKV(budget=b, window=w)),
    "mixkv-adakv": ("MixKV(AdaKV)", lambda b, w: op.MixKV(op.AdaKV(budget=b, window=w))),
}


def label(press: str) -> str:
    return PRESSES[press][0]


def make_press(press: str, budget: int, window: int) -> Any:
    factory = PRESSES[press][1]
    return None if factory is None else factory(budget, window)


# -- timing --------------------------------------------------------------------------------------------------------
class Stamps:
    """A `generate` stopping criterion that never stops and stamps the time after every generated token.

    On CUDA the stamps are events recorded on the current stream (no host-device sync is added to the decode loop);
    elsewhere `time.perf_counter()`.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.events: list[Any] = []
        self._never: torch.Tensor | None = None

    def _stamp(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.events = [self._stamp()]

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        self.events.append(self._stamp())
        if self._never is None or self._never.shape[0] != input_ids.shape[0]:
            self._never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self._never

    def seconds(self) -> list[float]:
        """Seconds from the start to each stamp (the first entry is the prefill)."""
        if self.cuda:
            torch.cuda.synchronize()
            first = self.events[0]
            return [first.elapsed_time(e) / 1e3 for e in self.events[1:]]
        return [t - self.events[0] for t in self.events[1:]]


def _criteria(stamps: Stamps) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Criterion(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            return stamps(input_ids, scores, **kwargs)

    return StoppingCriteriaList([_Criterion()])


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def prompt_ids(length: int, batch: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Random token ids `(batch, length)`, the same for every press of a configuration (ids 0 and vocab-1 avoided)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + length * 101 + batch)
    return torch.randint(1, vocab - 1, (batch, length), generator=gen)


def run_generate(model: torch.nn.Module, press: Any, ids: torch.Tensor, new_tokens: int) -> dict[str, Any]:
    """One measured `generate` of 1 + `new_tokens` tokens under `press` (or none); see the module docstring."""
    device = ids.device
    cuda = device.type == "cuda"
    stamps = Stamps(device)
    eos = model.config.eos_token_id
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    context = press(model) if press is not None else contextlib.nullcontext()
    with context:
        stamps.start()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=1 + new_tokens,
            min_new_tokens=1 + new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
            return_dict_in_generate=True,
            stopping_criteria=_criteria(stamps),
        )
    times = stamps.seconds()
    steps = [b - a for a, b in itertools.pairwise(times)]
    cache = generated_cache(out)
    record: dict[str, Any] = {
        "prefill_s": times[0],
        "decode_ms": 1e3 * (times[-1] - times[0]) / len(steps) if steps else None,
        "step_ms": [round(1e3 * s, 3) for s in steps],
        "generated_tokens": int(out.sequences.shape[1] - ids.shape[1]),
        "kv_bytes": cache_kv_bytes(cache) if cache is not None else None,
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    }
    report = getattr(press, "report", None) if press is not None else None
    if report is not None:
        fields = ("tokens_before", "tokens_after", "kv_bytes_before", "kv_bytes_after", "prefill_seconds")
        record["report"] = {name: getattr(report, name, None) for name in (*fields, "compression_seconds")}
    del out, cache
    return record


# -- results file --------------------------------------------------------------------------------------------------
class Records:
    """Measurements as JSON lines: appended and flushed one by one, read back to resume and to report."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self.items: list[dict[str, Any]] = []
        if self.path is not None and self.path.is_file():
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.items.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash: ignore it, the measurement is redone
                    print(f"{self.path}:{number}: unreadable line skipped", file=sys.stderr)
            with self.path.open("rb+") as f:  # end a line cut by a crash, so that the next record starts a line
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")

    def add(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(item) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def measurements(self) -> list[dict[str, Any]]:
        return [r for r in self.items if r.get("type") == "measurement"]

    def done(self) -> dict[str, dict[str, Any]]:
        """Finished measurements by key (ok or OOM; errors are retried)."""
        return {r["key"]: r for r in self.measurements() if r.get("status") in ("ok", "OOM")}


def group_key(r: dict[str, Any]) -> tuple:
    return (r["device"], r["shape"], r["dtype"], r["budget"], r["window"], r["new_tokens"])


def measurement_key(group: tuple, length: int, batch: int, press: str, round_: int) -> str:
    device, shape, dtype, budget, window, new = group
    return f"v{SCHEMA}|{device}|{shape}|{dtype}|b={budget}|w={window}|N={new}|L={length}|B={batch}|{press}|r={round_}"


# -- environment ---------------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{'+dirty' if dirty else ''}" if head else None


def environment(device: torch.device) -> dict[str, Any]:
    info = _common.environment()
    info["cpu"] = _cpu_name()
    info["platform"] = platform.platform()
    info["omnipress"] = getattr(op, "__version__", "?")
    source = Path(op.__file__).resolve().parent
    # The commit only describes the code when omnipress is imported from this checkout (not from another copy).
    info["commit"] = _git_commit() if source.is_relative_to(REPO) else f"omnipress imported from {source}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


# -- driver --------------------------------------------------------------------------------------------------------
def _size(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)


def _sizes(values: Iterable[str]) -> list[int]:
    return [_size(v) for value in values for v in str(value).split(",") if v.strip()]


def _configs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        length, _, batch = item.strip().lower().partition("x")
        out.append((_size(length), int(batch)))
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: cuda bf16")
    p.add_argument("--shape", default=None, choices=list(SHAPES), help="default: qwen2-7b on cuda, cpu-small on cpu")
    p.add_argument("--layers", type=int, default=None, help="override the shape's number of layers")
    p.add_argument("--lengths", nargs="+", default=None, help="prompt tokens, e.g. 4k 16k 32k (default: those)")
    p.add_argument("--batches", nargs="+", default=None, help="batch sizes (default: cuda 1 4 16 (+8 at 32k); cpu 1 4)")
    p.add_argument("--configs", default=None, help="explicit LENGTHxBATCH list, e.g. 32kx1,32kx8 (overrides both)")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="skip configurations with length*batch above this (default: cpu 16384, cuda none; 0 = none)",
    )
    p.add_argument("--presses", nargs="+", default=None, help=f"subset of {', '.join(PRESSES)} (default: all)")
    p.add_argument("--budget", type=int, default=None, help="KV entries kept per KV head per layer (default 1024)")
    p.add_argument("--window", type=int, default=32, help="observation window of the presses (default 32)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick 2)")
    p.add_argument("--new-tokens", type=int, default=None, help="decode steps timed, N (default: cuda 32, cpu 16)")
    p.add_argument(
        "--warmup-tokens", type=int, default=None, help="warm-up prompt length (default 2*budget; --quick 0)"
    )
    p.add_argument("--deadline-min", type=float, default=None, help="start no new measurement after this many minutes")
    p.add_argument("--quick", action="store_true", help="tiny model and prompts (seconds): the smoke test")
    p.add_argument("--out", default="decode_speed_results.jsonl", help="JSON-lines results file (resumed if present)")
    p.add_argument("--no-resume", action="store_true", help="measure again what --out already holds")
    p.add_argument("--report-only", action="store_true", help="print the tables of --out and exit")
    args = p.parse_args(argv)

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    quick = args.quick
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.shape = args.shape or ("tiny" if quick else "qwen2-7b" if cuda else "cpu-small")
    args.budget = args.budget or (64 if quick else 1024)
    args.rounds = args.rounds or (2 if quick else 3)
    args.new_tokens = args.new_tokens or (4 if quick else 32 if cuda else 16)
    presses = [x for value in (args.presses or list(PRESSES)) for x in value.split(",") if x]
    unknown = sorted(set(presses) - set(PRESSES))
    if unknown:
        p.error(f"unknown presses {unknown}; choose from {list(PRESSES)}")
    args.presses = [x for x in PRESSES if x in presses]  # fixed order, "none" first
    if args.configs:
        configs = _configs(args.configs)
    else:
        lengths = _sizes(args.lengths) if args.lengths else ([256] if quick else [4096, 16384, 32768])
        batches = _sizes(args.batches) if args.batches else ([1, 2] if quick else [1, 4, 16] if cuda else [1, 4])
        configs = [(n, b) for n in lengths for b in batches]
        if cuda and not quick and args.batches is None and 32768 in lengths:
            configs.insert(configs.index((32768, 16)), (32768, 8))  # the batch-8 target
    if args.max_batch_tokens is None:
        args.max_batch_tokens = 16384 if not cuda and not quick else 0
    args.configs = configs
    if args.warmup_tokens is None:
        args.warmup_tokens = 0 if quick else min(2 * args.budget, min(n for n, _ in configs))
    if args.budget < args.window:
        p.error(f"--budget ({args.budget}) includes the --window ({args.window}) and must be >= it")
    return args


def plan(args: argparse.Namespace) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """The configurations to measure and the skipped ones with their reason."""
    run, skipped = [], []
    for n, b in args.configs:
        if args.max_batch_tokens and n * b > args.max_batch_tokens:
            reason = f"length x batch = {n * b} > --max-batch-tokens {args.max_batch_tokens} (time budget)"
            skipped.append((n, b, reason))
        else:
            run.append((n, b))
    return run, skipped


def _log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _free(device: torch.device, failed: bool = False) -> None:
    """Return the memory of the last measurement (gc takes ~0.4 s with transformers loaded: only where it matters)."""
    if device.type == "cuda" or failed:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_all(args: argparse.Namespace, records: Records) -> int:
    """Run every missing measurement; return the number of errors."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    shape = SHAPES[args.shape]
    if args.layers is not None:
        shape = dataclasses.replace(shape, name=f"{shape.name}-{args.layers}l", layers=args.layers)
    group = (device_label(device), shape.name, args.dtype, args.budget, args.window, args.new_tokens)
    todo, skipped = plan(args)
    env = environment(device)
    records.add({"type": "environment", "time": time.time(), **env})
    common = {
        "device": group[0],
        "shape": shape.name,
        "shape_description": shape.describe(),
        "dtype": args.dtype,
        "budget": args.budget,
        "window": args.window,
        "new_tokens": args.new_tokens,
    }
    for n, b, reason in skipped:
        records.add({"type": "skip", **common, "length": n, "batch": b, "reason": reason})
        _log(f"skip {n}x{b}: {reason}")

    done = {} if args.no_resume else records.done()
    keys = {
        (n, b, p, r): measurement_key(group, n, b, p, r)
        for n, b in todo
        for r in range(args.rounds)
        for p in args.presses
    }
    missing = [k for k, key in keys.items() if key not in done]
    if not missing:
        _log(f"all {len(keys)} measurements already in {args.out}")
        return 0
    _log(f"{len(missing)} of {len(keys)} measurements to run; {shape.describe()}, {args.dtype} on {group[0]}")
    start_build = time.perf_counter()
    model = build_model(shape, device, dtype)
    _log(f"model built in {time.perf_counter() - start_build:.1f} s")
    oom = {(r["length"], r["batch"], r["press"]) for r in done.values() if r.get("status") == "OOM"}
    errors = 0
    started = time.perf_counter()

    if args.warmup_tokens > 0:
        ids = prompt_ids(args.warmup_tokens, 1, shape.vocab, seed=1).to(device)
        t0 = time.perf_counter()
        for p in args.presses:
            try:
                run_generate(model, make_press(p, args.budget, args.window), ids, min(args.new_tokens, 4))
            except Exception as exc:  # reported on the measured runs
                _log(f"warm-up {p}: {type(exc).__name__}: {exc}")
        _free(device)
        _log(f"warm-up on {args.warmup_tokens} tokens: {time.perf_counter() - t0:.1f} s")

    for n, b in todo:
        if not any(k[:2] == (n, b) for k in missing):
            continue
        ids = prompt_ids(n, b, shape.vocab).to(device)
        t_config = time.perf_counter()
        for r in range(args.rounds):
            order = args.presses[r % len(args.presses) :] + args.presses[: r % len(args.presses)]
            for p in order:
                key = keys[(n, b, p, r)]
                if key in done or (n, b, p) in oom:
                    continue
                if args.deadline_min is not None and time.perf_counter() - started > 60 * args.deadline_min:
                    _log(f"deadline of {args.deadline_min} min reached: stopping before {n}x{b} {p} round {r + 1}")
                    return errors
                item: dict[str, Any] = {
                    "type": "measurement",
                    "key": key,
                    **common,
                    "length": n,
                    "batch": b,
                    "press": p,
                    "round": r,
                    "time": time.time(),
                    "load": _common.load_average(),
                    "torch": env["torch"],
                    "transformers": env["transformers"],
                    "commit": env["commit"],
                }
                failure: BaseException | None = None
                try:
                    item.update(run_generate(model, make_press(p, args.budget, args.window), ids, args.new_tokens))
                    item["status"] = "ok"
                except Exception as exc:
                    failure = exc
                    item["status"] = "OOM" if _is_oom(exc) else "error"
                    item["message"] = f"{type(exc).__name__}: {str(exc)[:500]}"
                if failure is not None:
                    if item["status"] == "OOM":
                        oom.add((n, b, p))
                    else:
                        errors += 1
                        traceback.print_exception(type(failure), failure, failure.__traceback__, file=sys.stderr)
                    failure = None
                _free(device, failed=item["status"] != "ok")
                records.add(item)
                _log(_progress(item, args.rounds))
        _log(f"{n}x{b}: {time.perf_counter() - t_config:.1f} s for the missing measurements")
    return errors


def _progress(item: dict[str, Any], rounds: int) -> str:
    head = f"[{item['length']}x{item['batch']} r{item['round'] + 1}/{rounds}] {label(item['press'])}:"
    if item["status"] != "ok":
        return f"{head} {item['status']} ({item.get('message', '')})"
    kv = item["kv_bytes"] / 2**20 if item.get("kv_bytes") is not None else float("nan")
    return f"{head} prefill {item['prefill_s']:.2f} s, decode {item['decode_ms']:.1f} ms/token, KV {kv:.1f} MiB"


# -- report --------------------------------------------------------------------------------------------------------
def _ratio(value: float | None, ref: float | None) -> float | None:
    return value / ref if value is not None and ref else None


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def summarise(measurements: Sequence[dict[str, Any]]) -> dict[tuple[int, int], dict[str, dict[str, Any]]]:
    """Per configuration and press: medians over rounds (and the per-round values)."""
    out: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for r in measurements:
        cell = out.setdefault((r["length"], r["batch"]), {}).setdefault(
            r["press"], {"rounds": {}, "status": None, "messages": []}
        )
        if r["status"] == "ok":
            cell["rounds"][r["round"]] = r  # a later record of the same round (rerun) replaces an earlier one
        else:
            cell["messages"].append(r.get("message", ""))
            if r["status"] == "OOM":
                cell["status"] = "OOM"
            elif cell["status"] is None:
                cell["status"] = "error"
    for presses in out.values():
        for cell in presses.values():
            rounds = list(cell["rounds"].values())
            if rounds:
                cell["status"] = "ok"
                cell["n"] = len(rounds)
                cell["prefill_s"] = median([x["prefill_s"] for x in rounds])
                cell["decode_ms"] = median([x["decode_ms"] for x in rounds if x["decode_ms"] is not None])
                cell["kv_bytes"] = median([x["kv_bytes"] for x in rounds if x.get("kv_bytes") is not None])
                peaks = [x["peak_bytes"] for x in rounds if x.get("peak_bytes") is not None]
                cell["peak_bytes"] = max(peaks) if peaks else None
                cell["tokens_per_s"] = rounds[0]["batch"] * 1000 / cell["decode_ms"]
    return out


def _per_round(a: dict[str, Any], b: dict[str, Any], field: str) -> list[float]:
    common = sorted(set(a["rounds"]) & set(b["rounds"]))
    return [a["rounds"][r][field] / b["rounds"][r][field] for r in common]


def _rounds_text(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def render_table(summary: dict[tuple[int, int], dict[str, dict[str, Any]]], cuda: bool) -> str:
    headers = [
        "length",
        "batch",
        "press",
        "prefill s",
        "prefill vs none",
        "decode ms/token",
        "tokens/s",
        "tokens/s vs none",
        "peak GiB",
        "KV MiB",
        "KV vs none",
        "rounds",
    ]
    rows = []
    for (n, b), presses in summary.items():
        none = presses.get("none", {})
        ok_none = none.get("status") == "ok"
        for p in [x for x in PRESSES if x in presses]:
            cell = presses[p]
            if cell["status"] != "ok":
                rows.append([n, b, label(p), *([cell["status"]] * 8), 0])
                continue
            peak = f"{cell['peak_bytes'] / 2**30:.2f}" if cell.get("peak_bytes") is not None else "n/a"
            rows.append(
                [
                    n,
                    b,
                    label(p),
                    f"{cell['prefill_s']:.2f}",
                    _x(_ratio(cell["prefill_s"], none.get("prefill_s"))) if ok_none else "-",
                    f"{cell['decode_ms']:.1f}",
                    f"{cell['tokens_per_s']:.1f}",
                    _x(_ratio(cell["tokens_per_s"], none.get("tokens_per_s"))) if ok_none else "-",
                    peak if cuda else "n/a",
                    mib(cell["kv_bytes"]),
                    _x(_ratio(cell["kv_bytes"], none.get("kv_bytes"))) if ok_none else "-",
                    cell["n"],
                ]
            )
    return markdown_table(headers, rows)


def render_overhead(summary: dict[tuple[int, int], dict[str, dict[str, Any]]]) -> str | None:
    rows = []
    for (n, b), presses in summary.items():
        host, mix = presses.get("adakv"), presses.get("mixkv-adakv")
        if not host or not mix or host["status"] != "ok" or mix["status"] != "ok":
            continue
        rounds = _per_round(mix, host, "prefill_s")
        rows.append(
            [
                n,
                b,
                f"{host['prefill_s']:.3f}",
                f"{mix['prefill_s']:.3f}",
                f"{100 * (mix['prefill_s'] / host['prefill_s'] - 1):+.1f}%",
                _rounds_text(rounds),
            ]
        )
    if not rows:
        return None
    headers = ["length", "batch", "AdaKV prefill s", "MixKV(AdaKV) prefill s", "overhead", "per-round ratios"]
    return markdown_table(headers, rows)


def check_targets(summary: dict[tuple[int, int], dict[str, dict[str, Any]]], cuda: bool) -> list[list[str]]:
    """Issue 7's targets as table rows [target, config, measured, result, note]; result is PASS, FAIL or NOT RUN."""
    lines: list[list[str]] = []

    def cell(n: int, b: int, p: str) -> dict[str, Any] | None:
        c = summary.get((n, b), {}).get(p)
        return c if c and c["status"] == "ok" else None

    def status(n: int, b: int, p: str) -> str:
        c = summary.get((n, b), {}).get(p)
        return c["status"] if c else "not measured"

    if not cuda:
        name = "decode within 1.15x of SnapKV (same budget)"
        for n, b in summary:
            for p in ("adakv", "mixkv-adakv"):
                mine, snap = cell(n, b, p), cell(n, b, "snapkv")
                if mine is None or snap is None:
                    missing = f"{label(p)}: {status(n, b, p)}, SnapKV: {status(n, b, 'snapkv')}"
                    lines.append([name, f"{n}x{b} {label(p)}", "-", "NOT RUN", missing])
                    continue
                ratio = mine["decode_ms"] / snap["decode_ms"]
                rounds = _per_round(mine, snap, "decode_ms")
                verdict = "PASS" if ratio <= 1.15 else "FAIL"
                lines.append(
                    [name, f"{n}x{b} {label(p)}", f"{ratio:.3f}x", verdict, f"per round {_rounds_text(rounds)}"]
                )
        name = "16k+ prompts: every press decodes faster than none"
        long = [(n, b) for n, b in summary if n >= 16384]
        if not long:
            lines.append([name, "-", "-", "NOT RUN", "no configuration with a 16k+ prompt was measured"])
        for n, b in long:
            for p in [x for x in PRESSES if x != "none"]:
                mine, none = cell(n, b, p), cell(n, b, "none")
                if mine is None or none is None:
                    missing = f"{label(p)}: {status(n, b, p)}, none: {status(n, b, 'none')}"
                    lines.append([name, f"{n}x{b} {label(p)}", "-", "NOT RUN", missing])
                    continue
                ratio = mine["decode_ms"] / none["decode_ms"]
                rounds = _per_round(mine, none, "decode_ms")
                verdict = "PASS" if ratio < 1.0 else "FAIL"
                lines.append(
                    [name, f"{n}x{b} {label(p)}", f"{ratio:.3f}x time", verdict, f"per round {_rounds_text(rounds)}"]
                )
        return lines

    name = "batch 1 / 32k: no press more than 5% slower than none"
    for p in [x for x in PRESSES if x != "none"]:
        mine, none = cell(32768, 1, p), cell(32768, 1, "none")
        if mine is None or none is None:
            note = f"{label(p)}: {status(32768, 1, p)}, none: {status(32768, 1, 'none')}"
            lines.append([name, f"32768x1 {label(p)}", "-", "NOT RUN", note])
            continue
        ratio = mine["decode_ms"] / none["decode_ms"]
        rounds = _per_round(mine, none, "decode_ms")
        verdict = "PASS" if ratio <= 1.05 else "FAIL"
        lines.append([name, f"32768x1 {label(p)}", f"{ratio:.3f}x time", verdict, f"per round {_rounds_text(rounds)}"])
    name = "batch 8 / 32k: at least 3x the tokens/s of none"
    for p in ("adakv", "mixkv-adakv"):
        mine, none = cell(32768, 8, p), cell(32768, 8, "none")
        if mine is None or none is None:
            note = f"{label(p)}: {status(32768, 8, p)}, none: {status(32768, 8, 'none')}"
            lines.append([name, f"32768x8 {label(p)}", "-", "NOT RUN", note])
            continue
        ratio = mine["tokens_per_s"] / none["tokens_per_s"]
        rounds = [1 / x for x in _per_round(mine, none, "decode_ms")]
        verdict = "PASS" if ratio >= 3.0 else "FAIL"
        lines.append([name, f"32768x8 {label(p)}", f"{ratio:.2f}x", verdict, f"per round {_rounds_text(rounds)}"])
    name = "MixKV(AdaKV) prefill overhead over AdaKV < 5%"
    for n, b in summary:
        mine, host = cell(n, b, "mixkv-adakv"), cell(n, b, "adakv")
        if mine is None or host is None:
            note = f"MixKV(AdaKV): {status(n, b, 'mixkv-adakv')}, AdaKV: {status(n, b, 'adakv')}"
            lines.append([name, f"{n}x{b}", "-", "NOT RUN", note])
            continue
        overhead = mine["prefill_s"] / host["prefill_s"] - 1
        rounds = _per_round(mine, host, "prefill_s")
        verdict = "PASS" if overhead < 0.05 else "FAIL"
        lines.append([name, f"{n}x{b}", f"{100 * overhead:+.1f}%", verdict, f"per round {_rounds_text(rounds)}"])
    return lines


def report(records: Records) -> str:
    envs = [r for r in records.items if r.get("type") == "environment"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records.measurements():
        groups.setdefault(group_key(r), []).append(r)
    skips: dict[tuple, dict[tuple[int, int], str]] = {}
    for r in records.items:
        if r.get("type") == "skip":
            skips.setdefault(group_key(r), {})[(r["length"], r["batch"])] = r["reason"]
    if not groups and not skips:
        return "(no measurements)"
    parts = []
    totals = {"PASS": 0, "FAIL": 0, "NOT RUN": 0}
    for key in dict.fromkeys([*groups, *skips]):
        device, shape, dtype, budget, window, new = key
        ms = groups.get(key, [])
        cuda = device.startswith("cuda")
        first = ms[0] if ms else None
        description = first["shape_description"] if first else SHAPES.get(shape, Shape(shape, 0, 0, 0, 0)).describe()
        env = next(
            (e for e in reversed(envs) if (device_label_from_env(e) == device)),
            envs[-1] if envs else {},
        )
        loads = [m["load"] for m in ms if m.get("load") is not None]
        versions = sorted({f"torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}" for m in ms})
        commits = sorted({str(m.get("commit")) for m in ms})
        head = [
            f"### Decode speed: {device}, {shape}, {dtype}",
            "",
            f"{description}, {dtype} on {device}. Budget {budget} entries per KV head per layer (window {window}); "
            f"random prompts, greedy decoding; decode ms/token over {new} steps after the prefill; medians of "
            f"interleaved rounds (round-robin over presses).",
            "",
            f"Machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} CPUs, {env.get('torch_threads', '?')} torch "
            f"threads, {env.get('platform', '?')}"
            + (f"; GPU {env['gpu']} ({env.get('gpu_memory_gib')} GiB, CUDA {env.get('cuda')})" if "gpu" in env else "")
            + f"; {'; '.join(versions) or 'no measurement yet'}; omnipress commit {', '.join(commits) or '-'}"
            + (f"; load average {min(loads):.2f}-{max(loads):.2f}" if loads else "")
            + ".",
        ]
        summary = summarise(ms)
        section = ["\n".join(head)]
        if summary:
            section.append(render_table(summary, cuda))
        skipped = skips.get(key, {})
        skipped = {c: why for c, why in skipped.items() if c not in summary}
        if skipped:
            section.append("Skipped: " + "; ".join(f"{n}x{b} ({why})" for (n, b), why in skipped.items()) + ".")
        overhead = render_overhead(summary)
        if overhead:
            section.append("#### MixKV(AdaKV) prefill overhead over AdaKV\n\n" + overhead)
        lines = check_targets(summary, cuda)
        for line in lines:
            totals[line[3]] += 1
        which = "GPU" if cuda else "CPU"
        section.append(
            f"#### Targets (issue 7, {which})\n\n"
            + markdown_table(["target", "config", "measured", "result", "note"], lines)
            + "\n\n"
            + ", ".join(f"{sum(line[3] == v for line in lines)} {v}" for v in totals)
        )
        parts.append("\n\n".join(section))
    parts.append("Overall: " + ", ".join(f"{count} {verdict}" for verdict, count in totals.items()))
    return "\n\n".join(parts)


def device_label_from_env(env: dict[str, Any]) -> str:
    return f"cuda ({env['gpu']})" if "gpu" in env else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    records = Records(args.out)
    if args.report_only:
        print(report(records))
        return 0
    torch.set_grad_enabled(False)
    threads = torch.get_num_threads()
    if args.quick:
        torch.set_num_threads(1)  # tiny ops: threads only add contention on a busy machine
    started = time.perf_counter()
    try:
        errors = measure_all(args, records)
    finally:
        torch.set_num_threads(threads)
    _log(f"measurements done in {time.perf_counter() - started:.1f} s ({errors} errors)")
    print(report(records), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
