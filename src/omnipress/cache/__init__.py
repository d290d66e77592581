"""KV-cache storage for compressed caches: the ragged per-(row, KV head) layer, its attention, and accounting.

- `RaggedLayer` (`ragged.py`): only the kept entries, per-segment spare capacity, in-place appends, eviction,
  beam reordering;
- `ragged_attention` (`attention.py`): exact attention over it in one call per layer (torch's varlen kernel on CUDA,
  batched pure PyTorch elsewhere);
- `cache_kv_bytes`, `generated_cache` (`accounting.py`): what a transformers cache physically holds.
"""

from .accounting import cache_kept_bytes, cache_kv_bytes, generated_cache
from .attention import BACKENDS, ragged_attention, set_default_backend, use_backend
from .ragged import PAGE_SIZE, RaggedLayer, page_size_for

__all__ = [
    "BACKENDS",
    "PAGE_SIZE",
    "RaggedLayer",
    "cache_kept_bytes",
    "cache_kv_bytes",
    "generated_cache",
    "page_size_for",
    "ragged_attention",
    "set_default_backend",
    "use_backend",
]
