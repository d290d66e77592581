"""Brute-force references for in-LLM pruning, built by hand from the model's own layers (no omnipress code).

`pruned_logits` runs the decoder layers one by one without a cache: layers < K on the whole sequence, layers >= K on
the kept columns, with the untouched model's rotary embeddings and position ids gathered at those columns and an
explicit causal mask. `whisper_pruned_logits` does the same for Whisper's decoder, whose layers >= K cross-attend to
the kept encoder states only. `eager_attentions` gives the untouched model's attention maps (eager kernel).
"""

from __future__ import annotations

from typing import Any

import torch

from omnipress.adapters import get_adapter


def layer_inputs(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the untouched model's first decoder layer receives for `inputs` (no cache): hidden states, rotary
    embeddings, position ids."""
    adapter = get_adapter(model)
    seen: dict[str, Any] = {}

    def grab(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["rotary"] = kwargs["position_embeddings"]
        seen["position_ids"] = kwargs.get("position_ids")

    handle = adapter.decoder_layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        handle.remove()
    return seen


def pruned_logits(
    model: torch.nn.Module, inputs: dict[str, Any], keep: torch.Tensor, layer: int, steps: int = 1
) -> list[torch.Tensor]:
    """Next-token logits `(vocab,)` of one row after each of its last `steps` prefixes (the prompt, then the prompt
    and each generated token): layers >= `layer` see only the columns `keep` `(prompt,)` marks and the generated
    tokens. `inputs` hold the whole sequence (prompt and generated tokens)."""
    adapter = get_adapter(model)
    seen = layer_inputs(model, inputs)
    total = seen["hidden"].shape[1]
    out = []
    for stop in range(total - steps + 1, total + 1):
        keep_ext = torch.cat([keep, torch.ones(stop - keep.shape[0], dtype=torch.bool)])
        out.append(_run_layers(adapter, model, seen, keep_ext, layer, stop))
    return out


def _run_layers(adapter: Any, model: torch.nn.Module, seen: dict[str, Any], keep: torch.Tensor, layer: int, stop: int):
    hidden, (cos, sin), pos = seen["hidden"][:, :stop], seen["rotary"], seen["position_ids"]
    columns = torch.arange(stop)
    with torch.no_grad():
        for idx, block in enumerate(adapter.decoder_layers):
            if idx == layer:
                columns = keep.nonzero().squeeze(-1)
                hidden = hidden[:, columns]
            n = hidden.shape[1]
            mask = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
            hidden = block(
                hidden,
                attention_mask=mask,
                position_embeddings=(cos[..., columns, :], sin[..., columns, :]),
                position_ids=None if pos is None else pos[..., columns],
                cache=None,
                use_cache=False,
            )
        hidden = adapter.language_model.norm(hidden)
        return model.lm_head(hidden)[0, -1]


def eager_attentions(family_model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The untouched model's attention maps `(batch, heads, seq, seq)` per layer (it must use eager attention)."""
    with torch.no_grad():
        return family_model(**inputs, output_attentions=True).attentions


def whisper_pruned_logits(
    model: torch.nn.Module, states: torch.Tensor, decoder_ids: torch.Tensor, keep: torch.Tensor, layer: int
) -> torch.Tensor:
    """`(vocab,)` next-token logits of Whisper's decoder for one row given its encoder states `(1, 1500, d)`,
    decoder layers >= `layer` cross-attending to the encoder positions `keep` `(1500,)` marks."""
    inner = model.model
    with torch.no_grad():
        decoder = inner.decoder
        positions = torch.arange(decoder_ids.shape[1]).unsqueeze(0)
        hidden = decoder.embed_tokens(decoder_ids) + decoder.embed_positions(decoder_ids, position_ids=positions)
        n = decoder_ids.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
        for idx, block in enumerate(decoder.layers):
            memory = states if idx < layer else states[:, keep]
            hidden = block(hidden, mask, memory, encoder_attention_mask=None, cache=None, use_cache=False)
        hidden = decoder.layer_norm(hidden)
        return model.proj_out(hidden)[0, -1]


def encoded_inputs(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """`inputs` with the audio already encoded: `input_ids` plus the language model's `inputs_embeds` (the real
    encoder's output on the real clip, merged), without the media tensors, so that repeated forwards skip the audio
    encoder. A forward on them is bit-identical to one on `inputs` (Qwen2-Audio)."""
    seen: dict[str, torch.Tensor] = {}
    lm = get_adapter(model).language_model
    handle = lm.register_forward_pre_hook(lambda m, a, k: seen.update(embeds=k["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        handle.remove()
    media = ("input_features", "feature_attention_mask")
    return {**{k: v for k, v in inputs.items() if k not in media}, "inputs_embeds": seen["embeds"]}
