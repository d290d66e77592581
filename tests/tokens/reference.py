"""Reference runs for the token pruners: the unpruned model with the pruned tokens hidden from attention.

`hidden_tokens(model, keep)` switches the language model to an SDPA attention in which no query sees a key whose
prompt column `keep` marks False (`(batch, prompt length)`; tokens generated later are always visible, and every
query sees itself so that rows of hidden queries are never empty). Positions, masks and the cache are the untouched
model's own, so `generate` under it is what a pruner must reproduce.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from omnipress.adapters import get_adapter

NAME = "omnipress_test_hidden_tokens"
_STATE: dict[str, torch.Tensor] = {}


def _hiding_sdpa(module, query, key, value, attention_mask, **kwargs):
    keep = _STATE["keep"].to(query.device)  # (batch, prompt)
    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    visible = torch.ones(batch, kv_len, dtype=torch.bool, device=query.device)
    columns = min(kv_len, keep.shape[1])
    visible[:, :columns] = keep[:, :columns]
    rows = torch.arange(q_len, device=query.device).unsqueeze(1)
    cols = torch.arange(kv_len, device=query.device).unsqueeze(0)
    causal = cols <= rows + (kv_len - q_len)  # (q, kv)
    itself = cols == rows + (kv_len - q_len)
    allowed = causal[None, None] & visible[:, None, None, :]  # (batch, 1, q, kv)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()
    allowed = allowed | itself[None, None]
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, allowed, is_causal=False, **kwargs)


AttentionInterface.register(NAME, _hiding_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)


@contextmanager
def hidden_tokens(model, keep: torch.Tensor):
    """Run `model`'s language model with the prompt columns `keep == False` hidden from every query."""
    config = get_adapter(model).text_config
    saved = config._attn_implementation
    _STATE["keep"] = keep
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = saved
        _STATE.clear()


def greedy(model, inputs, new_tokens: int = 5) -> torch.Tensor:
    """Greedy `generate`, the new tokens only `(batch, new_tokens)`."""
    return generate_with_scores(model, inputs, new_tokens)[0]


def generate_with_scores(model, inputs, new_tokens: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy `generate`: the new tokens `(batch, new_tokens)` and their logits `(new_tokens, batch, vocab)`."""
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            return_dict_in_generate=True,
            output_logits=True,
        )
    return out.sequences[:, inputs["input_ids"].shape[1] :], torch.stack(out.logits)


def assert_same_generation(model, inputs, keep: torch.Tensor, got: tuple[torch.Tensor, torch.Tensor]) -> None:
    """`got` (tokens, logits) equal the reference run with the columns `keep == False` hidden: the same tokens and
    logits equal to float tolerance (fp32)."""
    with hidden_tokens(model, keep):
        tokens, logits = generate_with_scores(model, inputs, got[0].shape[1])
    assert torch.equal(got[0], tokens)
    torch.testing.assert_close(got[1], logits, rtol=1e-4, atol=1e-4)
