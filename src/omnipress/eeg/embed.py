"""Window embeddings for retrieval, and the on-disk embedding index.

RAICL (arXiv:2601.17844, §2 step 4) embeds the axis-free "vision" rendering of each window with the CLIP
ViT-B/32 image tower and compares windows by cosine distance. Two embedders share one interface here:

- :class:`CLIPImageEmbedder`: a transformers ``CLIPModel`` loaded from a local folder or hub id (CLIP
  preprocessing: bicubic resize of the short side, centre crop, CLIP mean/std; PIL only, no torchvision).
- :class:`SignalFeatureEmbedder`: no weights; handcrafted signal features
  (:func:`omnipress.eeg.features.signal_features`) z-scored over the indexed cohort. The z-scoring uses
  no labels; it is fitted on the windows being indexed (all patients), which is transductive but leaks
  no label information.

Every embedder returns L2-normalised float32 rows, so cosine distance is ``1 - a @ b``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omnipress.eeg.progress import progress_bar
from omnipress.model_source import check_device, load_error, model_source

if TYPE_CHECKING:
    from PIL import Image

    from omnipress.eeg.render import ImageStore
    from omnipress.eeg.windows import WindowSet

INDEX_ARRAYS = "index.npz"
INDEX_META = "index.json"


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm (zero rows stay zero). ``(n, d) -> (n, d)`` float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (n, d), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


class Embedder(ABC):
    """Maps windows to unit vectors. Subclasses set ``name`` and implement :meth:`embed`."""

    name: str = "embedder"
    #: True if the embedder looks at the rendered "vision" image rather than the signal.
    needs_images: bool = False

    @abstractmethod
    def embed(
        self,
        windows: WindowSet,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        images: ImageStore | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed rows ``indices`` (default all) of ``windows``: ``(n, dim)`` float32, unit rows."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON description saved with an index (enough to rebuild the embedder)."""


# --------------------------------------------------------------------------------------------------
# Signal features (no weights)
# --------------------------------------------------------------------------------------------------
@dataclass
class SignalFeatureEmbedder(Embedder):
    """Handcrafted signal features, z-scored, then L2-normalised.

    Parameters
    ----------
    batch_size : int
        Windows per call to :func:`~omnipress.eeg.features.signal_features`.
    mean, std : np.ndarray, optional
        Standardisation statistics; fitted on the first :meth:`embed` call when not given.
    """

    batch_size: int = 512
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    name: str = field(default="features", init=False)

    def raw_features(self, windows: WindowSet, indices: np.ndarray, progress: bool = False) -> np.ndarray:
        from omnipress.eeg.features import signal_features

        out = []
        bar = _progress(len(indices), progress, "features")
        for s in range(0, len(indices), self.batch_size):
            rows = indices[s : s + self.batch_size]
            out.append(np.asarray(signal_features(np.asarray(windows.data[rows]), windows.sfreq), dtype=np.float64))
            bar.update(len(rows))
        bar.close()
        if not out:
            return np.zeros((0, 0))
        feats = np.concatenate(out)  # (n, n_features)
        if not np.all(np.isfinite(feats)):
            raise ValueError("signal_features returned NaN/inf; check the windows (flat or corrupted channels?)")
        return feats

    def embed(self, windows, indices=None, *, images=None, progress=False) -> np.ndarray:
        rows = _rows(windows, indices)
        feats = self.raw_features(windows, rows, progress)
        if self.mean is None or self.std is None:
            self.mean = feats.mean(axis=0)
            std = feats.std(axis=0)
            self.std = np.where(std > 0, std, 1.0)
        if feats.shape[1] != len(self.mean):
            raise ValueError(f"{feats.shape[1]} features but standardisation stats for {len(self.mean)}")
        return l2_normalize((feats - self.mean) / self.std)

    def config(self) -> dict[str, Any]:
        return {
            "type": "features",
            "mean": None if self.mean is None else np.asarray(self.mean).tolist(),
            "std": None if self.std is None else np.asarray(self.std).tolist(),
        }


# --------------------------------------------------------------------------------------------------
# CLIP image tower
# --------------------------------------------------------------------------------------------------
class CLIPImageEmbedder(Embedder):
    """CLIP image embeddings of the axis-free "vision" renderings (the paper's retrieval space), or of the labelled
    "vlm" renderings (``image_kind="vlm"``; the official code's ``--index_from VLM``).

    Parameters
    ----------
    model : str or Path
        Local folder saved with ``CLIPModel.save_pretrained`` (optionally with a ``preprocessor_config.json``)
        or a hub id (needs network access or a populated HF cache).
    device : str
        Torch device.
    batch_size : int
        Images per forward pass (64 in the paper).
    render_config : RenderConfig, optional
        How images are drawn when no :class:`~omnipress.eeg.render.ImageStore` is given.
    image_kind : {"vision", "vlm"}
        Which rendering is embedded.
    """

    needs_images = True

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        render_config=None,
        image_kind: str = "vision",
    ) -> None:
        import torch
        from transformers import CLIPModel

        from omnipress.eeg.render import RenderConfig

        self.model_id = model_source(model, what="CLIP model")
        self.device = check_device(device)
        self.batch_size = int(batch_size)
        if image_kind not in ("vision", "vlm"):
            raise ValueError(f"image_kind must be 'vision' or 'vlm', got {image_kind!r}")
        self.render_config = render_config or RenderConfig(kind=image_kind)
        if self.render_config.kind != image_kind:
            raise ValueError(f"image_kind is {image_kind!r} but the render config draws {self.render_config.kind!r}")
        self.image_kind = image_kind
        try:
            self.model = CLIPModel.from_pretrained(self.model_id).to(device).eval()
            self.processor = _clip_processor(self.model_id, self.model.config.vision_config.image_size)
        except OSError as err:
            raise load_error(self.model_id, what="CLIP model", error=err) from err
        self.name = f"clip:{self.model_id}"
        self._torch = torch

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed PIL images: ``(n, projection_dim)`` float32 unit rows."""
        torch = self._torch
        out = []
        for s in range(0, len(images), self.batch_size):
            batch = [img.convert("RGB") for img in images[s : s + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                feats = self.model.get_image_features(pixel_values=pixels)  # (b, projection_dim)
            feats = getattr(feats, "pooler_output", feats)
            out.append(feats.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))

    def embed(self, windows, indices=None, *, images=None, progress=False) -> np.ndarray:
        from PIL import Image

        from omnipress.eeg.render import Renderer

        rows = _rows(windows, indices)
        if images is not None:  # the files on disk define what was embedded: record their config
            self.render_config = images.configs[self.image_kind]
        renderer = None if images is not None else Renderer(self.render_config)
        out = []
        bar = _progress(len(rows), progress, "clip")
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s : s + self.batch_size]
            if images is not None:
                batch = []
                for i in chunk:
                    with Image.open(images.path(int(i), self.image_kind)) as im:
                        batch.append(im.convert("RGB"))
            else:
                batch = [renderer.render(windows.data[i], windows.channels, windows.sfreq) for i in chunk]
            out.append(self.embed_images(batch))
            bar.update(len(chunk))
        bar.close()
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def config(self) -> dict[str, Any]:
        return {"type": "clip", "model": self.model_id, "render": self.render_config.to_dict()}


def _clip_processor(model_id: str, image_size: int):
    """CLIP preprocessing with the PIL backend (works without torchvision)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    local = Path(model_id)
    if (local / "preprocessor_config.json").exists() or not local.exists():
        try:
            return CLIPImageProcessorPil.from_pretrained(model_id)
        except OSError:
            if not local.exists():
                raise
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


def make_embedder(spec: str | dict, **kwargs) -> Embedder:
    """Build an embedder from ``"features"``, ``"clip:<path or hub id>"`` or a saved :meth:`Embedder.config`."""
    if isinstance(spec, dict):
        kind = spec.get("type")
        if kind == "features":
            mean = None if spec.get("mean") is None else np.asarray(spec["mean"])
            std = None if spec.get("std") is None else np.asarray(spec["std"])
            return SignalFeatureEmbedder(mean=mean, std=std, **kwargs)
        if kind == "clip":
            from omnipress.eeg.render import RenderConfig

            render = RenderConfig.from_dict(spec["render"])
            return CLIPImageEmbedder(spec["model"], render_config=render, image_kind=render.kind, **kwargs)
        raise ValueError(f"unknown embedder config type {kind!r}; expected 'features' or 'clip'")
    if spec == "features":
        if kwargs.pop("image_kind", "vision") != "vision":
            raise ValueError("the 'features' embedder reads the signal, not an image; image_kind applies to clip:")
        return SignalFeatureEmbedder(**kwargs)
    if spec.startswith("clip:") and len(spec) > 5:
        return CLIPImageEmbedder(spec[5:], **kwargs)
    raise ValueError(f"unknown embedder {spec!r}; use 'features' or 'clip:<local folder or hub id>'")


# --------------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------------
@dataclass
class EmbeddingIndex:
    """Unit embeddings of every window of a WindowSet, row-aligned with it, plus the metadata retrieval needs.

    Attributes
    ----------
    vectors : np.ndarray
        ``(n, dim)`` float32, L2-normalised.
    patient, recording : np.ndarray
        ``(n,)`` str.
    start : np.ndarray
        ``(n,)`` float64 window start in seconds within its recording.
    duration : float
        Window length in seconds (for the overlap leakage guard).
    label : np.ndarray
        ``(n,)`` int8, 1 = seizure.
    embedder : dict
        :meth:`Embedder.config` of the embedder that produced the vectors.
    fingerprint : str
        Hash of the WindowSet's window ids and labels; checked when the index is reused.
    """

    vectors: np.ndarray
    patient: np.ndarray
    recording: np.ndarray
    start: np.ndarray
    duration: float
    label: np.ndarray
    embedder: dict = field(default_factory=dict)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        n = len(self.vectors)
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be (n, dim), got shape {self.vectors.shape}")
        self.patient = np.asarray(self.patient).astype(str)
        self.recording = np.asarray(self.recording).astype(str)
        self.start = np.asarray(self.start, dtype=np.float64)
        self.label = np.asarray(self.label).astype(np.int8)
        for name in ("patient", "recording", "start", "label"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} vectors")
        if not set(np.unique(self.label).tolist()) <= {0, 1}:
            raise ValueError("labels must be 0 (non-seizure) or 1 (seizure)")

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(
            out / INDEX_ARRAYS,
            vectors=self.vectors,
            patient=self.patient,
            recording=self.recording,
            start=self.start,
            label=self.label,
        )
        meta = {"duration": self.duration, "embedder": self.embedder, "fingerprint": self.fingerprint, "n": len(self)}
        (out / INDEX_META).write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingIndex:
        path = Path(path)
        if not (path / INDEX_ARRAYS).exists():
            raise FileNotFoundError(f"no embedding index in {path} (expected {INDEX_ARRAYS}); build one with `index`")
        meta = json.loads((path / INDEX_META).read_text())
        with np.load(path / INDEX_ARRAYS, allow_pickle=False) as z:
            return cls(
                vectors=z["vectors"],
                patient=z["patient"],
                recording=z["recording"],
                start=z["start"],
                label=z["label"],
                duration=float(meta["duration"]),
                embedder=meta["embedder"],
                fingerprint=meta["fingerprint"],
            )

    def check_matches(self, windows: WindowSet) -> None:
        """Raise if this index was not built from ``windows`` (other windows, order or labels)."""
        fp = windows_fingerprint(windows)
        if fp != self.fingerprint:
            raise ValueError(
                "the embedding index does not match these windows (different windows, order or labels); "
                "rebuild it with `omnipress eeg index`"
            )


def windows_fingerprint(windows: WindowSet) -> str:
    """Stable hash of a WindowSet's window ids and labels (row order matters)."""
    h = hashlib.sha256()
    h.update("\n".join(np.asarray(windows.window_id).astype(str).tolist()).encode())
    h.update(np.asarray(windows.label, dtype=np.int8).tobytes())
    return h.hexdigest()


def build_index(
    windows: WindowSet, embedder: Embedder, *, images: ImageStore | None = None, progress: bool = True
) -> EmbeddingIndex:
    """Embed every window of ``windows`` with ``embedder`` into an :class:`EmbeddingIndex`."""
    if len(windows) == 0:
        raise ValueError("cannot index an empty WindowSet")
    vectors = embedder.embed(windows, images=images, progress=progress)
    return EmbeddingIndex(
        vectors=vectors,
        patient=windows.patient,
        recording=windows.recording,
        start=windows.start,
        duration=float(windows.duration),
        label=windows.label,
        embedder=embedder.config(),
        fingerprint=windows_fingerprint(windows),
    )


def _rows(windows: WindowSet, indices) -> np.ndarray:
    rows = np.arange(len(windows)) if indices is None else np.asarray(indices, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(windows)):
        raise IndexError(f"window indices must be in [0, {len(windows)})")
    return rows


def _progress(total: int, enabled: bool, desc: str):
    return progress_bar(total=total, enabled=enabled, desc=desc, unit="win")


__all__ = [
    "CLIPImageEmbedder",
    "Embedder",
    "EmbeddingIndex",
    "SignalFeatureEmbedder",
    "build_index",
    "l2_normalize",
    "make_embedder",
    "windows_fingerprint",
]
