"""Offline references for the streaming tests: one prefill of a whole prompt through the model's own forward."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache

from omnipress.adapters import get_adapter
from omnipress.cache import RaggedLayer
from omnipress.testing import tiny_model, tiny_processor

#: frame sizes the tiny Qwen-VL vision towers take (a multiple of patch_size * merge_size), None: processor default
FRAME_SIZE = {"llava_onevision": None, "qwen2_vl": (56, 56), "qwen2_5_vl": (56, 56), "qwen3_vl": (64, 64)}
STREAM_FAMILIES = tuple(FRAME_SIZE)
_MODELS: dict[str, tuple[Any, Any]] = {}


def model_and_tokenizer(family: str) -> tuple[Any, Any]:
    """A tiny random-weight model of `family` (built once per test session) and its tokenizer."""
    if family not in _MODELS:
        torch.manual_seed(0)
        model = tiny_model(family)
        _MODELS[family] = (model, tiny_processor(family, model))
    return _MODELS[family]


def frames(count: int, seed: int = 0, size: int = 64) -> list[Image.Image]:
    """`count` random RGB frames (a slowly drifting scene, so that consecutive frames are alike)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3)).astype(np.float64)
    out = []
    for _ in range(count):
        base = np.clip(base + rng.normal(0, 12, base.shape), 0, 255)
        out.append(Image.fromarray(base.astype(np.uint8)))
    return out


def offline_inputs(model: Any, tokenizer: Any, question: str, video: list[Image.Image], times: list[float]) -> dict:
    """What the language model receives in one offline forward of the chat turn `[video, question]`:
    `inputs_embeds` `(1, n, hidden)`, `position_ids` (`(3, 1, n)` or `(1, n)`), Qwen3-VL's deepstack inputs."""
    adapter = get_adapter(model)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    inputs = adapter.build_inputs(
        ids, tokenizer=tokenizer, video=video, video_timestamps=times, video_size=FRAME_SIZE[adapter.family]
    )
    captured: dict[str, Any] = {}

    def grab(module, args, kwargs):
        captured.update({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor | list)})
        raise _Stop

    handle = adapter.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    positions = captured.get("position_ids")
    n = captured["inputs_embeds"].shape[1]
    if positions is None:
        positions = torch.arange(n).unsqueeze(0)
    elif positions.dim() == 3 and positions.shape[0] == 4:
        positions = positions[1:]  # the text row only feeds the mask
    out = {"inputs_embeds": captured["inputs_embeds"], "position_ids": positions, "input_ids": inputs["input_ids"]}
    if captured.get("deepstack_visual_embeds") is not None:
        out["visual_pos_masks"] = captured["visual_pos_masks"]
        out["deepstack_visual_embeds"] = captured["deepstack_visual_embeds"]
    return out


class _Stop(Exception):
    pass


def offline_prefill(model: Any, offline: dict, keep: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """One prefill of the kept columns `keep` `(k,)` of an offline prompt: its cache and last-token logits."""
    adapter = get_adapter(model)
    kwargs: dict[str, Any] = {
        "inputs_embeds": offline["inputs_embeds"][:, keep],
        "position_ids": offline["position_ids"][..., keep],
        "attention_mask": torch.ones(1, len(keep), dtype=torch.long),  # no packed-sequence guess from positions
    }
    if "visual_pos_masks" in offline:
        mask = offline["visual_pos_masks"]  # (1, n)
        ordinal = mask[0].long().cumsum(0) - 1  # vision token index of each column
        kept_vision = keep[mask[0, keep]]
        kwargs["visual_pos_masks"] = mask[:, keep]
        kwargs["deepstack_visual_embeds"] = [d[ordinal[kept_vision]] for d in offline["deepstack_visual_embeds"]]
    cache = DynamicCache()
    with torch.no_grad():
        out = adapter.language_model(**kwargs, cache=cache, use_cache=True)
        logits = model.get_output_embeddings()(out.last_hidden_state[0, -1])
    return cache, logits


def stream_state(cache: Any) -> list[tuple]:
    """Every layer's per-segment keys, values and columns, cloned (to compare caches bitwise)."""
    out = []
    for layer in cache.layers:
        assert isinstance(layer, RaggedLayer)
        keys, values = layer.segments()
        out.append(
            (
                [k.clone() for k in keys],
                [v.clone() for v in values],
                [c.clone() for c in layer.head_positions()],
                layer.logical_length,
            )
        )
    return out


def assert_same_state(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for (ka, va, ca, la), (kb, vb, cb, lb) in zip(a, b):
        assert la == lb
        for x, y in zip([*ka, *va, *ca], [*kb, *vb, *cb]):
            assert x.shape == y.shape and torch.equal(x, y)
