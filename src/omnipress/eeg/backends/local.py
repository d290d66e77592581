"""A local ``transformers`` VLM as a backend, with omnipress KV compression and prompt-prefix reuse.

Supported models: the families omnipress has adapters for that take images (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
LLaVA-1.5, LLaVA-OneVision). The prompt's text and images are interleaved with the tokenizer's chat template
(one image placeholder per image, in order) and expanded by the family adapter, so no torchvision-backed processor
is needed.

Everything runs through omnipress's public API: a `omnipress.StreamingSession` builds the prompt's inputs
(`session.prompt`), prefills it, reuses prefixes and decodes (`session.generate`).

Prefix reuse (``prefix_reuse=True``, Qwen-VL families): the prefix (every token before the test image: instructions
and reference images) stays cached after each query; the next query reuses its longest common prefix with it (tokens
and image contents both equal; a cut never falls inside an image) and prefills only the rest, with positions of the
whole prompt, so the result equals a single prefill. Queries of one patient share their non-seizure references, so
with ``order="patient_first"`` or static seizure references most of the prompt is reused; with the paper's order the
shared part is the instruction text.

Compression (``press=...``, e.g. ``MixKV(SnapKV(budget=256, scope="image"))``): without prefix reuse the press
compresses the whole prompt at prefill, with the final instructions as its observation window. With prefix reuse
the press compresses each newly prefilled part of the prefix (observation window: the end of that part; the budget
counts per part) and the suffix is appended uncompressed. A compressed prefix is reused like any other: it is cut
at the common prefix by cache column, and only the rest is prefilled (and compressed) again.

Decoding is greedy (temperature 0, as in RAICL) with positions that continue from the original prompt, so
compression never shifts positions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    prompt: Any  # omnipress.streaming.PromptInputs: inputs, spans, positions, signature
    image_spans: list[tuple[int, int]]
    prefix_end: int  # tokens before the last (test) image

    @property
    def inputs(self) -> dict[str, Any]:
        return self.prompt.inputs

    @property
    def length(self) -> int:
        return int(self.prompt.length)


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
        import omnipress as op

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.adapter = op.get_adapter(model)
        if "image" not in self.adapter.modalities:
            raise ValueError(f"{type(model).__name__} ({self.adapter.family}) does not take images")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; one that writes image placeholders is needed")
        if prefix_reuse and self.adapter.family not in QWEN_FAMILIES:
            raise ValueError(
                f"prefix reuse supports the Qwen-VL families {QWEN_FAMILIES}, not {self.adapter.family}; "
                "pass prefix_reuse=False"
            )
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if max_pixels is not None and self.adapter.family not in QWEN_FAMILIES:
            raise ValueError("max_pixels applies to the Qwen-VL image processor only")
        self.press = press
        self.prefix_reuse = bool(prefix_reuse)
        self.max_new_tokens = int(max_new_tokens)
        self.image_processor = image_processor
        self.max_pixels = max_pixels
        self.model_id = model_id or type(model).__name__
        self.session = op.StreamingSession(model, tokenizer, methods=[press] if press is not None else [])

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
        """Chat-template the interleaved prompt and expand its image placeholders (`StreamingSession.prompt`)."""
        from PIL import Image

        content: list[Any] = []
        for part in prompt.parts:
            if isinstance(part, PromptImage):
                with Image.open(part.path) as img:
                    content.append(img.convert("RGB"))
            else:
                content.append(part)
        n_images = sum(isinstance(part, PromptImage) for part in prompt.parts)
        if not n_images:
            raise ValueError("the prompt has no image")
        encoded = self.session.prompt(content, image_processor=self.image_processor, max_pixels=self.max_pixels)
        spans = encoded.spans.of("image")
        if len(spans) != n_images:
            raise ValueError(f"found {len(spans)} image spans for {n_images} images")
        return EncodedPrompt(prompt=encoded, image_spans=[(s.start, s.end) for s in spans], prefix_end=spans[-1].start)

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, prompt: Prompt) -> Answer:
        start = time.perf_counter()
        enc = self.encode(prompt)
        encode_s = time.perf_counter() - start
        n = enc.length
        prefix_end = enc.prefix_end if self.prefix_reuse else None
        answer = self.session.generate(enc.prompt, prefix_end=prefix_end, max_new_tokens=self.max_new_tokens)
        report = answer.report
        info = {
            "prompt_tokens": n,
            "reused_tokens": report.reused_tokens,
            "prefilled_tokens": report.prefilled_tokens,
            "prefill_s": round(report.prefill_s, 5),
            "decode_s": round(report.decode_s, 5),
            "encode_s": round(encode_s, 5),
            "kv_bytes": int(report.kv_bytes),
            "kv_bytes_kept": int(report.kv_bytes_kept),
            "kv_bytes_full": self.full_kv_bytes(n),
            "compressed": bool(report.compressed),
        }
        usage = {"prompt_tokens": n, "completion_tokens": len(answer.token_ids)}
        return Answer(text=answer.text, latency_s=time.perf_counter() - start, usage=usage, info=info)

    def full_kv_bytes(self, n_tokens: int) -> int:
        """Bytes of an uncompressed cache of ``n_tokens`` (keys + values, every layer)."""
        a = self.adapter
        dtype_bytes = next(self.model.parameters()).element_size()
        return int(2 * a.num_layers * a.num_key_value_heads * a.head_dim * n_tokens * dtype_bytes)

    def reset(self) -> None:
        """Forget the cached prefix."""
        self.session.reset()

    def close(self) -> None:
        self.session.reset()


__all__ = ["PRESS_NAMES", "EncodedPrompt", "LocalVLMBackend", "make_press"]
