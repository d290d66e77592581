"""What every omnipress adapter shares beyond the `ModelAdapter` contract.

`FamilyAdapter` adds the pieces `omnipress.generation` needs: the modalities a family accepts and `build_inputs`,
which turns a tokenized prompt plus raw media into the model's keyword arguments the way the family's processor
would (placeholder expansion, pixel tensors, grids, feature masks). `transformers` 5.23 cannot build the Qwen-VL,
Qwen2.5-Omni or LLaVA-OneVision processors without torchvision (their `video_processor` slot is type-checked against
a torchvision class), so the adapters do that step themselves from the model config.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from .base import ModelAdapter


class FamilyAdapter(ModelAdapter):
    """Base class of the adapters in this package.

    Subclasses set `modalities` (the media the family accepts, e.g. `("image", "video")`) and implement the
    per-modality hooks used by `build_inputs`.
    """

    modalities: ClassVar[tuple[str, ...]] = ()

    @property
    def inner_model(self) -> nn.Module:
        """The bare `*Model` under a `*ForConditionalGeneration` head (it holds the encoders, `language_model` and,
        for M-RoPE families, `rope_deltas`)."""
        return self.model.model if hasattr(self.model, "lm_head") else self.model

    @property
    def language_model(self) -> nn.Module:
        return self.inner_model.language_model

    @property
    def config(self) -> Any:
        """The config that holds the modality token ids (the thinker config for the full Qwen2.5-Omni)."""
        return self.model.config

    @property
    def generation_model(self) -> nn.Module:
        """The module whose `generate` produces the text (the thinker for the full Qwen2.5-Omni)."""
        return self.model

    def config_token_id(self, *names: str) -> int:
        """The first of the config attributes `names` that is set, as an int."""
        for name in names:
            value = getattr(self.config, name, None)
            if value is not None:
                return int(value)
        raise ValueError(f"{type(self.config).__name__} defines none of {names}")

    def check_modalities(self, requested: Sequence[str]) -> None:
        """Raise a `ValueError` naming the family's modalities if one of `requested` is not among them."""
        unsupported = [m for m in requested if m not in self.modalities]
        if unsupported:
            accepted = ", ".join(self.modalities) if self.modalities else "text only"
            raise ValueError(
                f"{type(self.model).__name__} ({self.family}) does not accept {', '.join(unsupported)} input; "
                f"it accepts: {accepted}"
            )

    def accepts_forward_argument(self, name: str) -> bool:
        """Whether the model's `forward` takes the keyword `name` (e.g. `mm_token_type_ids`, new in 5.x)."""
        return name in inspect.signature(self.generation_model.forward).parameters

    def build_inputs(
        self,
        prompt_ids: Sequence[int],
        *,
        tokenizer: Any = None,
        images: Sequence[Image.Image] = (),
        video: Sequence[Image.Image] | None = None,
        video_timestamps: Sequence[float] | None = None,
        video_size: tuple[int, int] | None = None,
        audio: Sequence[np.ndarray] = (),
        image_processor: Any = None,
        feature_extractor: Any = None,
    ) -> dict[str, torch.Tensor]:
        """Model inputs for one prompt whose media placeholders are still single tokens.

        Parameters
        ----------
        prompt_ids:
            The tokenized chat prompt; each image / video / audio clip appears as the family's single placeholder
            token (e.g. `<|image_pad|>`), as the chat template writes it.
        tokenizer:
            Needed by families that add text per frame (Qwen3-VL timestamps).
        images, video, audio:
            PIL images; one video as PIL frames (with `video_timestamps` in seconds, default one frame per second);
            16 kHz mono float arrays.
        video_size:
            `(height, width)` to resize video frames to; `None` uses the family processor's default sizing.
        image_processor, feature_extractor:
            Override the ones derived from the model config.

        Returns
        -------
        dict
            `input_ids` and `attention_mask` `(1, seq)` with the placeholders expanded, plus the media tensors the
            forward expects.
        """
        requested = [m for m, given in (("image", images), ("video", video), ("audio", audio)) if given]
        self.check_modalities(requested)
        ids = list(prompt_ids)
        extra: dict[str, torch.Tensor] = {}
        if images:
            ids, tensors = self.add_images(ids, list(images), image_processor)
            extra.update(tensors)
        if video:
            frames = list(video)
            times = list(video_timestamps) if video_timestamps is not None else [float(i) for i in range(len(frames))]
            if len(times) != len(frames):
                raise ValueError(f"got {len(frames)} video frames but {len(times)} timestamps")
            ids, tensors = self.add_video(ids, frames, times, video_size, tokenizer)
            extra.update(tensors)
        if audio:
            ids, tensors = self.add_audio(ids, [np.asarray(a, dtype=np.float32) for a in audio], feature_extractor)
            extra.update(tensors)
        for name, token_id in self.modality_token_ids.items():
            if name not in requested and token_id in ids:
                raise ValueError(f"the prompt holds a {name} placeholder (id {token_id}) but no {name} was given")
        input_ids = torch.tensor([ids], dtype=torch.long)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        inputs.update(self.extra_text_inputs(input_ids))
        inputs.update(extra)
        return inputs

    # -- per-family hooks (only the modalities in `modalities` are ever called) --------------------------------
    def add_images(
        self, ids: list[int], images: list[Image.Image], image_processor: Any
    ) -> tuple[list[int], dict[str, torch.Tensor]]:
        raise ValueError(f"{self.family} does not accept images")

    def add_video(
        self,
        ids: list[int],
        frames: list[Image.Image],
        timestamps: list[float],
        size: tuple[int, int] | None,
        tokenizer: Any,
    ) -> tuple[list[int], dict[str, torch.Tensor]]:
        raise ValueError(f"{self.family} does not accept video")

    def add_audio(
        self, ids: list[int], clips: list[np.ndarray], feature_extractor: Any
    ) -> tuple[list[int], dict[str, torch.Tensor]]:
        raise ValueError(f"{self.family} does not accept audio")

    def extra_text_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs derived from the final ids (Qwen-VL's `mm_token_type_ids`)."""
        return {}


def sequence_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """`input_ids` of one sequence as a 1-D tensor; accepts `(seq,)` or `(1, seq)`."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dim() == 2 and input_ids.shape[0] == 1:
        return input_ids[0]
    if input_ids.dim() == 1:
        return input_ids
    raise ValueError(
        f"spans are computed for one sequence: input_ids must be (seq,) or (1, seq), got {tuple(input_ids.shape)}"
    )


def encoder_output_counts(model_inputs: dict[str, Any], modality: str) -> list[int] | None:
    """Tokens per item from pre-computed encoder outputs, or `None` when there are none.

    Inside `generate`, transformers 5.x runs the vision encoders before the prefill and passes their outputs as
    `mm_encoder_outputs={"image": ..., "video": ...}` instead of the pixels and grids; `pooler_output` holds one
    `(tokens, dim)` tensor per item, or a `(items, tokens, dim)` tensor.
    """
    output = (model_inputs.get("mm_encoder_outputs") or {}).get(modality)
    if output is None:
        return None
    pooled = output.pooler_output if hasattr(output, "pooler_output") else output
    if isinstance(pooled, (list, tuple)):
        return [int(item.shape[0]) for item in pooled]
    if pooled.dim() == 3:
        return [int(pooled.shape[1])] * int(pooled.shape[0])
    return [int(pooled.shape[0])]


def expand_placeholders(
    ids: Sequence[int],
    placeholder: int,
    replacements: Sequence[Sequence[int]],
    *,
    modality: str,
    unwrap: tuple[int, int] | None = None,
) -> list[int]:
    """Replace the i-th occurrence of `placeholder` in `ids` by `replacements[i]`.

    `unwrap = (start_id, end_id)` also drops a start/end pair written directly around the placeholder, for
    replacements that bring their own (Qwen3-VL writes `<vision_start>…<vision_end>` per frame).
    Raises `ValueError` when the number of placeholders differs from the number of replacements.
    """
    found = sum(1 for t in ids if t == placeholder)
    if found != len(replacements):
        raise ValueError(
            f"the prompt has {found} {modality} placeholder(s) (id {placeholder}) but {len(replacements)} "
            f"{modality} input(s) were given"
        )
    out: list[int] = []
    pending = iter(replacements)
    ids = list(ids)
    i = 0
    while i < len(ids):
        token = ids[i]
        if token != placeholder:
            out.append(token)
            i += 1
            continue
        replacement = list(next(pending))
        if unwrap is not None and out and out[-1] == unwrap[0] and i + 1 < len(ids) and ids[i + 1] == unwrap[1]:
            out.pop()
            i += 1  # skip the end marker too
        out.extend(replacement)
        i += 1
    return out


def audio_token_count(mel_frames: int) -> int:
    """LLM tokens of one audio clip with `mel_frames` valid mel frames (Whisper-style encoder: stride-2 conv, then
    2x average pool), as in Qwen2-Audio and Qwen2.5-Omni: 25 tokens per second at 100 mel frames per second."""
    after_conv = (mel_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1
