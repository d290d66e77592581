"""The session's decode loop: greedy by default, sampling with `generate`'s own knobs.

A streaming cache is appended to and cut back by the session itself, so answers are decoded here rather than by
`model.generate` (which would recompute the media of the whole prompt). The usual generation keywords are taken
(`do_sample`, `temperature`, `top_k`, `top_p`, `repetition_penalty`, `eos_token_id`, plus a `torch.Generator` for
reproducible sampling) and turned into transformers' own logits processors; greedy decoding picks the arg-max, as
`generate(do_sample=False)` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

SUPPORTED = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "eos_token_id", "generator")


@dataclass
class Sampling:
    """Decoding settings (see module docstring)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    eos_token_id: int | list[int] | None = None
    generator: torch.Generator | None = None

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> Sampling:
        unknown = sorted(set(kwargs) - set(SUPPORTED))
        if unknown:
            raise TypeError(f"unsupported generation argument(s) {unknown}; the session takes {list(SUPPORTED)}")
        return cls(**kwargs)

    def processors(self) -> Any:
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        out = LogitsProcessorList()
        if self.repetition_penalty not in (None, 1.0):
            out.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.do_sample:
            if self.temperature != 1.0:
                out.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                out.append(TopKLogitsWarper(self.top_k))
            if self.top_p not in (None, 1.0):
                out.append(TopPLogitsWarper(self.top_p))
        return out


def decode(
    first_logits: torch.Tensor,
    step: Callable[[int, int], torch.Tensor],
    *,
    max_new_tokens: int,
    eos: Iterable[int],
    sampling: Sampling,
) -> list[int]:
    """Generate up to `max_new_tokens` tokens.

    Parameters
    ----------
    first_logits:
        `(vocab,)` logits of the token after the prompt.
    step:
        `step(token, offset) -> (vocab,)` feeds the generated `token` (the `offset`-th, from 0) and returns the next
        logits.
    eos:
        Token ids that end the answer (the eos token is kept in the output, as `generate` does).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    stop = set(eos)
    if sampling.eos_token_id is not None:
        ids = sampling.eos_token_id
        stop = {ids} if isinstance(ids, int) else set(ids)
    processors = sampling.processors()
    tokens: list[int] = []
    logits = first_logits
    for i in range(max_new_tokens):
        scores = logits.float().unsqueeze(0)  # (1, vocab)
        if processors:
            history = torch.tensor([tokens], dtype=torch.long, device=scores.device)
            scores = processors(history, scores)
        if sampling.do_sample:
            probs = torch.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs[0], 1, generator=sampling.generator))
        else:
            token = int(scores[0].argmax())
        tokens.append(token)
        if token in stop or i == max_new_tokens - 1:
            break
        logits = step(token, i)
    return tokens
