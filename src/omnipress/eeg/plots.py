"""Figures of a scored run: confusion matrix, per-patient bars, example queries with their references.

All figures are built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state) and saved as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omnipress.eeg.progress import progress_bar
from omnipress.eeg.score import ScoreReport
from omnipress.extras import require


def _figure(width: float, height: float):
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", extra="eeg", purpose="plots").FigureCanvasAgg
    Figure = require("matplotlib.figure", extra="eeg", purpose="plots").Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_confusion(report: ScoreReport, path: str | Path, *, title: str | None = None) -> Path:
    """Pooled 2 × 2 confusion matrix (rows: truth, columns: prediction), counts and row percentages."""
    p = report.pooled
    matrix = np.array([[p.tn, p.fp], [p.fn, p.tp]])
    row_sum = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, row_sum, out=np.zeros_like(matrix, dtype=float), where=row_sum > 0)
    fig = _figure(4.2, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = ["non-seizure", "seizure"]
    ax.set_xticks([0, 1], labels=names)
    ax.set_yticks([0, 1], labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{100 * share[i, j]:.1f}%",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_title(title or f"pooled, {p.n_unparsable} unparsable excluded")
    return _save(fig, path)


def plot_per_patient(
    report: ScoreReport, path: str | Path, *, metrics: Sequence[str] = ("bca", "sensitivity", "specificity")
) -> Path:
    """Grouped bars of window metrics per patient, with the macro average as dashed lines."""
    patients = report.per_patient
    fig = _figure(max(6.0, 0.45 * len(patients) * len(metrics) / 2 + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(patients))
    width = 0.8 / len(metrics)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for m, metric in enumerate(metrics):
        values = np.array([getattr(p, metric) for p in patients], dtype=float)
        color = colors[m % len(colors)]
        ax.bar(x + (m - (len(metrics) - 1) / 2) * width, np.nan_to_num(values), width, label=metric, color=color)
        macro = report.macro.get(metric, np.nan)
        if not np.isnan(macro):
            ax.axhline(macro, color=color, linestyle="--", linewidth=1)
    ax.set_xticks(x, labels=[p.name for p in patients], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (dashed: macro)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_examples(rows: Sequence[dict], image_root: str | Path, path: str | Path, *, n: int = 4, seed: int = 0) -> Path:
    """Example queries (one per row of the figure) next to their retrieved references.

    Picks up to ``n`` rows with references, mixing correct and wrong answers when available. Panel titles
    give the label, the answer and the cosine distance of each reference to the query.
    """
    from PIL import Image

    with_refs = [r for r in rows if r.get("references")]
    if not with_refs:
        raise ValueError(
            "no result rows with reference images (only the 'raicl'/'reasoning_random' variants have them)"
        )
    rng = np.random.default_rng(seed)
    wrong = [r for r in with_refs if r["pred"] != r["label"]]
    right = [r for r in with_refs if r["pred"] == r["label"]]
    wrong = [wrong[i] for i in rng.permutation(len(wrong))]
    right = [right[i] for i in rng.permutation(len(right))]
    picks: list[dict] = []
    while len(picks) < n and (wrong or right):  # alternate wrong and right answers
        for group in (wrong, right):
            if group and len(picks) < n:
                picks.append(group.pop())
    n_cols = 1 + max(len(r["references"]) for r in picks)
    fig = _figure(2.6 * n_cols, 2.9 * len(picks))
    root = Path(image_root)
    names = {1: "SZ", 0: "NS", -1: "?"}
    for i, row in enumerate(picks):
        panels = [(row["image"], f"query {row['window_id']}\ntrue {names[row['label']]}, answer {names[row['pred']]}")]
        panels += [
            (ref["image"], f"ref {names[ref['label']]} ({ref['patient']})\nd = {ref['distance']:.3f}")
            for ref in row["references"]
        ]
        for j, (image, title) in enumerate(panels):
            ax = fig.add_subplot(len(picks), n_cols, i * n_cols + j + 1)
            with Image.open(root / image) as img:
                ax.imshow(np.asarray(img.convert("RGB")))
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    return _save(fig, path)


def plot_run(
    report: ScoreReport,
    rows: Sequence[dict],
    out_dir: str | Path,
    image_root: str | Path | None,
    *,
    progress: bool = False,
) -> list[Path]:
    """All plots of a run into ``out_dir``; the examples figure only when the rows have references."""
    out = Path(out_dir)
    jobs = [
        lambda: plot_confusion(report, out / "confusion.png"),
        lambda: plot_per_patient(report, out / "per_patient.png"),
    ]
    if image_root is not None and any(r.get("references") for r in rows):
        jobs.append(lambda: plot_examples(rows, image_root, out / "examples.png"))
    return [job() for job in progress_bar(jobs, enabled=progress, desc="plots", unit="plot")]


__all__ = ["plot_confusion", "plot_examples", "plot_per_patient", "plot_run"]
