"""Helpers shared by the benchmark scripts: timing, resumable JSON results, markdown tables, real weights and text.

Nothing here is part of the `omnipress` package; the scripts in this folder import it as `_common` (they put their
own folder on `sys.path`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from omnipress import weights


# -- timing --------------------------------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (NaN when empty)."""
    return float(statistics.median(values)) if values else float("nan")


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded next to every result (timings depend on them)."""
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def load_average() -> float | None:
    """The 1-minute load average, or `None` where the OS does not report it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


# -- results -------------------------------------------------------------------------------------------------------
class ResultStore:
    """Named sections of one benchmark run in a JSON file, rewritten after every section.

    A crash loses only the section in progress, and running again with the same file skips the finished sections
    (`get` returns them). Section keys encode the settings that change their numbers, so a run with other flags
    computes its own sections next to the old ones. `path=None` keeps everything in memory.
    """

    def __init__(self, path: str | os.PathLike | None, *, resume: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.data: dict[str, Any] = {}
        if self.path is not None and resume and self.path.is_file():
            self.data = json.loads(self.path.read_text())

    def get(self, key: str) -> Any | None:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=False))
        os.replace(tmp, self.path)  # atomic: the file is always a complete JSON document


# -- tables --------------------------------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    numeric = [
        all(_looks_numeric(row[i]) for row in cells if i < len(row) and row[i] not in ("", "-")) and bool(cells)
        for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    return re.fullmatch(r"[-+]?[\d.,]+\s*(%|x|×|ms|s|MiB|KiB)?", text.strip()) is not None


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f}"


# -- real weights --------------------------------------------------------------------------------------------------
def smollm2_gguf() -> tuple[Path, str]:
    """See `omnipress.weights.smollm2_gguf`."""
    return weights.smollm2_gguf()


def load_smollm2(attn_implementation: str = "sdpa") -> tuple[torch.nn.Module, Any]:
    """SmolLM2-135M-Instruct as a float32 `LlamaForCausalLM` and its tokenizer (with chat template), offline."""
    return weights.load_smollm2(attn_implementation)


# -- real text -----------------------------------------------------------------------------------------------------
def reference_paragraphs(min_chars: int = 120) -> list[str]:
    """Prose paragraphs of the Python language reference shipped with every CPython (`pydoc_data.topics`).

    Real English text, always present offline and identical on every machine with the same Python version. Code
    blocks (indented), grammar rules and heading underlines are dropped; each paragraph's lines are joined.
    """
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = [line for line in block.split("\n") if line.strip()]
            if not lines or any(line.startswith((" ", "\t")) for line in lines):
                continue
            if any(set(line.strip()) <= set("*=-~^") for line in lines):
                continue
            text = " ".join(line.strip() for line in lines)
            if len(text) >= min_chars:
                paragraphs.append(text)
    return paragraphs
