"""Loading a script of `benchmarks/` (not a package) as a module in the smoke tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_module(file: str, name: str | None = None) -> Iterator[ModuleType]:
    """`benchmarks/<file>` imported as `name` (default: the file's stem) while the block runs, with `benchmarks/` on
    `sys.path` (for its `_common` helpers) and the module in `sys.modules` (dataclasses resolve annotations there)."""
    name = name or Path(file).stem
    saved = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        sys.path[:] = saved
