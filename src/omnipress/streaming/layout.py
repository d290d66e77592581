"""Where a video stream sits in the language model's sequence, per model family, and at which positions.

A stream is the chat prompt of one user turn holding one video, cut at the video::

    prefix  = <system/user turn up to the video>            prefilled once
    blocks  = frame groups, appended as they arrive          (one per frame; one per temporal patch for Qwen-VL)
    suffix  = <end of the video><question><assistant turn>   prefilled at ask() time, then removed

Every token gets the cache column and the position it has in the offline prompt with the same frames (the prompt
`omnipress.generation.build_inputs(model, processor, text=question, video=frames)` builds), so that appending frames
one by one gives the cache of one offline prefill. A token pruner keeps a subset of each block: the kept tokens keep
their columns and positions (the rule of `adapter.pruned_position_ids`), so positions are never compacted.

Position rules (transformers 5.24, checked against the models' own `get_rope_index` in the tests):

- LLaVA-OneVision (1-D RoPE): position = column. A block is one frame of `ceil(p/2)^2` pooled tokens; the video's
  closing newline token (the model's `image_newline` feature) opens the suffix.
- Qwen2-VL / Qwen2.5-VL (M-RoPE, one video block of `T` temporal patches): the video starts at the running text
  position `s`; patch `t` has temporal position `s + int(t * interval)` (interval 1 for Qwen2-VL;
  `tokens_per_second * seconds_per_patch` for Qwen2.5-VL, from the first patch's frame spacing or `frame_interval`)
  and height/width positions `s + row`, `s + col`. Text after the video continues at `s + max(rows, cols)`.
- Qwen3-VL (M-RoPE, interleaved): each temporal patch is its own block `<t seconds><vision_start> tokens
  <vision_end>`; the patch's tokens sit at `(s, s + row, s + col)` and the running position then advances by
  `max(rows, cols)`.

After the suffix, generated tokens continue at the largest position so far plus one (the model's `rope_deltas`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image

from ..adapters import FamilyAdapter

QUESTION = "\x00omnipress-question\x00"  # stands for the question while the chat template is split


@dataclass
class Cursor:
    """The running layout of the sequence.

    Attributes
    ----------
    column:
        Next token index in the unpruned sequence (the next cache column).
    rope:
        Next text position (M-RoPE families' running position; equals `column` for 1-D RoPE).
    top:
        Largest position given so far (-1: none).
    blocks:
        Frame blocks laid out so far.
    video_start:
        Running position where the video began (Qwen2-VL / Qwen2.5-VL), -1 before the first block.
    grid:
        `(rows, cols)` of the last block's token grid.
    """

    column: int = 0
    rope: int = 0
    top: int = -1
    blocks: int = 0
    video_start: int = -1
    grid: tuple[int, int] = (0, 0)


@dataclass
class EncodedBlock:
    """One block of frames after the model's vision path (before any pruning).

    Attributes
    ----------
    ids:
        The block's unpruned token ids: video placeholders, plus Qwen3-VL's per-patch timestamp text.
    vision:
        `(start, end)` of the vision tokens inside `ids`.
    features:
        `(tokens, hidden)` the vision features that replace the placeholders.
    grid:
        `(rows, cols)` of the block's LLM token grid (one frame or temporal patch).
    times:
        Timestamps (seconds) of the block's frames.
    deepstack:
        Qwen3-VL: `(tokens, hidden)` features added at early decoder layers, one per deepstack layer.
    """

    ids: list[int]
    vision: tuple[int, int]
    features: torch.Tensor
    grid: tuple[int, int]
    times: list[float]
    deepstack: list[torch.Tensor] | None = None

    @property
    def num_vision(self) -> int:
        return self.vision[1] - self.vision[0]


@dataclass
class Placed:
    """Positions `(rows, n)` and columns `(n,)` of `n` tokens laid out by a `StreamLayout`."""

    positions: torch.Tensor
    columns: torch.Tensor

    def take(self, index: torch.Tensor) -> Placed:
        return Placed(self.positions[:, index], self.columns[index])


@dataclass
class StreamLayout(ABC):
    """A family's stream layout (module docstring). Build it with `layout_for(adapter, ...)`."""

    adapter: FamilyAdapter
    tokenizer: Any
    frame_size: tuple[int, int] | None = None
    frame_interval: float | None = None
    newline: torch.Tensor | None = field(default=None, repr=False)

    families: ClassVar[tuple[str, ...]] = ()
    rope_rows: ClassVar[int] = 1  # 3 for M-RoPE

    # -- geometry ----------------------------------------------------------------------------------------------
    @property
    def frames_per_block(self) -> int:
        return 1

    @property
    def video_token_id(self) -> int:
        return self.adapter.modality_token_ids["video"]

    @property
    def device(self) -> torch.device:
        return next(self.adapter.model.parameters()).device

    # -- prompt ------------------------------------------------------------------------------------------------
    def chat_ids(self, question: str, system: str | None) -> list[int]:
        """The tokenized chat turn `[video, question]` (after an optional system message), ready to generate."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]})
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def split(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """`(prefix, suffix)`: the chat turn's tokens before and after the video placeholder."""
        where = [i for i, t in enumerate(ids) if t == self.video_token_id]
        if len(where) != 1:
            raise ValueError(f"the chat template wrote {len(where)} video placeholders; expected one")
        return ids[: where[0]], ids[where[0] + 1 :]

    def question_span(self, suffix: list[int], question: str) -> tuple[int, int]:
        """`(start, end)` of the question's own tokens inside `suffix` (the whole suffix when not found)."""
        own = list(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        for start in range(len(suffix) - len(own), -1, -1):
            if own and suffix[start : start + len(own)] == own:
                return start, start + len(own)
        return 0, len(suffix)

    # -- vision ------------------------------------------------------------------------------------------------
    def encode(self, frames: list[Image.Image], times: list[float]) -> list[EncodedBlock]:
        """Blocks of `frames` (a whole number of blocks) through the model's own vision path, in one call."""
        inputs = self.adapter.build_inputs(
            [self.video_token_id],
            tokenizer=self.tokenizer,
            video=frames,
            video_timestamps=times,
            video_size=self.frame_size,
        )
        return self._blocks(inputs, times)

    @abstractmethod
    def _blocks(self, inputs: dict[str, torch.Tensor], times: list[float]) -> list[EncodedBlock]:
        """Run the vision path on `build_inputs` tensors of `len(times)` frames and cut them into blocks."""

    # -- positions ---------------------------------------------------------------------------------------------
    def text(self, cursor: Cursor, n: int) -> Placed:
        """Lay out `n` text tokens at the cursor."""
        columns = torch.arange(cursor.column, cursor.column + n)
        positions = (torch.arange(n) + cursor.rope).expand(self.rope_rows, n)
        cursor.column += n
        cursor.rope += n
        if n:
            cursor.top = max(cursor.top, cursor.rope - 1)
        return Placed(positions.clone(), columns)

    @abstractmethod
    def block(self, cursor: Cursor, block: EncodedBlock) -> Placed:
        """Lay out every (unpruned) token of the next block."""

    def close(self, cursor: Cursor) -> tuple[Placed, torch.Tensor | None]:
        """Lay out what ends the video before the suffix text: `(placed, embeddings (k, hidden) or None)`."""
        return Placed(torch.zeros(self.rope_rows, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)), None

    def generated(self, cursor: Cursor, offset: int) -> Placed:
        """Position `(rows, 1)` and column of the generated token `offset` after everything laid out: M-RoPE
        families continue at the largest position plus one (the model's `rope_deltas`), 1-D RoPE at the column."""
        column = cursor.column + offset
        position = column if self.rope_rows == 1 else cursor.top + 1 + offset
        return Placed(torch.full((self.rope_rows, 1), position), torch.tensor([column]))

    def snapshot(self, cursor: Cursor) -> Cursor:
        return copy.copy(cursor)

    def vision_grid(self, grid_thw: torch.Tensor) -> tuple[int, int]:
        merge = int(self.adapter.vision_config.spatial_merge_size)
        _, h, w = (int(v) for v in grid_thw)
        return h // merge, w // merge


class LlavaOnevisionLayout(StreamLayout):
    """LLaVA-OneVision: one frame per block, 1-D RoPE."""

    families = ("llava_onevision",)

    def _blocks(self, inputs: dict[str, torch.Tensor], times: list[float]) -> list[EncodedBlock]:
        model = self.adapter.inner_model
        pixels = inputs["pixel_values_videos"].to(self.device, model.dtype)  # (1, frames, 3, H, W)
        pooled = model.get_video_features(pixel_values_videos=pixels).pooler_output  # (1, frames*P + 1, hidden)
        per_frame = self.adapter.tokens_per_video_frame
        side = round(per_frame**0.5)
        self.newline = pooled[0, -1:].detach()  # the video's closing newline feature (1, hidden)
        features = pooled[0, :-1].view(len(times), per_frame, -1)
        return [
            EncodedBlock([self.video_token_id] * per_frame, (0, per_frame), feats, (side, side), [t])
            for feats, t in zip(features, times)
        ]

    def block(self, cursor: Cursor, block: EncodedBlock) -> Placed:
        cursor.blocks += 1
        return self.text(cursor, len(block.ids))

    def close(self, cursor: Cursor) -> tuple[Placed, torch.Tensor | None]:
        if cursor.blocks == 0 or self.newline is None:
            return super().close(cursor)
        return self.text(cursor, 1), self.newline


class QwenVideoLayout(StreamLayout):
    """Qwen2-VL and Qwen2.5-VL: one video of temporal patches (`temporal_patch_size` frames per block). The prefix
    ends with `<vision_start>` and the suffix starts with `<vision_end>`."""

    families = ("qwen2_vl", "qwen2_5_vl")
    rope_rows = 3

    @property
    def frames_per_block(self) -> int:
        return int(self.adapter.vision_config.temporal_patch_size)

    def _blocks(self, inputs: dict[str, torch.Tensor], times: list[float]) -> list[EncodedBlock]:
        model = self.adapter.inner_model
        grid = inputs["video_grid_thw"]  # (1, 3): (patches, h, w)
        out = model.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"].to(self.device),
            video_grid_thw=grid.to(self.device),
        )
        features = out.pooler_output[0]  # (patches * tokens, hidden)
        rows, cols = self.vision_grid(grid[0])
        per = rows * cols
        step = self.frames_per_block
        deep = getattr(out, "deepstack_features", None)
        blocks = []
        for k in range(int(grid[0, 0])):
            part = slice(k * per, (k + 1) * per)
            blocks.append(
                EncodedBlock(
                    [self.video_token_id] * per,
                    (0, per),
                    features[part],
                    (rows, cols),
                    times[k * step : (k + 1) * step],
                    [d[0][part] for d in deep] if deep else None,
                )
            )
        if self.frame_interval is None and len(times) > 1:
            self.frame_interval = float(times[1] - times[0])  # fixes the Qwen2.5-VL temporal spacing
        return blocks

    def temporal_interval(self) -> torch.Tensor | float:
        """Temporal position step per patch: 1 (Qwen2-VL), tokens_per_second * seconds per patch (Qwen2.5-VL)."""
        if self.adapter.family != "qwen2_5_vl":
            return 1.0
        per_second = self.adapter.vision_config.tokens_per_second
        spacing = self.frame_interval if self.frame_interval is not None else 1.0
        seconds = torch.tensor(self.frames_per_block * spacing, dtype=torch.float32)  # as build_inputs stores it
        return per_second * seconds

    def block(self, cursor: Cursor, block: EncodedBlock) -> Placed:
        if cursor.video_start < 0:
            cursor.video_start = cursor.rope
        start = cursor.video_start
        rows, cols = block.grid
        temporal = int((torch.arange(cursor.blocks, cursor.blocks + 1) * self.temporal_interval()).long()[0])
        placed = _grid_positions(start + temporal, start, rows, cols, cursor.column)
        cursor.column += rows * cols
        cursor.top = max(cursor.top, int(placed.positions.max()))
        cursor.blocks += 1
        cursor.grid = (rows, cols)
        return placed

    def close(self, cursor: Cursor) -> tuple[Placed, torch.Tensor | None]:
        if cursor.blocks:
            rows, cols = cursor.grid
            cursor.rope = cursor.video_start + max(rows, cols)
        return super().close(cursor)


class Qwen3VideoLayout(QwenVideoLayout):
    """Qwen3-VL: each temporal patch is its own `<t seconds><vision_start> ... <vision_end>` block."""

    families = ("qwen3_vl",)

    def split(self, ids: list[int]) -> tuple[list[int], list[int]]:
        prefix, suffix = StreamLayout.split(self, ids)
        # the per-patch blocks bring their own <vision_start>/<vision_end>: drop the template's pair
        return prefix[:-1], suffix[1:]

    def _blocks(self, inputs: dict[str, torch.Tensor], times: list[float]) -> list[EncodedBlock]:
        blocks = super()._blocks(inputs, times)
        ids = inputs["input_ids"][0].tolist()  # `<t seconds><vision_start> pads <vision_end>` per patch
        ends = [i + 1 for i, t in enumerate(ids) if t == self.adapter.config_token_id("vision_end_token_id")]
        for block, start, end in zip(blocks, [0, *ends[:-1]], ends):
            block.ids = ids[start:end]
            first = block.ids.index(self.video_token_id)
            block.vision = (first, first + block.num_vision)
        return blocks

    def block(self, cursor: Cursor, block: EncodedBlock) -> Placed:
        v0, v1 = block.vision
        head = self.text(cursor, v0)
        rows, cols = block.grid
        start = cursor.rope
        vision = _grid_positions(start, start, rows, cols, cursor.column)
        cursor.column += v1 - v0
        cursor.rope += max(rows, cols)
        cursor.top = max(cursor.top, int(vision.positions.max()))
        tail = self.text(cursor, len(block.ids) - v1)
        cursor.blocks += 1
        cursor.grid = (rows, cols)
        return Placed(
            torch.cat([head.positions, vision.positions, tail.positions], dim=1),
            torch.cat([head.columns, vision.columns, tail.columns]),
        )

    def close(self, cursor: Cursor) -> tuple[Placed, torch.Tensor | None]:
        return StreamLayout.close(self, cursor)


def _grid_positions(temporal: int, start: int, rows: int, cols: int, column: int) -> Placed:
    """M-RoPE positions `(3, rows*cols)` of one patch grid (raster order) and its columns."""
    r = torch.arange(rows).repeat_interleave(cols) + start
    c = torch.arange(cols).repeat(rows) + start
    t = torch.full((rows * cols,), temporal)
    return Placed(torch.stack([t, r, c]), torch.arange(column, column + rows * cols))


LAYOUTS: tuple[type[StreamLayout], ...] = (LlavaOnevisionLayout, QwenVideoLayout, Qwen3VideoLayout)


def layout_for(adapter: FamilyAdapter, tokenizer: Any, **knobs: Any) -> StreamLayout:
    """The stream layout of `adapter`'s family.

    Raises
    ------
    ValueError
        For families without a stream layout (the message lists the supported ones).
    """
    for cls in LAYOUTS:
        if adapter.family in cls.families:
            return cls(adapter, tokenizer, **knobs)
    supported = ", ".join(f for cls in LAYOUTS for f in cls.families)
    raise ValueError(f"streaming video supports {supported}; {type(adapter.model).__name__} is {adapter.family}")
