"""Where image, video-frame and audio tokens sit in a prompt.

`ModalitySpans` is computed once per input by the model's adapter (see `omnipress.adapters`) from `input_ids`, the
vision grids and the audio feature lengths. Methods never hard-code token offsets: they ask the spans.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODALITIES = ("image", "video", "audio")
SCOPES = ("all", "vision", "image", "video", "audio")


@dataclass(frozen=True)
class Span:
    """One contiguous run of modality tokens, `[start, end)` in sequence positions.

    `item` is the index of the image / video / audio clip it belongs to (in prompt order, per modality); `frame` is
    the temporal index inside a video (one span per LLM-side frame group), `None` for images and audio.
    """

    modality: str
    start: int
    end: int
    item: int = 0
    frame: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
        if not 0 <= self.start < self.end:
            raise ValueError(f"a span needs 0 <= start < end, got [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class ModalitySpans:
    """All modality spans of one sequence of length `seq_len`.

    `padding` is the number of left-padding columns (a row of a left-padded batch): they are neither text nor media
    and no scope covers them. Text is every non-padding column not covered by a span.
    """

    seq_len: int
    spans: list[Span] = field(default_factory=list)
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.padding <= self.seq_len:
            raise ValueError(f"padding must be in [0, seq_len={self.seq_len}], got {self.padding}")
        self.spans = sorted(self.spans, key=lambda s: s.start)
        for a, b in zip(self.spans, self.spans[1:]):
            if b.start < a.end:
                raise ValueError(f"overlapping spans {a} and {b}")
        if self.spans and self.spans[-1].end > self.seq_len:
            raise ValueError(f"span {self.spans[-1]} runs past the sequence length {self.seq_len}")
        if self.spans and self.spans[0].start < self.padding:
            raise ValueError(f"span {self.spans[0]} starts inside the {self.padding} left-padding columns")

    @property
    def num_valid(self) -> int:
        """Number of non-padding columns (`seq_len - padding`)."""
        return self.seq_len - self.padding

    def of(self, modality: str) -> list[Span]:
        """The spans of one modality, in order."""
        return [s for s in self.spans if s.modality == modality]

    def count(self, modality: str | None = None) -> int:
        """Number of tokens of `modality` (all modality tokens when `None`)."""
        return sum(s.length for s in self.spans if modality is None or s.modality == modality)

    def valid_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean `(seq_len,)` mask of the non-padding columns."""
        out = torch.ones(self.seq_len, dtype=torch.bool, device=device)
        out[: self.padding] = False
        return out

    def mask(self, scope: str = "all", device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean `(seq_len,)` mask of the tokens a method with this `scope` may compress.

        `"all"` is every non-padding token; `"vision"` is image and video tokens; `"image"`, `"video"`, `"audio"` are
        one modality. Padding columns are never included.
        """
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
        if scope == "all":
            return self.valid_mask(device)
        wanted = ("image", "video") if scope == "vision" else (scope,)
        out = torch.zeros(self.seq_len, dtype=torch.bool, device=device)
        for s in self.spans:
            if s.modality in wanted:
                out[s.start : s.end] = True
        return out

    def shifted(self, offset: int, seq_len: int) -> ModalitySpans:
        """The same spans moved by `offset` positions inside a longer sequence of length `seq_len` (the padding
        column count is kept)."""
        return ModalitySpans(
            seq_len,
            [Span(s.modality, s.start + offset, s.end + offset, s.item, s.frame) for s in self.spans],
            padding=self.padding,
        )

    def left_padded(self, padding: int) -> ModalitySpans:
        """These spans after `padding` more left-padding columns: the row of a left-padded batch that holds this
        sequence (`batch_spans(batch)[b] == spans(prompt_b).left_padded(pad_b)`)."""
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        moved = self.shifted(padding, self.seq_len + padding)
        moved.padding = self.padding + padding
        return moved

    def summary(self) -> dict[str, int]:
        """Token counts per modality plus text (padding excluded), e.g. `{"text": 20, "image": 88}`."""
        out = {"text": self.num_valid - self.count()}
        for m in MODALITIES:
            if self.of(m):
                out[m] = self.count(m)
        return out


def left_padding(attention_mask: torch.Tensor | None, batch_size: int, seq_len: int) -> list[int]:
    """Left-padding columns per row of a `(batch_size, seq_len)` batch from its attention mask.

    `None` means no padding. A row's zeros must be a prefix of the row (left padding, `tokenizer.padding_side =
    "left"`, what `generate` needs); a mask of shape `(seq_len,)` is one row.

    Raises
    ------
    ValueError
        For a mask of another shape, or zeros that are not a left prefix (right or inner padding).
    """
    if attention_mask is None:
        return [0] * batch_size
    mask = torch.as_tensor(attention_mask)
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if tuple(mask.shape) != (batch_size, seq_len):
        raise ValueError(
            f"attention_mask must be the 2-D padding mask of the batch, shape ({batch_size}, {seq_len}), "
            f"got {tuple(mask.shape)}"
        )
    mask = mask.bool()
    # a left-padded row is non-decreasing: 0 ... 0 1 ... 1
    left_only = (mask[:, 1:] | ~mask[:, :-1]).all(-1)
    if not bool(left_only.all()):
        rows = (~left_only).nonzero().flatten().tolist()
        raise ValueError(
            f"attention_mask rows {rows} have padding that is not a left prefix; omnipress supports left padding only "
            "(tokenizer.padding_side='left', as generate expects)"
        )
    return (~mask).sum(-1).tolist()


def spans_from_placeholders(
    placeholder_mask: torch.Tensor,
    groups_per_item: list[list[int]],
    modality: str,
    *,
    allow_split: bool = False,
    source: str = "the inputs",
) -> list[Span]:
    """Cut the placeholder positions of one modality into spans, in prompt order.

    The processors expand each image / video / audio clip into a run of identical placeholder ids and the model
    scatters the encoder outputs into them in order; this assigns those positions back to their items.

    Parameters
    ----------
    placeholder_mask:
        Boolean `(seq,)` mask of the positions holding this modality's placeholder id.
    groups_per_item:
        For every item (clip) in prompt order, the token count of each of its groups: one group per image or audio
        clip, one group per LLM-side frame group for a video (its index becomes `Span.frame`).
    modality:
        `"image"`, `"video"` or `"audio"`.
    allow_split:
        If False every group must be one contiguous run (raises otherwise). If True a group may be split into
        several runs by other tokens (audio interleaved with video in Qwen2.5-Omni) and yields one span per run.
    source:
        Where the expected counts come from, quoted in the error message (e.g. `"image_grid_thw"`).

    Raises
    ------
    ValueError
        When the number of placeholders differs from the expected total or a group is not contiguous.
    """
    if placeholder_mask.dim() != 1:
        raise ValueError(f"placeholder_mask must be 1-D (seq,), got shape {tuple(placeholder_mask.shape)}")
    positions = placeholder_mask.nonzero().flatten().tolist()
    expected = [sum(groups) for groups in groups_per_item]
    if len(positions) != sum(expected):
        raise ValueError(
            f"input_ids hold {len(positions)} {modality} placeholder tokens but {source} require {sum(expected)} "
            f"(per item: {expected}); the prompt and the {modality} inputs disagree"
        )
    spans: list[Span] = []
    cursor = 0
    for item, groups in enumerate(groups_per_item):
        for index, size in enumerate(groups):
            group = positions[cursor : cursor + size]
            cursor += size
            frame = index if modality == "video" else None
            runs = _contiguous_runs(group)
            if len(runs) > 1 and not allow_split:
                raise ValueError(
                    f"{modality} item {item}"
                    + (f" frame group {index}" if frame is not None else "")
                    + f" should be one contiguous run of {size} tokens but is split into {len(runs)} runs "
                    f"starting at {[r[0] for r in runs]}"
                )
            spans.extend(Span(modality, start, end, item, frame) for start, end in runs)
    return spans


def _contiguous_runs(positions: list[int]) -> list[tuple[int, int]]:
    """`[start, end)` of each maximal run of consecutive integers in a sorted list."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs
