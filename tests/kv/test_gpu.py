"""GPU checks (skipped without CUDA): the varlen kernel inside real generation, and no host sync per decode step."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.cache import RaggedLayer, generated_cache, use_backend
from omnipress.testing import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model():
    model = tiny_model("llama", num_attention_heads=8, num_key_value_heads=2, hidden_size=256, head_dim=32)
    return model.to("cuda", torch.bfloat16)


@pytest.mark.parametrize("press", [op.AdaKV(budget=64, window=8), op.MixKV(op.AdaKV(budget=64, window=8))], ids=str)
def test_varlen_generation_matches_the_torch_backend(press):
    model = _model()
    ids = torch.randint(5, 200, (3, 400), generator=torch.Generator().manual_seed(0)).cuda()
    kwargs = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "output_logits": True}
    with torch.no_grad(), press(model):
        fast = model.generate(input_ids=ids, return_dict_in_generate=True, **kwargs)
        with use_backend("torch"):
            slow = model.generate(input_ids=ids, return_dict_in_generate=True, **kwargs)
    assert any(not layer.is_uniform for layer in generated_cache(fast).layers if isinstance(layer, RaggedLayer))
    for a, b in zip(fast.logits, slow.logits):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)


def test_decode_steps_of_a_compressed_model_do_not_sync():
    model = _model()
    ids = torch.randint(5, 200, (2, 300), generator=torch.Generator().manual_seed(1)).cuda()
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    press = op.AdaKV(budget=64, window=8)
    with torch.no_grad(), press(model):
        out = model(input_ids=ids, cache=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        position = torch.full((2, 1), 300, device="cuda")
        model(input_ids=token, position_ids=position, cache=cache)  # warm-up: builds cached metadata
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(4):
                logits = model(input_ids=token, position_ids=position + 1 + step, cache=cache).logits
                token = logits[:, -1:].argmax(-1)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def whisper_case(device: str, dtype: torch.dtype):
    """A tiny Whisper on `device`/`dtype` under AudioKV with a head profile (head-wise budgets), 5 beams: the
    compressed cross-attention layers and the scores of the default backend and of the paged PyTorch path."""
    from omnipress.testing import real_speech, whisper_inputs

    model = tiny_model("whisper").to(device, dtype)
    inputs = whisper_inputs(model, [real_speech()])
    inputs = {
        "input_features": inputs["input_features"].to(device, dtype),
        "attention_mask": inputs["attention_mask"].to(device),
    }
    cfg = model.config
    importance = torch.rand(cfg.decoder_layers, cfg.decoder_attention_heads, generator=torch.Generator().manual_seed(0))
    press = op.AudioKV(compression_ratio=0.5, profile=op.HeadProfile(importance**2, kind="audio_heads"))
    kwargs = {"num_beams": 5, "max_new_tokens": 4, "do_sample": False, "language": "en", "output_scores": True}
    caches = []

    def grab(module, args, kw):  # the decoder's cache as generation uses it
        caches.append(kw.get("cache", kw.get("past_key_values")))

    handle = model.model.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad(), press(model):
            fast = model.generate(**inputs, return_dict_in_generate=True, **kwargs)
            cross = caches[-1].cross_attention_cache.layers
            with use_backend("torch"):
                slow = model.generate(**inputs, return_dict_in_generate=True, **kwargs)
    finally:
        handle.remove()
    return cross, fast, slow


def test_whisper_cross_attention_press_on_cuda_reads_paged_layers_through_varlen():
    from omnipress.kv.cross import CROSS_PAGE_SIZE

    cross, fast, slow = whisper_case("cuda", torch.bfloat16)
    # CUDA half precision: head-wise layers stay paged (exact bytes); varlen reads them at full speed
    assert all(isinstance(layer, RaggedLayer) and layer.page_size == CROSS_PAGE_SIZE for layer in cross)
    assert any(not layer.is_uniform for layer in cross)
    assert torch.equal(fast.sequences, slow.sequences)
    for a, b in zip(fast.scores, slow.scores):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)
