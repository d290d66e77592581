"""Tiny random-weight models of every supported family, with real media, for tests (no downloads).

```python
from omnipress.testing import tiny_batch_inputs, tiny_inputs, tiny_model

model = tiny_model("qwen2_vl", num_hidden_layers=4)
inputs = tiny_inputs("qwen2_vl", model, video_frames=4)      # real photo + 4 real video frames
out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
batch = tiny_batch_inputs("qwen2_vl", model, [{}, {"image": False, "question": "Hi?"}])  # left-padded batch
```

`FAMILIES` are the decoder-only families; `ENCODER_DECODER_FAMILIES` (Whisper) are kept apart, `ALL_FAMILIES` is both.

Design choices
--------------
- **One small vocabulary for every family.** All models use `local_tokenizer()`: 256 byte tokens plus the special
  tokens of every family (`<|im_start|>`, `<|image_pad|>`, `<image>`, `<|AUDIO|>`, ...) at ids 256-267, and the
  configs point their modality token ids at these. The real Qwen ids (151643+) would need a 152k-row embedding and
  LM head that dominate build and forward time; a small vocabulary also checks that nothing hard-codes the real ids.
- **Small widths** (hidden 64, 4 heads, 2 KV heads, head_dim 16, 2 layers) with the real structure: M-RoPE
  sections scaled to the head size, Qwen3-VL deepstack, LLaVA-1.5's 336² CLIP-L/14 geometry (576 image tokens).
  LLaVA-OneVision uses a 112² SigLIP/14 tower (64 tokens per crop instead of 729) with pinpoints up to 3×3 tiles
  of 112², so anyres images stay at a few hundred tokens.
- **Fresh model per call.** Building a tiny model takes ~10-30 ms, less than the risk of sharing a model that a test
  wrapped in a press or a hook, so nothing is cached.
- **Real media only.** Images are scikit-image photographs; video frames come from `../shared/data/video/vtest.avi`
  when present (else pan/zoom crops of the astronaut photo, a real image moved like a camera); speech comes from
  `../shared/data/speech`, else the recorded voice of `/usr/share/sounds/alsa`, else `MediaUnavailableError`
  (a `unittest.SkipTest`, so pytest skips with the reason).
"""

from __future__ import annotations

import os
import unittest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

FAMILIES: tuple[str, ...] = (
    "llama",
    "qwen2",
    "qwen3",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "llava",
    "llava_onevision",
    "qwen2_audio",
    "qwen2_5_omni",
)
TEXT_FAMILIES = ("llama", "qwen2", "qwen3")
#: encoder-decoder families, kept out of `FAMILIES` (whose callers assume decoder-only models)
ENCODER_DECODER_FAMILIES: tuple[str, ...] = ("whisper",)
ALL_FAMILIES: tuple[str, ...] = FAMILIES + ENCODER_DECODER_FAMILIES

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<video>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
)

#: Whisper's decoder special tokens, in Whisper's own order, at ids 256-264 of the tiny Whisper vocabulary (after the
#: 256 byte tokens; `<|nospeech|>` is `<|notimestamps|>` - 1 as Whisper's no-speech detection expects)
WHISPER_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)

QWEN_PLACEHOLDERS = {
    "image": "<|vision_start|><|image_pad|><|vision_end|>",
    "video": "<|vision_start|><|video_pad|><|vision_end|>",
    "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>",
}
LLAVA_PLACEHOLDERS = {"image": "<image>\\n", "video": "<video>\\n", "audio": ""}

#: `(height, width)` of the media `tiny_inputs` feeds each family (small, so forwards stay fast)
IMAGE_SIZES = {"qwen3_vl": (192, 256), "llava_onevision": (168, 224)}
DEFAULT_IMAGE_SIZE = (168, 224)
VIDEO_FRAME_SIZES = {"qwen3_vl": (128, 192), "llava_onevision": (112, 112)}
DEFAULT_VIDEO_FRAME_SIZE = (112, 168)

LLAVA_OV_SIDE = 112


class MediaUnavailableError(unittest.SkipTest):
    """No real media of the requested kind on this machine (pytest reports it as a skip with the reason)."""


# -- tokenizer -----------------------------------------------------------------------------------------------------
def chat_template(placeholders: dict[str, str]) -> str:
    """A ChatML template (`<|im_start|>role\\n…<|im_end|>\\n`) writing `{"type": "image"|"video"|"audio"}` content
    items as the given placeholder strings."""
    media = "".join(f"{{%- elif item['type'] == '{kind}' -%}}{{{{ '{text}' }}}}" for kind, text in placeholders.items())
    return (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'text' -%}{{ item['text'] }}" + media + "{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def local_tokenizer(family: str | None = None) -> Any:
    """A hub-free byte-level tokenizer (`PreTrainedTokenizerFast`) with every family's special tokens.

    The 256 byte symbols get ids 0-255 and `SPECIAL_TOKENS` ids 256-267 (`len(tokenizer) == 268`). `eos` and `pad`
    are `<|endoftext|>`. The ChatML chat template writes media as the family's placeholders: `<image>` / `<video>`
    for the LLaVA families, `<|vision_start|><|image_pad|><|vision_end|>` etc. otherwise.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=SPECIAL_TOKENS[0], pad_token=SPECIAL_TOKENS[0]
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    llava = family in ("llava", "llava_onevision")
    tokenizer.chat_template = chat_template(LLAVA_PLACEHOLDERS if llava else QWEN_PLACEHOLDERS)
    return tokenizer


def token_id(token: str) -> int:
    """Id of one of `SPECIAL_TOKENS` in `local_tokenizer()`."""
    return 256 + SPECIAL_TOKENS.index(token)


def whisper_token_id(token: str) -> int:
    """Id of one of `WHISPER_SPECIAL_TOKENS` in the tiny Whisper vocabulary."""
    return 256 + WHISPER_SPECIAL_TOKENS.index(token)


def whisper_decoder_prompt() -> list[int]:
    """Whisper's English transcription prompt: `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`."""
    return [whisper_token_id(t) for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]


# -- configs and models --------------------------------------------------------------------------------------------
def _mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension in the real proportions (16/24/24 of 64)."""
    half = head_dim // 2
    spatial = (3 * half) // 8
    return [half - 2 * spatial, spatial, spatial]


def tiny_config(family: str, **overrides: Any) -> Any:
    """The `transformers` config of `tiny_model(family, **overrides)`.

    `overrides` set text-decoder fields (`num_hidden_layers=4`, `hidden_size=128`, ...); the keys `vision_config`
    and `audio_config` take dicts merged into those sub-configs. For `"whisper"` they set `WhisperConfig` fields.
    """
    import transformers as T

    if family not in ALL_FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {ALL_FAMILIES}")
    if family == "whisper":
        return _whisper_config(**overrides)
    vision_over = dict(overrides.pop("vision_config", {}) or {})
    audio_over = dict(overrides.pop("audio_config", {}) or {})
    eos, pad = token_id("<|im_end|>"), token_id("<|endoftext|>")
    text: dict[str, Any] = dict(
        vocab_size=len(SPECIAL_TOKENS) + 256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    text.update(overrides)
    hidden = text["hidden_size"]
    head_dim = text.get("head_dim") or hidden // text["num_attention_heads"]
    if family in ("qwen3", "qwen3_vl"):
        text["head_dim"] = head_dim
    qwen_ids = dict(
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    rope = dict(rope_type="default", rope_theta=1e6, mrope_section=_mrope_section(head_dim))

    if family in TEXT_FAMILIES:
        cls = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "qwen3": T.Qwen3Config}[family]
        return cls(**text)
    if family == "qwen2_vl":
        vision = dict(
            depth=2,
            embed_dim=32,
            hidden_size=hidden,
            num_heads=4,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        return T.Qwen2VLConfig(
            text_config=dict(**text, rope_parameters=rope), vision_config={**vision, **vision_over}, **qwen_ids
        )
    if family == "qwen2_5_vl":
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1],
        )
        return T.Qwen2_5_VLConfig(
            text_config=dict(**text, rope_parameters=rope), vision_config={**vision, **vision_over}, **qwen_ids
        )
    if family == "qwen3_vl":
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=hidden,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=144,
            deepstack_visual_indexes=[0],
        )
        rope3 = dict(rope, rope_theta=5e6, mrope_interleaved=True)
        return T.Qwen3VLConfig(
            text_config=dict(**text, rope_parameters=rope3), vision_config={**vision, **vision_over}, **qwen_ids
        )
    if family == "llava":
        vision = dict(
            model_type="clip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=336,
            patch_size=14,
            projection_dim=32,
        )
        return T.LlavaConfig(
            vision_config={**vision, **vision_over},
            text_config=dict(model_type="llama", **text),
            image_token_index=token_id("<image>"),
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_seq_length=576,
        )
    if family == "llava_onevision":
        vision = dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=LLAVA_OV_SIDE,
            patch_size=14,
            vision_use_head=False,
        )
        vision.update(vision_over)
        side = vision["image_size"]
        pinpoints = [[side * i, side * j] for i in range(1, 4) for j in range(1, 4)]
        return T.LlavaOnevisionConfig(
            vision_config=vision,
            text_config=dict(model_type="qwen2", **text),
            image_token_index=token_id("<image>"),
            video_token_index=token_id("<video>"),
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            image_grid_pinpoints=pinpoints,
        )
    audio = dict(
        num_mel_bins=128,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=64,
        d_model=32,
        max_source_positions=1500,
    )
    audio.update(audio_over)
    if family == "qwen2_audio":
        return T.Qwen2AudioConfig(
            audio_config=audio, text_config=dict(model_type="qwen2", **text), audio_token_index=token_id("<|AUDIO|>")
        )
    # qwen2_5_omni (thinker)
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=hidden,
        fullatt_block_indexes=[1],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    config = T.Qwen2_5OmniThinkerConfig(
        audio_config={"output_dim": hidden, "n_window": 100, **audio},
        vision_config={**vision, **vision_over},
        text_config=dict(**text, rope_parameters=rope),
        audio_token_index=token_id("<|AUDIO|>"),
        image_token_index=qwen_ids["image_token_id"],
        video_token_index=qwen_ids["video_token_id"],
        audio_start_token_id=token_id("<|audio_bos|>"),
        audio_end_token_id=token_id("<|audio_eos|>"),
    )
    # transformers 5.23's thinker config lacks these, but its get_rope_index reads them (only the talker sets them)
    config.vision_start_token_id = qwen_ids["vision_start_token_id"]
    config.vision_end_token_id = qwen_ids["vision_end_token_id"]
    return config


def _whisper_config(**overrides: Any) -> Any:
    """A Whisper with `d_model` 64, 2 encoder + 2 decoder layers of 4 heads, 80 mel bins and the real 30 s / 1500
    encoder positions, over 256 byte tokens plus `WHISPER_SPECIAL_TOKENS`."""
    import transformers as T

    eot = whisper_token_id("<|endoftext|>")
    fields: dict[str, Any] = dict(
        vocab_size=256 + len(WHISPER_SPECIAL_TOKENS),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=128,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=whisper_token_id("<|startoftranscript|>"),
    )
    fields.update(overrides)
    return T.WhisperConfig(**fields)


def _configure_whisper_generation(model: nn.Module) -> None:
    """The generation-config fields `WhisperForConditionalGeneration.generate` reads (multilingual, one language)."""
    gen = model.generation_config
    gen.decoder_start_token_id = whisper_token_id("<|startoftranscript|>")
    gen.eos_token_id = gen.pad_token_id = whisper_token_id("<|endoftext|>")
    gen.bos_token_id = whisper_token_id("<|endoftext|>")
    gen.is_multilingual = True
    gen.lang_to_id = {"<|en|>": whisper_token_id("<|en|>")}
    gen.task_to_id = {"translate": whisper_token_id("<|translate|>"), "transcribe": whisper_token_id("<|transcribe|>")}
    gen.no_timestamps_token_id = whisper_token_id("<|notimestamps|>")
    gen.prev_sot_token_id = whisper_token_id("<|startofprev|>")
    gen.suppress_tokens = []
    gen.begin_suppress_tokens = [whisper_token_id("<|endoftext|>")]
    gen.forced_decoder_ids = None


def tiny_model(family: str, *, attn_implementation: str = "sdpa", seed: int = 0, **overrides: Any) -> nn.Module:
    """A freshly built random-weight model of `family` in eval mode (see `tiny_config` for `overrides`).

    Classes: `LlamaForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`, `Qwen2VLForConditionalGeneration`,
    `Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`, `LlavaForConditionalGeneration`,
    `LlavaOnevisionForConditionalGeneration`, `Qwen2AudioForConditionalGeneration`,
    `Qwen2_5OmniThinkerForConditionalGeneration`, `WhisperForConditionalGeneration` (`"whisper"`, with the
    generation config its `generate` needs). Same `seed` and arguments give identical weights.
    """
    import transformers as T

    config = tiny_config(family, **overrides)
    if family == "whisper":
        config._attn_implementation = attn_implementation
        torch.manual_seed(seed)
        whisper = T.WhisperForConditionalGeneration(config).eval()
        _configure_whisper_generation(whisper)
        return whisper
    classes = {
        "llama": T.LlamaForCausalLM,
        "qwen2": T.Qwen2ForCausalLM,
        "qwen3": T.Qwen3ForCausalLM,
        "qwen2_vl": T.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": T.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": T.Qwen3VLForConditionalGeneration,
        "llava": T.LlavaForConditionalGeneration,
        "llava_onevision": T.LlavaOnevisionForConditionalGeneration,
        "qwen2_audio": T.Qwen2AudioForConditionalGeneration,
        "qwen2_5_omni": T.Qwen2_5OmniThinkerForConditionalGeneration,
    }
    config._attn_implementation = attn_implementation
    for sub in ("text_config", "vision_config", "audio_config"):
        if getattr(config, sub, None) is not None:
            getattr(config, sub)._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = classes[family](config).eval()
    model.generation_config.eos_token_id = token_id("<|im_end|>")
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    return model


def tiny_processor(family: str, model: nn.Module | None = None) -> Any:
    """What to pass as `processor` to `omnipress.generation.generate` for a tiny model of `family`.

    A real `transformers` processor where one can be built without torchvision: `LlavaProcessor`
    (`CLIPImageProcessorPil`) for llava and `Qwen2AudioProcessor` for qwen2_audio. Otherwise the family's
    `local_tokenizer`: the Qwen-VL, Qwen2.5-Omni and LLaVA-OneVision processors cannot be constructed in transformers
    5.23 without torchvision (their video-processor slot is type-checked against a torchvision class), so
    `generate` builds their media tensors itself from the model config. `model` (optional) sizes the image
    processor from its config instead of the tiny defaults.
    """
    import transformers as T

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    tokenizer = local_tokenizer(family)
    if family == "llava":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        vision = model.config.vision_config if model is not None else tiny_config("llava").vision_config
        side = int(vision.image_size)
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        return T.LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=int(vision.patch_size),
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            image_token="<image>",
            chat_template=tokenizer.chat_template,
        )
    if family == "qwen2_audio":
        config = model.config if model is not None else tiny_config("qwen2_audio")
        extractor = T.WhisperFeatureExtractor(feature_size=config.audio_config.num_mel_bins, sampling_rate=16000)
        return T.Qwen2AudioProcessor(
            feature_extractor=extractor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
        )
    return tokenizer


# -- real media ----------------------------------------------------------------------------------------------------
def data_dir() -> Path:
    """The shared real-media folder: `$OMNIPRESS_DATA`, else `../shared/data` next to the project root."""
    if env := os.environ.get("OMNIPRESS_DATA"):
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def real_image(name: str = "astronaut", size: tuple[int, int] | None = None) -> Image.Image:
    """A scikit-image sample photograph (`astronaut`, `coffee`, `chelsea`, `rocket`, ...) as RGB, optionally
    resized (bicubic) to `size = (height, width)`."""
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise ValueError(f"skimage.data has no image {name!r}")
    image = Image.fromarray(np.asarray(loader())).convert("RGB")
    if size is not None:
        image = image.resize((size[1], size[0]), Image.BICUBIC)
    return image


def real_speech(name: str = "harvard_01") -> np.ndarray:
    """Real speech as 16 kHz mono float32: `<data>/speech/<name>.wav` (espeak-ng Harvard sentences, recorded
    voices), else the recorded voice `/usr/share/sounds/alsa/Front_Center.wav`.

    Raises `MediaUnavailableError` (a skip under pytest) when neither exists.
    """
    from .media.audio import read_audio

    candidates = [data_dir() / "speech" / f"{name}.wav", Path("/usr/share/sounds/alsa/Front_Center.wav")]
    for path in candidates:
        if path.is_file():
            return read_audio(path, sampling_rate=16000)
    raise MediaUnavailableError(f"no real speech found (looked for {', '.join(map(str, candidates))})")


def real_video_frames(
    num_frames: int, size: tuple[int, int] | None = None, *, fps: float = 2.0
) -> tuple[list[Image.Image], list[float]]:
    """`num_frames` real frames and their timestamps (seconds).

    From `<data>/video/vtest.avi` (real street footage) sampled at `fps`; where that file is absent, pan/zoom crops
    of the astronaut photograph at the same rate (a real image moved like a camera). Frames are resized to
    `size = (height, width)` when given.
    """
    from .media.video import read_video

    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = data_dir() / "video" / "vtest.avi"
    if path.is_file():
        pairs = list(read_video(path, fps=fps, max_frames=num_frames))
        times, frames = [t for t, _ in pairs], [f for _, f in pairs]
    else:
        photo = real_image("astronaut")
        frames, times = [], []
        for k in range(num_frames):
            crop = 384 - 16 * (k % 8)  # zoom in while panning right and down
            left = top = 8 * k % (512 - crop + 1)
            frames.append(photo.crop((left, top, left + crop, top + crop)))
            times.append(k / fps)
    if size is not None:
        frames = [f.resize((size[1], size[0]), Image.BICUBIC) for f in frames]
    return frames, times


# -- inputs --------------------------------------------------------------------------------------------------------
def tiny_inputs(
    family: str,
    model: nn.Module,
    *,
    image: bool = True,
    video_frames: int = 0,
    audio: bool | None = None,
    question: str = "What is shown?",
    image_size: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Model inputs for one chat turn with real media, ready for `model(**inputs)` and `model.generate(**inputs)`.

    Built by `omnipress.generation.build_inputs` with `tiny_processor(family, model)`.

    Parameters
    ----------
    image:
        Add one real photograph, for families that take images (ignored by text and audio-only families).
    video_frames:
        Add one video of this many real frames (0: none); an error for families without video input.
    audio:
        Add one real speech clip. `None` means: yes for the audio-only families (qwen2_audio, whisper), no otherwise.
    image_size:
        `(height, width)` of the photograph; default `IMAGE_SIZES` of the family (else `DEFAULT_IMAGE_SIZE`).

    For `"whisper"` the inputs are `input_features` `(1, 80, 3000)` and the extractor's frame `attention_mask`
    `(1, 3000)` of one real speech clip (`WhisperFeatureExtractor`), plus `decoder_input_ids`, the English
    transcription prompt (`whisper_decoder_prompt()`), so that `model(**inputs)` runs; `generate` continues it.
    """
    from .adapters import get_adapter
    from .generation import build_inputs

    adapter = get_adapter(model)
    if adapter.family != family:
        raise ValueError(f"tiny_inputs for {family!r} got a {adapter.family} model ({type(model).__name__})")
    if family == "whisper":
        if video_frames:
            adapter.check_modalities(["video"])
        return whisper_inputs(model, [real_speech()])
    images = [real_image("astronaut", image_size or IMAGE_SIZES.get(family, DEFAULT_IMAGE_SIZE))] if image else []
    if "image" not in adapter.modalities:
        images = []
    frames = times = None
    if video_frames:
        frames, times = real_video_frames(video_frames, VIDEO_FRAME_SIZES.get(family, DEFAULT_VIDEO_FRAME_SIZE))
    if audio is None:
        audio = adapter.modalities == ("audio",)
    clips = [real_speech()] if audio else []
    video = list(zip(times, frames)) if frames is not None else None
    return build_inputs(
        model,
        tiny_processor(family, model),
        text=question,
        images=images or None,
        video=video,
        audio=clips or None,
        video_size=VIDEO_FRAME_SIZES.get(family, DEFAULT_VIDEO_FRAME_SIZE) if frames is not None else None,
    )


def tiny_batch_inputs(family: str, model: nn.Module, prompts: list[dict[str, Any]]) -> dict[str, Any]:
    """One left-padded batch of several `tiny_inputs` prompts, collated as the family's processor would
    (`omnipress.adapters.collate_inputs`).

    Each entry of `prompts` holds `tiny_inputs` keyword arguments, e.g.
    `[{"question": "What is shown?"}, {"image": False, "question": "Say hi."}, {"video_frames": 4}]`.
    """
    from .adapters import collate_inputs

    return collate_inputs(model, [tiny_inputs(family, model, **prompt) for prompt in prompts])


def whisper_inputs(model: nn.Module, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Whisper inputs for 16 kHz clips: `input_features` `(clips, mel bins, 3000)`, the frame `attention_mask`
    `(clips, 3000)` and the transcription prompt as `decoder_input_ids` `(clips, 4)`."""
    import transformers as T

    extractor = T.WhisperFeatureExtractor(feature_size=int(model.config.num_mel_bins), sampling_rate=16000)
    encoded = extractor(clips, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    prompt = torch.tensor([whisper_decoder_prompt()] * len(clips))
    return {
        "input_features": encoded["input_features"],
        "attention_mask": encoded["attention_mask"],
        "decoder_input_ids": prompt,
    }
