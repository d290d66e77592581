"""What a transformers cache physically holds, ragged and dense layers, self- and cross-attention alike."""

from __future__ import annotations

from typing import Any

from .ragged import RaggedLayer


def _layers(cache: Any) -> list[Any]:
    if cache is None:
        return []
    if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache (Whisper): decoder self- and cross-attention
        return [*getattr(cache.self_attention_cache, "layers", []), *getattr(cache.cross_attention_cache, "layers", [])]
    return list(getattr(cache, "layers", []))


def _storage_bytes(t: Any) -> int:
    return t.untyped_storage().nbytes()


def cache_kv_bytes(cache: Any) -> int:
    """Physical bytes of keys and values held by every layer of a transformers `Cache` (an `EncoderDecoderCache`
    counts both its self- and cross-attention caches; ragged layers count their spare slots too)."""
    total = 0
    for layer in _layers(cache):
        if isinstance(layer, RaggedLayer):
            total += layer.kv_bytes()
        elif getattr(layer, "keys", None) is not None and layer.keys.numel():
            total += _storage_bytes(layer.keys) + _storage_bytes(layer.values)
    return total


def cache_kept_bytes(cache: Any) -> int:
    """Bytes of the stored entries only: like `cache_kv_bytes` without the spare slots of ragged layers."""
    total = 0
    for layer in _layers(cache):
        if isinstance(layer, RaggedLayer):
            total += layer.kept_bytes()
        elif getattr(layer, "keys", None) is not None and layer.keys.numel():
            total += layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
    return total


def generated_cache(output: Any) -> Any:
    """The cache of a `generate(..., return_dict_in_generate=True)` output (`cache`; `past_key_values` before
    transformers 5.24), read without touching the deprecated name."""
    if isinstance(output, dict) or hasattr(output, "keys"):
        for name in ("cache", "past_key_values"):
            if name in output:
                return output[name]
    return getattr(output, "cache", None)
