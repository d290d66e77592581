"""Hooks on the point where encoder features enter the language model.

In every decoder-only family of omnipress the forward of the inner `*Model` embeds `input_ids`, runs the encoders (or
takes `mm_encoder_outputs`, which `generate` computes before the prefill in transformers 5.x) and writes each
modality's features over that modality's placeholder rows with `inputs_embeds.masked_scatter(mask, features)`; then
it calls the language model with `inputs_embeds`. `register_scatter_hook` sees exactly those rows: a forward
pre-hook on the inner model records `input_ids` of a call that carries media, and a forward pre-hook on the language
model reads the placeholder rows of `inputs_embeds`, passes them to the user function and writes its replacement
back. Both are plain `torch` hooks (no patching); decode steps, which carry no media, cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

FeatureFn = Callable[[torch.Tensor], "torch.Tensor | None"]

#: forward arguments that bring media features into a call of the inner model
MEDIA_INPUTS = ("pixel_values", "pixel_values_videos", "input_features", "mm_encoder_outputs")


class HookHandle:
    """Removes a group of `torch` hooks at once; `remove()` like `torch.utils.hooks.RemovableHandle`, and usable as
    a context manager (`with adapter.register_feature_hook("image", fn): ...`)."""

    def __init__(self, handles: list[RemovableHandle]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def replace_features(features: torch.Tensor, fn: FeatureFn, what: str) -> torch.Tensor | None:
    """`fn(features)`, checked to be `None` or a tensor of the same shape (cast to the features' dtype/device)."""
    out = fn(features)
    if out is None:
        return None
    if not isinstance(out, torch.Tensor) or out.shape != features.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"a feature hook on {what} must return None or a tensor of shape {tuple(features.shape)}, got {got}"
        )
    return out.to(device=features.device, dtype=features.dtype)


def register_scatter_hook(
    inner_model: nn.Module, language_model: nn.Module, token_id: int, fn: FeatureFn, what: str
) -> HookHandle:
    """Call `fn` on the rows of the language model's `inputs_embeds` that hold placeholder `token_id`.

    `fn` receives a `(tokens, hidden)` tensor: the features of every item of the call in row-major order (row 0's
    items first), exactly what the model scattered; it returns `None` (keep) or a replacement of the same shape.
    """
    pending: dict[str, torch.Tensor | None] = {"input_ids": None}

    def record(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        carries_media = any(kwargs.get(name) is not None for name in MEDIA_INPUTS)
        pending["input_ids"] = input_ids if carries_media and isinstance(input_ids, torch.Tensor) else None

    def rewrite(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict] | None:
        input_ids, pending["input_ids"] = pending["input_ids"], None
        embeds = kwargs.get("inputs_embeds")
        if input_ids is None or embeds is None or embeds.shape[:2] != input_ids.shape:
            return None
        mask = (input_ids == token_id).to(embeds.device)  # (batch, seq)
        if not bool(mask.any()):
            return None
        replacement = replace_features(embeds[mask], fn, what)  # (tokens, hidden)
        if replacement is None:
            return None
        kwargs["inputs_embeds"] = embeds.masked_scatter(mask.unsqueeze(-1), replacement)
        return args, kwargs

    return HookHandle(
        [
            inner_model.register_forward_pre_hook(record, with_kwargs=True),
            language_model.register_forward_pre_hook(rewrite, with_kwargs=True),
        ]
    )


def register_output_hook(module: nn.Module, fn: FeatureFn, what: str) -> HookHandle:
    """Call `fn` on the `last_hidden_state` of `module`'s output (an encoder's states, in its own layout)."""

    def rewrite(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        states = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        replacement = replace_features(states, fn, what)
        if replacement is None:
            return None
        if hasattr(output, "last_hidden_state"):
            output.last_hidden_state = replacement
            return output
        return (replacement, *output[1:])

    return HookHandle([module.register_forward_hook(rewrite)])
