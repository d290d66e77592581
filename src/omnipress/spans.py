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
    """All modality spans of one sequence of length `seq_len` (text is everything not covered by a span)."""

    seq_len: int
    spans: list[Span] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spans = sorted(self.spans, key=lambda s: s.start)
        for a, b in zip(self.spans, self.spans[1:]):
            if b.start < a.end:
                raise ValueError(f"overlapping spans {a} and {b}")
        if self.spans and self.spans[-1].end > self.seq_len:
            raise ValueError(f"span {self.spans[-1]} runs past the sequence length {self.seq_len}")

    def of(self, modality: str) -> list[Span]:
        """The spans of one modality, in order."""
        return [s for s in self.spans if s.modality == modality]

    def count(self, modality: str | None = None) -> int:
        """Number of tokens of `modality` (all modality tokens when `None`)."""
        return sum(s.length for s in self.spans if modality is None or s.modality == modality)

    def mask(self, scope: str = "all", device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean `(seq_len,)` mask of the tokens a method with this `scope` may compress.

        `"all"` is every token; `"vision"` is image and video tokens; `"image"`, `"video"`, `"audio"` are one modality.
        """
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
        if scope == "all":
            return torch.ones(self.seq_len, dtype=torch.bool, device=device)
        wanted = ("image", "video") if scope == "vision" else (scope,)
        out = torch.zeros(self.seq_len, dtype=torch.bool, device=device)
        for s in self.spans:
            if s.modality in wanted:
                out[s.start : s.end] = True
        return out

    def shifted(self, offset: int, seq_len: int) -> ModalitySpans:
        """The same spans moved by `offset` positions inside a longer sequence of length `seq_len`."""
        return ModalitySpans(
            seq_len, [Span(s.modality, s.start + offset, s.end + offset, s.item, s.frame) for s in self.spans]
        )

    def summary(self) -> dict[str, int]:
        """Token counts per modality plus text, e.g. `{"text": 20, "image": 88}`."""
        out = {"text": self.seq_len - self.count()}
        for m in MODALITIES:
            if self.of(m):
                out[m] = self.count(m)
        return out
