"""What every omnipress adapter shares beyond the `ModelAdapter` contract.

`FamilyAdapter` adds:

- per-row spans of a left-padded batch (`batch_spans`): each family describes the media items of a whole batch
  (`media_items`: token groups per image / video / clip, in row order) and the items are handed to the rows by
  counting each row's placeholder tokens, the way the models scatter them;
- the encoders and their blocks (`vision_encoder`, `vision_blocks`, `audio_encoder`, `audio_blocks`), the modules
  that produce the features entering the LLM (`feature_modules`) and a hook on those features
  (`register_feature_hook`);
- positions of a pruned token set (`pruned_position_ids`);
- what `omnipress.generation` needs: the modalities a family accepts and `build_inputs`, which turns a tokenized
  prompt plus raw media into the model's keyword arguments the way the family's processor would (placeholder
  expansion, pixel tensors, grids, feature masks). `transformers` 5.x cannot build the Qwen-VL, Qwen2.5-Omni or
  LLaVA-OneVision processors without torchvision (their `video_processor` slot is type-checked against a torchvision
  class), so the adapters do that step themselves from the model config.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..spans import ModalitySpans, Span, left_padding, spans_from_placeholders
from .base import ModelAdapter
from .features import FeatureFn, HookHandle, register_scatter_hook
from .positions import PrunedPositions, keep_indices


@dataclass
class MediaItems:
    """The media items of one modality in a whole batch, in row order (row 0's items first).

    Attributes
    ----------
    groups:
        For every item, the token count of each of its groups: one group per image or audio clip, one per LLM-side
        frame group for a video.
    source:
        The input the counts come from (e.g. `"image_grid_thw"`), quoted in error messages.
    """

    groups: list[list[int]]
    source: str


class FamilyAdapter(ModelAdapter):
    """Base class of the adapters in this package.

    Subclasses set `modalities` (the media the family accepts, e.g. `("image", "video")`), `media_input_names`,
    implement `media_items` for their modalities, the encoder accessors, `feature_modules` and the per-modality
    hooks used by `build_inputs`.
    """

    modalities: ClassVar[tuple[str, ...]] = ()
    #: per modality, the forward arguments that describe its items (quoted when they are missing)
    media_input_names: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: modalities whose item groups may be split into several runs by other tokens (Omni audio inside video)
    interleaved_modalities: ClassVar[tuple[str, ...]] = ()

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

    # -- spans -------------------------------------------------------------------------------------------------
    def batch_spans(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **model_inputs: Any
    ) -> list[ModalitySpans]:
        """Modality spans of every row of a left-padded batch (see `ModelAdapter.batch_spans`).

        Each modality's items (`media_items`, over the whole batch in row order) go to the rows in order, a row
        taking the next items whose token counts add up to its placeholder count, the way the models scatter the
        features; then each row's placeholders are cut into spans. Works on the inputs a user passes and on those
        `generate` passes to the prefill (`mm_encoder_outputs`, `position_ids`; rows repeated for beams and
        `num_return_sequences`).
        """
        ids = batch_ids(input_ids)  # (batch, seq)
        batch, seq = ids.shape
        padding = left_padding(attention_mask, batch, seq)
        columns = torch.arange(seq, device=ids.device).unsqueeze(0)  # (1, seq)
        valid = columns >= torch.tensor(padding, device=ids.device).unsqueeze(1)  # (batch, seq)
        rows: list[list[Span]] = [[] for _ in range(batch)]
        for modality, token_id in self.modality_token_ids.items():
            placeholders = (ids == token_id) & valid  # (batch, seq)
            counts = placeholders.sum(-1).tolist()
            items = self.media_items(modality, model_inputs)
            if items is None:
                if any(counts):
                    names = self.media_input_names.get(modality, ())
                    given = f"neither {names[0]} nor {names[1]}" if len(names) == 2 else f"none of {', '.join(names)}"
                    raise ValueError(
                        f"input_ids hold {modality} placeholder tokens (id {token_id}) but {given} was given"
                    )
                continue
            ranges = assign_items(counts, [sum(g) for g in items.groups], modality=modality, source=items.source)
            for row, (start, stop) in enumerate(ranges):
                groups = self.row_groups(modality, items, start, stop, row, placeholders[row], model_inputs)
                rows[row] += spans_from_placeholders(
                    placeholders[row],
                    groups,
                    modality,
                    allow_split=modality in self.interleaved_modalities,
                    source=items.source,
                )
        return [ModalitySpans(seq, spans, padding=pad) for spans, pad in zip(rows, padding)]

    def media_items(self, modality: str, model_inputs: dict[str, Any]) -> MediaItems | None:
        """The items of `modality` in the batch's `model_inputs`, or `None` when none are given."""
        return None

    def row_groups(
        self,
        modality: str,
        items: MediaItems,
        start: int,
        stop: int,
        row: int,
        placeholder_mask: torch.Tensor,
        model_inputs: dict[str, Any],
    ) -> list[list[int]]:
        """The groups of items `[start, stop)`, assigned to batch row `row` (whose `(seq,)` placeholder mask is
        given). Families whose group sizes depend on the row's own inputs (Qwen frame groups from the M-RoPE
        positions) override this."""
        return items.groups[start:stop]

    # -- encoders ----------------------------------------------------------------------------------------------
    def no_encoder_error(self, kind: str) -> ValueError:
        return ValueError(f"{self.family} ({type(self.model).__name__}) has no {kind} encoder")

    @property
    def vision_encoder(self) -> nn.Module:
        """The vision transformer (ViT) of the family. Raises `ValueError` for families without one."""
        raise self.no_encoder_error("vision")

    @property
    def vision_blocks(self) -> nn.ModuleList:
        """The transformer blocks of `vision_encoder`, in the order it runs them."""
        raise self.no_encoder_error("vision")

    @property
    def audio_encoder(self) -> nn.Module:
        """The audio encoder of the family. Raises `ValueError` for families without one."""
        raise self.no_encoder_error("audio")

    @property
    def audio_blocks(self) -> nn.ModuleList:
        """The transformer layers of `audio_encoder`, in the order it runs them."""
        raise self.no_encoder_error("audio")

    # -- features entering the LLM -----------------------------------------------------------------------------
    def feature_modules(self) -> dict[str, nn.Module]:
        """Per modality, the module whose output becomes the features written over that modality's placeholder
        embeddings (after the model's own reshaping: Qwen2.5-VL reorders merger rows from window to raster order,
        LLaVA-OneVision packs or pools projector outputs and adds newline rows). Image and video share the module in
        the Qwen and LLaVA-OneVision families. `{}` for text-only families."""
        return {}

    def register_feature_hook(self, modality: str, fn: FeatureFn) -> HookHandle:
        """Call `fn` on the `modality` features where they enter the language model, in a plain forward and inside
        `generate` (whose prefill receives pre-computed `mm_encoder_outputs`).

        `fn(features)` receives a `(tokens, hidden)` tensor: the features of every `modality` item of the call,
        row by row in prompt order, exactly the rows the model writes over the placeholder embeddings (so
        `tokens == sum(spans.count(modality))` over the batch). It returns `None` to keep them or a tensor of the
        same shape that replaces them. Returns a handle whose `remove()` (or `with` block) removes the hook.
        Qwen3-VL's deepstack features (added at early decoder layers) are not passed to `fn`.

        Raises
        ------
        ValueError
            When the family has no `modality` input.
        """
        if modality not in self.modalities:
            accepted = ", ".join(self.modalities) if self.modalities else "text only"
            raise ValueError(f"{self.family} has no {modality} features; it accepts: {accepted}")
        token_id = self.modality_token_ids[modality]
        return register_scatter_hook(
            self.inner_model, self.language_model, token_id, fn, f"{self.family} {modality} features"
        )

    # -- positions ---------------------------------------------------------------------------------------------
    def pruned_position_ids(self, input_ids: torch.Tensor, keep: torch.Tensor, **model_inputs: Any) -> PrunedPositions:
        """Positions the kept tokens of one unpadded prompt had in the unpruned prompt.

        Parameters
        ----------
        input_ids:
            The unpruned prompt, `(seq,)` or `(1, seq)`.
        keep:
            `(seq,)` bool mask or sorted unique indices of the kept tokens.
        model_inputs:
            The prompt's other forward arguments (grids, feature masks; M-RoPE families read them, or take the
            `(3 or 4, 1, seq)` `position_ids` generate passes to the prefill).

        Returns
        -------
        PrunedPositions
            `position_ids` `(1, kept)` for 1-D RoPE (the kept indices), `(4, 1, kept)` for M-RoPE; `rope_delta`.
        """
        ids = sequence_ids(input_ids)
        self.check_unpadded(ids, model_inputs)
        indices = keep_indices(keep, int(ids.shape[0])).to(ids.device)
        return PrunedPositions(indices.unsqueeze(0), 0, int(ids.shape[0]))  # (1, kept)

    @staticmethod
    def check_unpadded(ids: torch.Tensor, model_inputs: dict[str, Any]) -> None:
        mask = model_inputs.get("attention_mask")
        if mask is not None and left_padding(mask, 1, int(ids.shape[0]))[0]:
            raise ValueError("pruned_position_ids takes one unpadded prompt; drop its left padding first")

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
        f"spans are computed for one sequence: input_ids must be (seq,) or (1, seq), got {tuple(input_ids.shape)}; "
        "use batch_spans for a batch"
    )


def batch_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """`input_ids` of a batch as a 2-D `(batch, seq)` tensor; a `(seq,)` tensor is one row."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dim() == 1:
        return input_ids.unsqueeze(0)
    if input_ids.dim() == 2:
        return input_ids
    raise ValueError(f"input_ids must be (batch, seq) or (seq,), got {tuple(input_ids.shape)}")


def assign_items(row_counts: list[int], item_sizes: list[int], *, modality: str, source: str) -> list[tuple[int, int]]:
    """Hand the items of a batch to its rows in order: row `b` gets the next items whose token counts add up to its
    `row_counts[b]` placeholder tokens (how the models scatter the features). Returns `[start, stop)` per row.

    Raises
    ------
    ValueError
        When a row's placeholders are not a whole number of the next items, or items are left over.
    """
    if len(row_counts) == 1 and row_counts[0] != sum(item_sizes):
        raise ValueError(
            f"input_ids hold {row_counts[0]} {modality} placeholder tokens but {source} require {sum(item_sizes)} "
            f"(per item: {item_sizes}); the prompt and the {modality} inputs disagree (for a batch, pass all its rows "
            "to batch_spans)"
        )
    ranges: list[tuple[int, int]] = []
    cursor = 0
    for row, need in enumerate(row_counts):
        start, total = cursor, 0
        while total < need and cursor < len(item_sizes):
            total += item_sizes[cursor]
            cursor += 1
        if total != need:
            raise ValueError(
                f"row {row} of input_ids holds {need} {modality} placeholder tokens, but the next {modality} items of "
                f"{source} have {item_sizes[start:cursor]} tokens (items go to the rows in order; all items: "
                f"{item_sizes})"
            )
        ranges.append((start, cursor))
    if cursor != len(item_sizes):
        raise ValueError(
            f"{source} hold {len(item_sizes) - cursor} more {modality} item(s) than the placeholders of input_ids use "
            f"(unused item sizes: {item_sizes[cursor:]})"
        )
    return ranges


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
