"""Stacked-waveform images of EEG windows (RAICL, arXiv:2601.17844, §2 steps 1-3).

Each channel of a window is scaled on its own, offset vertically (first channel at the top) and drawn in
its own ``tab20`` colour. Two renderings exist:

- ``"vision"``: axis-free, 512 × 512 px, thick lines; only used to compute retrieval embeddings.
- ``"vlm"``: 1024 × 1024 px with channel names on the y axis and a time axis in seconds; sent to the VLM.

Design choices (the paper's code crops each picture to its tight bounding box; we do not):

- The canvas keeps its full size (no bbox crop), so every image of a kind has the same pixel size and
  therefore the same number of visual tokens.
- A :class:`Renderer` owns one matplotlib figure and redraws only the traces (the axes, labels and ticks
  are drawn once and restored from a cached background), which is what makes large cohorts fast.
- Amplitude scaling is either RAICL's per-window per-channel robust scaling (``"robust"``, default) or a
  clinical fixed sensitivity in µV per channel spacing (``"fixed"``), under which absolute amplitude and
  inter-channel ratios survive (the prompt's "high amplitude" criterion only makes sense there).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from omnipress.eeg.montage import old_channel_names
from omnipress.eeg.progress import progress_bar
from omnipress.extras import require

if TYPE_CHECKING:
    from omnipress.eeg.windows import WindowSet

Kind = Literal["vision", "vlm"]
KINDS: tuple[str, ...] = ("vision", "vlm")
MANIFEST = "render.json"


# --------------------------------------------------------------------------------------------------
# Pure scaling functions
# --------------------------------------------------------------------------------------------------
def robust_scale(
    data: np.ndarray, *, low: float = 1.0, high: float = 99.0, margin: float = 0.95, spacing: float = 1.0
) -> np.ndarray:
    """RAICL's per-window, per-channel robust scaling.

    For every channel of every window independently: ``s = (x - p_low) / (p_high - p_low) - 0.5`` (a
    denominator of 0 is replaced by 1), clipped to ``±margin / 2`` so that neighbouring traces never
    overlap, then multiplied by ``spacing``.

    Parameters
    ----------
    data : np.ndarray
        ``(..., n_samples)``: one window ``(n_channels, n_samples)`` or a batch ``(n, n_channels, n_samples)``.
    low, high : float
        Percentiles (0-100) mapped to ``-0.5`` and ``+0.5``.
    margin : float
        Fraction of the channel spacing a trace may occupy (0.95 in the paper).
    spacing : float
        Vertical distance between two channel baselines.

    Returns
    -------
    np.ndarray
        float32 array of the same shape, values in ``[-margin/2 * spacing, margin/2 * spacing]``.
    """
    x = _check_signal(data)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    _check_margin(margin, spacing)
    p_low, p_high = np.percentile(x, [low, high], axis=-1, keepdims=True)  # each (..., 1)
    denom = p_high - p_low
    denom = np.where(denom == 0, 1.0, denom)
    scaled = (x - p_low) / denom - 0.5
    return (np.clip(scaled, -margin / 2, margin / 2) * spacing).astype(np.float32)


def fixed_scale(
    data: np.ndarray, *, uv_per_spacing: float = 200.0, margin: float = 0.95, spacing: float = 1.0
) -> np.ndarray:
    """Clinical fixed-sensitivity scaling: one channel spacing equals ``uv_per_spacing`` µV.

    Each channel is centred on its own median (removes DC offsets, keeps amplitude), divided by
    ``uv_per_spacing`` and clipped to ``±margin / 2`` spacings (peaks beyond are flattened, as on a
    paper trace that hits the neighbouring channel).

    Parameters
    ----------
    data : np.ndarray
        ``(..., n_samples)`` in microvolts.
    uv_per_spacing : float
        Microvolts per channel spacing (e.g. 7 µV/mm at 30 mm spacing ≈ 200 µV).
    margin, spacing : float
        As in :func:`robust_scale`.
    """
    x = _check_signal(data)
    if not uv_per_spacing > 0:
        raise ValueError(f"uv_per_spacing must be > 0, got {uv_per_spacing}")
    _check_margin(margin, spacing)
    centred = x - np.median(x, axis=-1, keepdims=True)
    return (np.clip(centred / uv_per_spacing, -margin / 2, margin / 2) * spacing).astype(np.float32)


def stack_offsets(n_channels: int, spacing: float = 1.0) -> np.ndarray:
    """Baseline of channel ``i`` at ``(n_channels - 1 - i) * spacing`` (first channel on top)."""
    return (n_channels - 1 - np.arange(n_channels)) * float(spacing)


def channel_colors(n_channels: int) -> np.ndarray:
    """``tab20`` resampled to ``n_channels`` entries: ``(n_channels, 4)`` RGBA in [0, 1]."""
    matplotlib = require("matplotlib", extra="eeg", purpose="drawing EEG windows")

    return np.asarray(matplotlib.colormaps["tab20"].resampled(n_channels)(np.arange(n_channels)))


def _check_signal(data: np.ndarray) -> np.ndarray:
    x = np.asarray(data, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] < 2:
        raise ValueError(f"expected (n_channels, n_samples) or (n, n_channels, n_samples), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("EEG data contains NaN or inf")
    return x


def _check_margin(margin: float, spacing: float) -> None:
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RenderConfig:
    """How one kind of image is drawn.

    Parameters
    ----------
    kind : {"vision", "vlm"}
        ``"vision"`` = axis-free retrieval image; ``"vlm"`` = labelled image for the VLM.
    size : int, optional
        Square image side in pixels (default 512 for vision, 1024 for vlm, as in the paper).
    dpi : int
        Dots per inch of the figure (fonts and line widths are in points).
    linewidth : float, optional
        Trace width in points at the reference size (default 3.0 vision, 2.0 vlm); scaled with ``size``.
    scaling : {"robust", "fixed"}
        :func:`robust_scale` (RAICL) or :func:`fixed_scale` (clinical).
    low, high, margin, uv_per_spacing : float
        Parameters of the scaling functions.
    old_names : bool
        Label the channels of ``"vlm"`` images with the old 10-20 names T3/T4/T5/T6 (for T7/T8/P7/P8), as the
        official code's images do.
    """

    kind: Kind = "vlm"
    size: int | None = None
    dpi: int = 100
    linewidth: float | None = None
    scaling: Literal["robust", "fixed"] = "robust"
    low: float = 1.0
    high: float = 99.0
    margin: float = 0.95
    uv_per_spacing: float = 200.0
    old_names: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.scaling not in ("robust", "fixed"):
            raise ValueError(f"scaling must be 'robust' or 'fixed', got {self.scaling!r}")
        if self.size is not None and not 32 <= self.size <= 8192:
            raise ValueError(f"size must be between 32 and 8192 pixels, got {self.size}")
        if self.dpi <= 0:
            raise ValueError(f"dpi must be > 0, got {self.dpi}")

    @property
    def reference_size(self) -> int:
        return 512 if self.kind == "vision" else 1024

    @property
    def pixels(self) -> int:
        return self.size or self.reference_size

    @property
    def zoom(self) -> float:
        """Factor applied to fonts and line widths relative to the paper's image size."""
        return self.pixels / self.reference_size

    @property
    def line_points(self) -> float:
        base = self.linewidth if self.linewidth is not None else (3.0 if self.kind == "vision" else 2.0)
        return base * self.zoom

    def scale(self, data: np.ndarray) -> np.ndarray:
        """Apply this config's amplitude scaling to ``(..., n_channels, n_samples)`` data."""
        if self.scaling == "robust":
            return robust_scale(data, low=self.low, high=self.high, margin=self.margin)
        return fixed_scale(data, uv_per_spacing=self.uv_per_spacing, margin=self.margin)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RenderConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown render settings {sorted(unknown)} (written by another omnipress version?)")
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# Renderer (one reusable figure)
# --------------------------------------------------------------------------------------------------
class Renderer:
    """Draw windows of one layout with one reused matplotlib figure (Agg, no pyplot state).

    The static parts (axes, tick labels, spines) are drawn once; each call restores that background and
    draws only the traces. A new layout (other channels, length or sampling rate) rebuilds the figure.

    Examples
    --------
    >>> r = Renderer(RenderConfig(kind="vlm"))
    >>> img = r.render(window, channels, sfreq=250.0)   # PIL.Image, RGB, 1024 x 1024
    """

    def __init__(self, config: RenderConfig) -> None:
        self.config = config
        self._layout: tuple | None = None

    def render(self, window: np.ndarray, channels: Sequence[str], sfreq: float) -> Image.Image:
        """Render one ``(n_channels, n_samples)`` window (µV) to an RGB image."""
        return Image.fromarray(self.render_array(window, channels, sfreq))

    def render_array(self, window: np.ndarray, channels: Sequence[str], sfreq: float) -> np.ndarray:
        """Like :meth:`render` but returns the ``(size, size, 3)`` uint8 pixel array."""
        window = np.asarray(window)
        if window.ndim != 2:
            raise ValueError(f"expected one window of shape (n_channels, n_samples), got {window.shape}")
        if len(channels) != window.shape[0]:
            raise ValueError(f"{len(channels)} channel names for {window.shape[0]} channels")
        if not sfreq > 0:
            raise ValueError(f"sfreq must be > 0, got {sfreq}")
        layout = (tuple(channels), window.shape[1], float(sfreq))
        if layout != self._layout:
            self._build(*layout)
        scaled = self.config.scale(window) + self._offsets[:, None]  # (n_channels, n_samples)
        canvas = self._fig.canvas
        canvas.restore_region(self._background)
        for line, trace in zip(self._lines, scaled):
            line.set_ydata(trace)
            self._ax.draw_artist(line)
        rgba = np.asarray(canvas.buffer_rgba())  # (H, W, 4), a view into the canvas
        return rgba[..., :3].copy()

    def _build(self, channels: tuple[str, ...], n_samples: int, sfreq: float) -> None:
        FigureCanvasAgg = require("matplotlib.backends.backend_agg", purpose="drawing EEG windows").FigureCanvasAgg
        Figure = require("matplotlib.figure", purpose="drawing EEG windows").Figure

        cfg = self.config
        n = len(channels)
        inches = cfg.pixels / cfg.dpi
        fig = Figure(figsize=(inches, inches), dpi=cfg.dpi, facecolor="white")
        FigureCanvasAgg(fig)
        duration = n_samples / sfreq
        if cfg.kind == "vision":
            ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
            ax.set_axis_off()
        else:
            ax = fig.add_subplot(1, 1, 1)
        ax.set_facecolor("white")
        x = np.arange(n_samples) / sfreq
        self._offsets = stack_offsets(n)
        colors = channel_colors(n)
        nan = np.full(n_samples, np.nan)
        self._lines = [
            ax.plot(x, nan, color=colors[i], linewidth=cfg.line_points, animated=True, antialiased=True)[0]
            for i in range(n)
        ]
        ax.set_xlim(0.0, duration)
        ax.set_ylim(-0.5, n - 0.5)
        if cfg.kind == "vlm":
            self._decorate(ax, channels, duration)
            fig.tight_layout(rect=(0.02, 0.02, 0.98, 0.98))
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)
        self._fig, self._ax = fig, ax
        self._layout = (channels, n_samples, sfreq)

    def _decorate(self, ax, channels: tuple[str, ...], duration: float) -> None:
        z = self.config.zoom
        font = {"family": "sans-serif", "weight": "bold"}
        labels = old_channel_names(channels) if self.config.old_names else list(channels)
        ax.set_yticks(self._offsets, labels=labels, fontsize=16 * z, **font)
        ticks = np.arange(0.0, duration + 1e-9, 0.5)
        ax.set_xticks(ticks, labels=[f"{t:.1f}" for t in ticks], fontsize=16 * z, **font)
        ax.set_xlabel("Time (s)", fontsize=18 * z, **font)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_linewidth(3 * z)
        ax.tick_params(width=2 * z, length=6 * z)
        ax.grid(False)


def pixel_hash(image: Image.Image | np.ndarray) -> str:
    """SHA-256 of the RGB pixel values (independent of the PNG encoder)."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Cohort rendering (files on disk, parallel)
# --------------------------------------------------------------------------------------------------
def image_path(root: str | Path, kind: str, patient: str, index: int) -> Path:
    """``{root}/{kind}/{patient}/{index:07d}.png``; ``index`` is the window's row in its WindowSet."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return Path(root) / kind / _safe_name(patient) / f"{int(index):07d}.png"


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return cleaned or "patient"


@dataclass
class RenderResult:
    """What :func:`render_windows` did."""

    root: Path
    rendered: int
    skipped: int
    seconds: float
    configs: dict[str, RenderConfig]

    @property
    def windows_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else float("nan")


def default_configs(kinds: Sequence[str] = KINDS, *, scaling: str = "robust", **overrides) -> dict[str, RenderConfig]:
    """One :class:`RenderConfig` per kind with shared ``scaling`` and other overrides."""
    return {k: RenderConfig(kind=k, scaling=scaling, **overrides) for k in kinds}  # type: ignore[arg-type]


def render_windows(
    windows: WindowSet,
    out_dir: str | Path,
    *,
    configs: dict[str, RenderConfig] | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    workers: int | None = 1,
    chunk_size: int = 32,
    overwrite: bool = False,
    progress: bool = True,
) -> RenderResult:
    """Render windows of a :class:`~omnipress.eeg.windows.WindowSet` to PNG files.

    Parameters
    ----------
    windows : WindowSet
        The windows (µV, bipolar montage).
    out_dir : path
        Root folder; images land at :func:`image_path` and the configs in ``render.json``.
    configs : dict, optional
        ``{"vision": RenderConfig, "vlm": RenderConfig}`` (default: both kinds, paper settings).
    indices : sequence of int, optional
        Rows to render (default: all).
    workers : int, optional
        Processes (``None`` = all cores). ``1`` renders in this process. Each worker reuses its figures.
    chunk_size : int
        Windows per task sent to a worker.
    overwrite : bool
        Re-render existing files (and allow a config different from the one recorded in ``render.json``).
    progress : bool
        Show a tqdm progress bar.
    """
    configs = dict(configs) if configs is not None else default_configs()
    if not configs:
        raise ValueError("configs is empty: give at least one kind to render")
    for kind, cfg in configs.items():
        if cfg.kind != kind:
            raise ValueError(f"configs[{kind!r}] has kind {cfg.kind!r}")
    root = Path(out_dir)
    _write_manifest(root, windows, configs, overwrite=overwrite)
    rows = np.arange(len(windows)) if indices is None else np.asarray(indices, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(windows)):
        raise ValueError(f"indices must be in [0, {len(windows)}), got range [{rows.min()}, {rows.max()}]")
    todo = []
    for i in rows.tolist():
        targets = [
            (kind, image_path(root, kind, windows.patient[i], i))
            for kind in configs
            if overwrite or not image_path(root, kind, windows.patient[i], i).exists()
        ]
        if targets:
            todo.append((i, targets))
    skipped = len(rows) - len(todo)
    start = time.perf_counter()
    bar = _progress(total=len(todo), enabled=progress, desc="render")
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg_dicts = {k: c.to_dict() for k, c in configs.items()}
    chunks = [todo[s : s + chunk_size] for s in range(0, len(todo), chunk_size)]
    payloads = (_payload(windows, chunk, cfg_dicts) for chunk in chunks)
    if n_workers == 1 or len(chunks) <= 1:
        for payload in payloads:
            bar.update(_render_chunk(payload))
    else:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
            for done in _bounded_map(pool, payloads, max_pending=2 * n_workers):
                bar.update(done)
    bar.close()
    return RenderResult(root, len(todo), skipped, time.perf_counter() - start, configs)


def _payload(windows: WindowSet, chunk: list, cfg_dicts: dict) -> dict:
    idx = [i for i, _ in chunk]
    return {
        "data": np.asarray(windows.data[idx], dtype=np.float32),
        "targets": [[(kind, str(path)) for kind, path in targets] for _, targets in chunk],
        "channels": list(windows.channels),
        "sfreq": float(windows.sfreq),
        "configs": cfg_dicts,
    }


@lru_cache(maxsize=8)
def _cached_renderer(config_json: str) -> Renderer:
    """One renderer (one figure) per config and process, reused across chunks."""
    return Renderer(RenderConfig.from_dict(json.loads(config_json)))


def _render_chunk(payload: dict) -> int:
    """Render one chunk; runs in a worker process (or in this one when ``workers=1``)."""
    for window, targets in zip(payload["data"], payload["targets"]):
        for kind, path in targets:
            renderer = _cached_renderer(json.dumps(payload["configs"][kind], sort_keys=True))
            image = renderer.render(window, payload["channels"], payload["sfreq"])
            save_png(image, path)
    return len(payload["targets"])


def save_png(image: Image.Image, path: str | Path) -> None:
    """Write atomically (temp file + rename) so an interrupted render never leaves a truncated PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def _bounded_map(pool: ProcessPoolExecutor, payloads: Iterator[dict], max_pending: int) -> Iterator[int]:
    pending = set()
    for payload in payloads:
        pending.add(pool.submit(_render_chunk, payload))
        if len(pending) >= max_pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    for fut in pending:
        yield fut.result()


def _write_manifest(root: Path, windows: WindowSet, configs: dict[str, RenderConfig], *, overwrite: bool) -> None:
    manifest_path = root / MANIFEST
    entry = {
        "channels": list(windows.channels),
        "sfreq": float(windows.sfreq),
        "n_windows": len(windows),
        "configs": {k: c.to_dict() for k, c in configs.items()},
    }
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        merged = {k: RenderConfig.from_dict(v).to_dict() for k, v in old.get("configs", {}).items()}
        for kind, cfg in entry["configs"].items():
            if kind in merged and merged[kind] != cfg and not overwrite:
                raise ValueError(
                    f"{manifest_path} records a different {kind!r} config ({merged[kind]}); "
                    f"use another folder or overwrite=True to re-render"
                )
            merged[kind] = cfg
        if (old.get("channels"), old.get("n_windows")) != (entry["channels"], entry["n_windows"]) and not overwrite:
            raise ValueError(f"{manifest_path} was written for other windows; use another folder or overwrite=True")
        entry["configs"] = merged
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(entry, indent=2))


def load_render_configs(root: str | Path) -> dict[str, RenderConfig]:
    """Configs recorded in ``{root}/render.json`` (empty dict if the folder was never rendered)."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return {}
    return {k: RenderConfig.from_dict(v) for k, v in json.loads(path.read_text())["configs"].items()}


class ImageStore:
    """Paths of rendered images, rendering missing ones on demand (in this process).

    Used by the runner so a run only needs the images of its queries and their references.
    """

    def __init__(self, windows: WindowSet, root: str | Path, configs: dict[str, RenderConfig] | None = None) -> None:
        self.windows = windows
        self.root = Path(root)
        recorded = load_render_configs(self.root)
        self.configs = {**default_configs(), **recorded, **(configs or {})}
        self._renderers: dict[str, Renderer] = {}
        if configs:
            _write_manifest(self.root, windows, {**recorded, **configs}, overwrite=False)

    def path(self, index: int, kind: str = "vlm") -> Path:
        """Path of the image of window ``index``; rendered first if missing."""
        index = int(index)
        if not 0 <= index < len(self.windows):
            raise IndexError(f"window index {index} out of range [0, {len(self.windows)})")
        path = image_path(self.root, kind, self.windows.patient[index], index)
        if not path.exists():
            if kind not in self._renderers:
                if not (self.root / MANIFEST).exists():
                    _write_manifest(self.root, self.windows, {kind: self.configs[kind]}, overwrite=False)
                self._renderers[kind] = Renderer(self.configs[kind])
            image = self._renderers[kind].render(self.windows.data[index], self.windows.channels, self.windows.sfreq)
            save_png(image, path)
        return path

    def image(self, index: int, kind: str = "vlm") -> Image.Image:
        with Image.open(self.path(index, kind)) as img:
            return img.convert("RGB")


def clip_view(image: Image.Image, size: int = 224) -> Image.Image:
    """What CLIP sees: resize the short side to ``size * 8/7`` (bicubic), then centre-crop ``size``."""
    short = round(size * 256 / 224)
    w, h = image.size
    scale = short / min(w, h)
    resized = image.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def write_previews(windows: WindowSet, out_dir: str | Path, index: int = 0, *, jpeg_quality: int = 50) -> list[Path]:
    """Sanity artefacts for one window: the CLIP view of the vision image, and the VLM image as JPEG.

    The JPEG at quality 50 shows whether labels stay legible after an API recompresses the image.
    """
    out = Path(out_dir) / "previews"
    out.mkdir(parents=True, exist_ok=True)
    data, ch, fs = windows.data[index], windows.channels, windows.sfreq
    vision = Renderer(RenderConfig(kind="vision")).render(data, ch, fs)
    vlm = Renderer(RenderConfig(kind="vlm")).render(data, ch, fs)
    paths = [out / f"{index:07d}_vision_clip224.png", out / f"{index:07d}_vlm_q{jpeg_quality}.jpg"]
    clip_view(vision).save(paths[0])
    vlm.save(paths[1], quality=jpeg_quality)
    return paths


def _progress(total: int, enabled: bool, desc: str):
    return progress_bar(total=total, enabled=enabled, desc=desc, unit="win")


__all__ = [
    "KINDS",
    "ImageStore",
    "RenderConfig",
    "RenderResult",
    "Renderer",
    "channel_colors",
    "clip_view",
    "default_configs",
    "fixed_scale",
    "image_path",
    "load_render_configs",
    "pixel_hash",
    "render_windows",
    "robust_scale",
    "save_png",
    "stack_offsets",
    "write_previews",
]
