"""A local ``transformers`` VLM as a backend, with omnipress KV compression and prompt-prefix reuse.

Supported models: the families omnipress has adapters for that take images (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
LLaVA-1.5, LLaVA-OneVision). The prompt's text and images are interleaved with the tokenizer's chat template
(one image placeholder per image, in order) and expanded by the family adapter, so no torchvision-backed processor
is needed.

Prefix reuse (``prefix_reuse=True``, Qwen-VL families): the prompt is prefilled in two chunks, the prefix (every
token before the test image: instructions and reference images) and the suffix (test image and output
instructions), with positions computed once for the whole prompt, so the result equals a single prefill. The
prefix cache of the previous query is kept; the next query reuses its longest common prefix (tokens and image
contents both equal; a cut never falls inside an image) and only prefills the rest. Queries of one patient share
their non-seizure references, so with ``order="patient_first"`` or static seizure references most of the prompt is
reused; with the paper's order the shared part is the instruction text.

Compression (``press=...``, e.g. ``MixKV(SnapKV(budget=256, scope="image"))``): without prefix reuse the whole
prompt is prefilled inside ``with press(model):`` and the press compresses it using the final instructions as its
observation window. With prefix reuse the press compresses the prefix once, when it is prefilled from scratch
(observation window: the end of the reference block), and the suffix is appended uncompressed; a compressed prefix
is reused only when the next prompt repeats all of it (compressed caches cannot be cut).

Decoding is greedy (temperature 0, as in RAICL) with explicit positions that continue from the original prompt
length, so compression never shifts positions.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnipress.eeg.backends.base import Answer, Backend
from omnipress.eeg.prompts import Prompt, PromptImage
from omnipress.model_source import check_device, load_error, model_source

PRESS_NAMES = ("none", "snapkv", "adakv", "mixkv-snapkv", "mixkv-adakv")
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def make_press(name: str, budget: int, *, scope: str = "image") -> Any:
    """A press by CLI name (``"none"`` → ``None``); ``budget`` = KV entries kept per head (window included)."""
    import omnipress as op

    factories = {
        "snapkv": lambda: op.SnapKV(budget=budget, scope=scope),
        "adakv": lambda: op.AdaKV(budget=budget, scope=scope),
        "mixkv-snapkv": lambda: op.MixKV(op.SnapKV(budget=budget, scope=scope)),
        "mixkv-adakv": lambda: op.MixKV(op.AdaKV(budget=budget, scope=scope)),
    }
    if name == "none":
        return None
    if name not in factories:
        raise ValueError(f"unknown press {name!r}; choose one of {PRESS_NAMES}")
    return factories[name]()


@dataclass
class EncodedPrompt:
    """Model inputs of one prompt plus what prefix reuse needs."""

    inputs: dict[str, Any]
    positions: Any  # (4, 1, N) for M-RoPE (text row + t/h/w rows), (1, N) otherwise
    rope_delta: int
    signature: np.ndarray  # (N,) token ids, image tokens replaced by -(1 + image content id)
    image_spans: list[tuple[int, int]]
    prefix_end: int  # tokens before the last (test) image

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


@dataclass
class _PrefixCache:
    signature: np.ndarray
    cache: Any
    compressed: bool


class LocalVLMBackend(Backend):
    """Greedy generation with a local VLM (module docstring).

    Parameters
    ----------
    model : transformers model
        A loaded VLM of a supported family (eval mode).
    tokenizer : tokenizer
        Its tokenizer, with a chat template that writes ``{"type": "image"}`` items as the image placeholder.
    press : omnipress press, optional
        KV compression applied at prefill.
    prefix_reuse : bool
        Reuse the previous prompt's prefix cache (Qwen-VL families).
    max_new_tokens : int
        Answer length limit.
    image_processor : optional
        Overrides the family adapter's default (PIL) image processor.
    max_pixels : int, optional
        Qwen-VL only: cap on pixels per image after resizing (fewer visual tokens).
    model_id : str
        Name recorded with runs.
    """

    name = "local"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        press=None,
        prefix_reuse: bool = True,
        max_new_tokens: int = 512,
        image_processor=None,
        max_pixels: int | None = None,
        model_id: str = "",
    ) -> None:
        import torch

        from omnipress.adapters import get_adapter
        from omnipress.adapters.mrope import MRopeAdapter

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.adapter = get_adapter(model)
        if "image" not in self.adapter.modalities:
            raise ValueError(f"{type(model).__name__} ({self.adapter.family}) does not take images")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; one that writes image placeholders is needed")
        self.mrope = isinstance(self.adapter, MRopeAdapter)
        if prefix_reuse and self.adapter.family not in QWEN_FAMILIES:
            raise ValueError(
                f"prefix reuse supports the Qwen-VL families {QWEN_FAMILIES}, not {self.adapter.family}; "
                "pass prefix_reuse=False"
            )
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.press = press
        self.prefix_reuse = bool(prefix_reuse)
        self.max_new_tokens = int(max_new_tokens)
        self.image_processor = image_processor
        if max_pixels is not None:
            if self.adapter.family not in QWEN_FAMILIES:
                raise ValueError("max_pixels applies to the Qwen-VL image processor only")
            self.image_processor = _qwen_processor(self.adapter, max_pixels)
        self.model_id = model_id or type(model).__name__
        self.device = next(model.parameters()).device
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(int(tokenizer.eos_token_id))
        self.eos_ids = set(eos)
        self._prefix: _PrefixCache | None = None
        self._image_ids: dict[str, int] = {}
        self._torch = torch

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        press=None,
        prefix_reuse: bool = True,
        max_new_tokens: int = 512,
        max_pixels: int | None = None,
    ) -> LocalVLMBackend:
        """Load a VLM from a local folder or hub id; ``"tiny:<family>"`` builds a random-weight test model."""
        import torch

        model_id = str(model_id)
        check_device(device)
        if model_id.startswith("tiny:"):
            from omnipress.testing import tiny_model, tiny_processor

            family = model_id[5:]
            model = tiny_model(family)
            tokenizer = tiny_processor(family, model)
            tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        else:
            from transformers import AutoModelForImageTextToText, AutoTokenizer

            torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
            model_id = model_source(model_id, what="model")
            try:
                model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=torch_dtype)
                tokenizer = AutoTokenizer.from_pretrained(model_id)
            except OSError as err:
                raise load_error(model_id, what="model", error=err) from err
        model = model.to(device)
        return cls(
            model,
            tokenizer,
            press=press,
            prefix_reuse=prefix_reuse,
            max_new_tokens=max_new_tokens,
            max_pixels=max_pixels,
            model_id=model_id,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_id,
            "family": self.adapter.family,
            "press": None if self.press is None else self.press.name,
            "prefix_reuse": self.prefix_reuse,
            "max_new_tokens": self.max_new_tokens,
        }

    # -- encoding ----------------------------------------------------------------------------------------------
    def encode(self, prompt: Prompt) -> EncodedPrompt:
        """Chat-template the interleaved prompt, expand the image placeholders, compute positions."""
        from PIL import Image

        torch = self._torch
        content: list[dict[str, str]] = []
        images, keys = [], []
        for part in prompt.parts:
            if isinstance(part, PromptImage):
                content.append({"type": "image"})
                raw = Path(part.path).read_bytes()
                keys.append(hashlib.sha1(raw).hexdigest())
                with Image.open(part.path) as img:
                    images.append(img.convert("RGB"))
            else:
                content.append({"type": "text", "text": part})
        if not images:
            raise ValueError("the prompt has no image")
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        inputs = self.adapter.build_inputs(
            ids, tokenizer=self.tokenizer, images=images, image_processor=self.image_processor
        )
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        input_ids = inputs["input_ids"]  # (1, N)
        n = int(input_ids.shape[1])
        extra = {k: v for k, v in inputs.items() if k != "input_ids"}
        spans = [s for s in self.adapter.spans(input_ids[0], **extra).spans if s.modality == "image"]
        if len(spans) != len(images):
            raise ValueError(f"found {len(spans)} image spans for {len(images)} images")
        signature = input_ids[0].cpu().numpy().astype(np.int64).copy()
        for span, key in zip(spans, keys):
            signature[span.start : span.end] = -(1 + self._image_ids.setdefault(key, len(self._image_ids)))
        if self.mrope:
            rope, delta = self.adapter.inner_model.get_rope_index(
                input_ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
            )  # (3, 1, N), (1, 1)
            text_pos = torch.arange(n, device=self.device).view(1, 1, -1)
            positions = torch.cat([text_pos, rope.to(self.device)], dim=0)  # (4, 1, N)
            rope_delta = int(delta.reshape(-1)[0])
        else:
            positions = torch.arange(n, device=self.device).view(1, -1)  # (1, N)
            rope_delta = 0
        return EncodedPrompt(
            inputs=inputs,
            positions=positions,
            rope_delta=rope_delta,
            signature=signature,
            image_spans=[(s.start, s.end) for s in spans],
            prefix_end=spans[-1].start,
        )

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, prompt: Prompt) -> Answer:
        from transformers import DynamicCache

        from omnipress.cache import cache_kept_bytes, cache_kv_bytes

        torch = self._torch
        start = time.perf_counter()
        enc = self.encode(prompt)
        encode_s = time.perf_counter() - start
        n = enc.length
        context = self.press(self.model) if self.press is not None else contextlib.nullcontext()
        with torch.no_grad(), context:
            t0 = time.perf_counter()
            if self.prefix_reuse:
                base, reused = self._prefix_cache(enc)
                cache = copy.deepcopy(base)
                logits = self._forward(enc, enc.prefix_end, n, cache)
            else:
                cache, reused = DynamicCache(), 0
                logits = self._forward(enc, 0, n, cache)
            prefill_s = time.perf_counter() - t0
            kv_bytes, kept_bytes = cache_kv_bytes(cache), cache_kept_bytes(cache)
            t1 = time.perf_counter()
            new_ids = self._greedy(enc, cache, logits)
            decode_s = time.perf_counter() - t1
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        report = getattr(self.press, "report", None) if self.press is not None else None
        info = {
            "prompt_tokens": n,
            "reused_tokens": reused,
            "prefilled_tokens": n - reused,
            "prefill_s": round(prefill_s, 5),
            "decode_s": round(decode_s, 5),
            "encode_s": round(encode_s, 5),
            "kv_bytes": int(kv_bytes),
            "kv_bytes_kept": int(kept_bytes),
            "kv_bytes_full": self.full_kv_bytes(n),
            "compressed": bool(report is not None and getattr(report, "compressed", False)),
        }
        usage = {"prompt_tokens": n, "completion_tokens": len(new_ids)}
        return Answer(text=text, latency_s=time.perf_counter() - start, usage=usage, info=info)

    def full_kv_bytes(self, n_tokens: int) -> int:
        """Bytes of an uncompressed cache of ``n_tokens`` (keys + values, every layer)."""
        a = self.adapter
        dtype_bytes = next(self.model.parameters()).element_size()
        return int(2 * a.num_layers * a.num_key_value_heads * a.head_dim * n_tokens * dtype_bytes)

    def _forward(self, enc: EncodedPrompt, a: int, b: int, cache) -> Any:
        """Prefill tokens ``[a, b)`` on top of ``cache`` (which holds ``[0, a)``); last-token logits ``(vocab,)``."""
        inputs = enc.inputs
        kwargs: dict[str, Any] = {}
        inside = [j for j, (s, e) in enumerate(enc.image_spans) if a <= s and e <= b]
        if any(s < b and e > a and not (a <= s and e <= b) for s, e in enc.image_spans):
            raise ValueError(f"chunk [{a}, {b}) cuts an image")
        if inside:
            kwargs.update(self._image_inputs(inputs, inside))
        for key in ("mm_token_type_ids",):
            if key in inputs:
                kwargs[key] = inputs[key][:, a:b]
        positions = enc.positions[..., a:b]
        out = self.model(
            input_ids=inputs["input_ids"][:, a:b],
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        return out.logits[0, -1]

    def _image_inputs(self, inputs: dict[str, Any], which: list[int]) -> dict[str, Any]:
        n_images = int(inputs["image_grid_thw"].shape[0]) if "image_grid_thw" in inputs else None
        if n_images is not None:  # Qwen-VL: pixel rows of all images concatenated
            grid = inputs["image_grid_thw"]
            rows = np.concatenate([[0], np.cumsum(grid.prod(-1).cpu().numpy())])
            lo, hi = which[0], which[-1] + 1
            if which != list(range(lo, hi)):
                raise ValueError("images of one chunk must be consecutive")
            return {"pixel_values": inputs["pixel_values"][rows[lo] : rows[hi]], "image_grid_thw": grid[lo:hi]}
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        if len(which) != len(inputs["pixel_values"]):
            raise ValueError(f"{self.adapter.family}: images can only be sent in one chunk")
        return extra

    def _prefix_cache(self, enc: EncodedPrompt) -> tuple[Any, int]:
        """A cache holding the prompt's prefix ``[0, prefix_end)`` and the number of tokens reused from before."""
        from transformers import DynamicCache

        end = enc.prefix_end
        sig = enc.signature[:end]
        prev = self._prefix
        reuse = 0
        if prev is not None:
            reuse = _common_prefix(sig, prev.signature)
            reuse = _snap_out_of_images(reuse, enc.image_spans)
            if prev.compressed and reuse < len(prev.signature):
                reuse = 0  # a compressed cache cannot be cut
        if prev is not None and reuse == len(prev.signature) == end:
            return prev.cache, reuse
        if reuse > 0:
            base = copy.deepcopy(prev.cache)
            if reuse < len(prev.signature):
                _crop(base, reuse)
        else:
            base = DynamicCache()
        if reuse < end:
            self._forward(enc, reuse, end, base)
        from omnipress.cache import RaggedLayer

        compressed = any(isinstance(layer, RaggedLayer) for layer in base.layers)
        self._prefix = _PrefixCache(signature=sig.copy(), cache=base, compressed=compressed)
        return base, reuse

    def _greedy(self, enc: EncodedPrompt, cache, logits) -> list[int]:
        torch = self._torch
        n = enc.length
        new_ids: list[int] = []
        for i in range(self.max_new_tokens):
            token = int(logits.argmax())
            new_ids.append(token)
            if token in self.eos_ids or i == self.max_new_tokens - 1:
                break
            if self.mrope:
                text = torch.full((1, 1, 1), n + i, device=self.device)
                positions = torch.cat([text, text.expand(3, 1, 1) + enc.rope_delta], dim=0)  # (4, 1, 1)
            else:
                positions = torch.full((1, 1), n + i, device=self.device)
            out = self.model(
                input_ids=torch.tensor([[token]], device=self.device),
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[0, -1]
        return new_ids

    def reset(self) -> None:
        """Forget the cached prefix."""
        self._prefix = None

    def close(self) -> None:
        self._prefix = None


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def _snap_out_of_images(length: int, spans: Sequence[tuple[int, int]]) -> int:
    """Move a cut that falls inside an image back to the image's start."""
    for s, e in spans:
        if s < length < e:
            return s
    return length


def _crop(cache, length: int) -> None:
    """Keep the first ``length`` tokens of a dense cache, with compact storage (exact byte accounting)."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys[..., :length, :].clone()  # (batch, kv_heads, length, head_dim)
            layer.values = layer.values[..., :length, :].clone()


def _qwen_processor(adapter, max_pixels: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vc = adapter.vision_config
    factor = vc.patch_size * vc.spatial_merge_size
    if max_pixels < factor**2 * 4:
        raise ValueError(f"max_pixels must be at least {factor**2 * 4}")
    return Qwen2VLImageProcessorPil(
        patch_size=vc.patch_size,
        merge_size=vc.spatial_merge_size,
        temporal_patch_size=vc.temporal_patch_size,
        image_mean=list(adapter.image_mean),
        image_std=list(adapter.image_std),
        size={"shortest_edge": factor**2 * 4, "longest_edge": int(max_pixels)},
    )


__all__ = ["PRESS_NAMES", "EncodedPrompt", "LocalVLMBackend", "make_press"]
