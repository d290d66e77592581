"""RAICL pipeline benchmark on a synthetic cohort (offline, CPU): prints markdown tables.

1. data: synthetic EDF+ cohort -> prepared 4-s windows;
2. rendering throughput (windows/s), vision 512 px and VLM 1024 px, in memory and to PNG files, 1 and N workers;
3. index throughput: signal-feature embedder and a CLIP ViT-B/32-shaped image tower with random weights
   (timing only: no CLIP weights exist offline);
4. balanced accuracy of the retrieval-only k-NN vote (features embedding) on the RAICL query protocols;
5. local backend with a tiny random Qwen2-VL (timing only): prefill time and KV bytes per query with and without
   MixKV on the five images and with prompt-prefix reuse.

Run:  python benchmarks/eeg_pipeline.py            (about 3-6 minutes on 2 cores)
      python benchmarks/eeg_pipeline.py --quick    (smaller, about 1 minute)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def data(work: Path, patients: int, minutes: float):
    from omnipress.eeg.prepare import prepare
    from omnipress.eeg.synth import write_cohort

    t = time.perf_counter()
    files = write_cohort(work / "edf", patients=patients, seed=0, minutes_per_patient=minutes)
    synth_s = time.perf_counter() - t
    result = prepare(work / "edf", work / "windows", progress=False)
    ws = result.windows
    print("## Data\n")
    print(
        _table(
            ["cohort", "recordings", "windows", "seizure windows", "synth s", "prepare s"],
            [
                [
                    f"{patients} patients x {minutes:g} min",
                    len(files),
                    len(ws),
                    int(ws.label.sum()),
                    f"{synth_s:.1f}",
                    f"{result.seconds:.1f}",
                ]
            ],
        )
    )
    print()
    return ws


def render_speed(ws, work: Path, n: int, workers: int) -> None:
    from omnipress.eeg.render import RenderConfig, Renderer, render_windows

    rows = []
    idx = np.linspace(0, len(ws) - 1, n).astype(int)
    for kind in ("vision", "vlm"):
        cfg = RenderConfig(kind=kind)
        renderer = Renderer(cfg)
        renderer.render(ws.data[idx[0]], ws.channels, ws.sfreq)  # build the figure once
        t = time.perf_counter()
        for i in idx:
            renderer.render_array(ws.data[i], ws.channels, ws.sfreq)
        mem = n / (time.perf_counter() - t)
        speeds = []
        for w in sorted({1, workers}):
            out = work / f"render_{kind}_{w}"
            res = render_windows(ws, out, configs={kind: cfg}, indices=idx, workers=w, progress=False)
            speeds.append(f"{res.windows_per_second:.1f} ({w} worker{'s' if w > 1 else ''})")
        rows.append([kind, f"{cfg.pixels}x{cfg.pixels}", f"{mem:.1f}", ", ".join(speeds)])
    print(f"## Rendering ({n} windows, 18 channels x 4 s @ 256 Hz)\n")
    print(_table(["image", "pixels", "in memory, windows/s", "PNG files, windows/s"], rows))
    print()


def index_speed(ws, n_clip: int):
    import torch
    from transformers import CLIPConfig, CLIPModel
    from transformers.utils import logging as hf_logging

    from omnipress.eeg.embed import CLIPImageEmbedder, SignalFeatureEmbedder, build_index

    t = time.perf_counter()
    index = build_index(ws, SignalFeatureEmbedder(), progress=False)
    feat_speed = len(ws) / (time.perf_counter() - t)
    rows = [["signal features (no weights)", index.dim, len(ws), f"{feat_speed:.0f}"]]
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        CLIPModel(CLIPConfig()).save_pretrained(tmp)  # ViT-B/32 geometry, random weights
        emb = CLIPImageEmbedder(tmp, batch_size=32)
        sub = np.arange(min(n_clip, len(ws)))
        emb.embed(ws, sub[:4])  # warm-up
        t = time.perf_counter()
        emb.embed(ws, sub)
        clip_speed = len(sub) / (time.perf_counter() - t)
        rows.append(["CLIP ViT-B/32 shape, random weights (render + encode)", emb.dim, len(sub), f"{clip_speed:.1f}"])
    print(f"## Index ({torch.get_num_threads()} torch threads)\n")
    print(_table(["embedder", "dim", "windows", "windows/s"], rows))
    print()
    return index


def knn_accuracy(ws, index) -> None:
    from omnipress.eeg.knn import knn_rows
    from omnipress.eeg.run import select_queries
    from omnipress.eeg.score import score_rows

    settings = [  # (pool, weighting, k); the first is the CLI default
        ("raicl", "balanced", 5),
        ("raicl", "balanced", 1),
        ("raicl", "balanced", 15),
        ("raicl", "uniform", 5),
        ("loso", "balanced", 5),
        ("loso", "uniform", 5),
    ]
    rows = []
    for scheme in ("every", "all_seizures", "all"):
        queries = select_queries(ws.label, scheme, 10)
        for pool, weighting, k in settings:
            rep = score_rows(knn_rows(ws, index, queries, k=k, pool=pool, weighting=weighting))
            m = rep.macro
            rows.append(
                [
                    scheme,
                    len(queries),
                    pool,
                    weighting,
                    k,
                    f"{100 * m['bca']:.1f}",
                    f"{100 * m['sensitivity']:.1f}",
                    f"{100 * m['specificity']:.1f}",
                    f"{100 * rep.pooled.bca:.1f}",
                ]
            )
    print("## Retrieval-only k-NN vote (signal-feature embedding, per-patient macro average)\n")
    print(
        _table(
            ["queries", "n", "pool", "weighting", "k", "macro BCA", "sens", "spec", "pooled BCA"],
            rows,
        )
    )
    print()


def local_backend(ws, index, work: Path, n_queries: int, vlm_size: int, repeats: int = 2) -> None:
    import torch

    from omnipress.eeg.backends.local import LocalVLMBackend, make_press
    from omnipress.eeg.prompts import PromptImage, build_prompt
    from omnipress.eeg.render import ImageStore, RenderConfig
    from omnipress.eeg.retrieve import Retriever
    from omnipress.testing import tiny_model, tiny_processor

    model = tiny_model("qwen2_vl")
    tok = tiny_processor("qwen2_vl", model)
    store = ImageStore(ws, work / "local_images", configs={"vlm": RenderConfig(kind="vlm", size=vlm_size)})
    retriever = Retriever(index, k=2)
    patient = ws.patient[0]
    rows_of_patient = np.flatnonzero(ws.patient == patient)
    # queries from the second half of the patient's windows: a long labelled past, as in a real recording
    queries = [int(q) for q in rows_of_patient[len(rows_of_patient) // 2 :: 5][:n_queries]]

    def prompt(q: int, order: str):
        sel = retriever.select(q)
        img = lambda i, role, label=None: PromptImage(store.path(i, "vlm"), i, role, label)  # noqa: E731
        return build_prompt(
            "raicl",
            img(q, "test"),
            [img(i, "reference", 1) for i in sel.seizure],
            [img(i, "reference", 0) for i in sel.background],
            order=order,
        )

    probe = LocalVLMBackend(model, tok, prefix_reuse=False, max_new_tokens=1).encode(prompt(queries[0], "paper"))
    n_image = sum(e - s for s, e in probe.image_spans)
    budget = 32 + n_image // 4  # observation window (32) + a quarter of the image tokens, per KV head
    configs = [
        ("full prefill", None, False, "paper"),
        (f"MixKV(SnapKV) images, budget {budget}", "mixkv-snapkv", False, "paper"),
        ("prefix reuse, paper order", None, True, "paper"),
        ("prefix reuse, patient_first order", None, True, "patient_first"),
        (f"MixKV + prefix reuse, patient_first, budget {budget}", "mixkv-snapkv", True, "patient_first"),
    ]
    prompts = {order: [prompt(q, order) for q in queries] for order in ("paper", "patient_first")}
    rows = []
    for name, press_name, reuse, order in configs:
        backend = LocalVLMBackend(
            model, tok, press=make_press(press_name or "none", budget), prefix_reuse=reuse, max_new_tokens=4
        )
        backend.generate(prompts[order][-1])  # warm-up
        rounds = []
        for _ in range(repeats):  # the machine is shared: keep each query's fastest round
            backend.reset()
            rounds.append([backend.generate(p).info for p in prompts[order]])
        infos = rounds[0]
        prefill = [min(r[i]["prefill_s"] for r in rounds) for i in range(len(queries))]
        later = prefill[1:] or prefill
        rows.append(
            [
                name,
                infos[0]["prompt_tokens"],
                f"{1e3 * prefill[0]:.0f}",
                f"{1e3 * statistics.median(later):.0f}",
                f"{statistics.mean(i['reused_tokens'] for i in infos[1:] or infos):.0f}",
                f"{statistics.mean(i['kv_bytes'] for i in infos) / 1024:.0f}",
                f"{infos[0]['kv_bytes_full'] / 1024:.0f}",
            ]
        )
    print(
        f"## Local backend, tiny random Qwen2-VL (timing only; {torch.get_num_threads()} torch threads)\n\n"
        f"{len(queries)} RAICL queries of patient {patient} (best of {repeats} rounds), 5 images of "
        f"{vlm_size}x{vlm_size} px ({n_image} image "
        "tokens per prompt), default RAICL template (the tiny model's byte-level tokenizer makes the text ~4x "
        "longer than a real tokenizer would). Prefill includes the vision encoder.\n"
    )
    print(
        _table(
            [
                "setting",
                "prompt tokens",
                "1st query prefill ms",
                "next queries prefill ms (median)",
                "reused tokens (mean, next)",
                "KV KiB / query",
                "KV KiB uncompressed",
            ],
            rows,
        )
    )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes per patient")
    parser.add_argument("--render-windows", type=int, default=120)
    parser.add_argument("--clip-windows", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--queries", type=int, default=6, help="local-backend queries")
    parser.add_argument("--vlm-size", type=int, default=448, help="VLM image side for the local backend")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per local-backend setting (fastest kept)")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--quick", action="store_true", help="8 patients x 4 min, fewer windows")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.minutes, args.render_windows, args.clip_windows, args.queries = 8, 4.0, 40, 16, 4
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ws = data(work, args.patients, args.minutes)
        render_speed(ws, work, args.render_windows, args.workers)
        index = index_speed(ws, args.clip_windows)
        knn_accuracy(ws, index)
        if not args.skip_local:
            local_backend(ws, index, work, args.queries, args.vlm_size, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
