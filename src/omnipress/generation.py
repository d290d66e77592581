"""One call from a question plus media to generated text, optionally under a compression method.

```python
result = generate(model, processor, text="What happens?", video="clip.avi", press=op.SnapKV(budget=128))
result.text, result.report
```

`build_inputs` turns the question and media into model inputs the way the family's processor does: the chat
template writes one placeholder per image / video / audio clip, then the placeholders are expanded and the media
tensors built. A real `transformers` processor that handles every requested modality is used as is; otherwise
(the Qwen-VL, Qwen2.5-Omni and LLaVA-OneVision processors cannot be built without torchvision in transformers 5.23,
and no video processor can) the family's adapter expands the placeholders and builds the tensors from the model
config, using the processor's tokenizer, image processor and feature extractor when it has them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .adapters import get_adapter
from .media.audio import read_audio
from .media.video import read_video

ImageLike = Image.Image | str | os.PathLike
VideoLike = str | os.PathLike | Sequence[Image.Image] | Sequence[tuple[float, Image.Image]]
AudioLike = np.ndarray | str | os.PathLike


@dataclass
class GenerationResult:
    """What `generate` returns.

    Attributes
    ----------
    text:
        The decoded answer (special tokens skipped).
    token_ids:
        The generated ids only, `(num_new,)`.
    inputs:
        The model inputs the prompt was turned into (`input_ids`, media tensors, ...).
    report:
        `press.report` after generation, or `None` without a press.
    """

    text: str
    token_ids: torch.Tensor
    inputs: dict[str, torch.Tensor]
    report: Any | None = None


def generate(
    model: nn.Module,
    processor: Any,
    *,
    text: str,
    images: ImageLike | Sequence[ImageLike] | None = None,
    video: VideoLike | None = None,
    audio: AudioLike | Sequence[AudioLike] | None = None,
    press: Any | None = None,
    max_new_tokens: int = 32,
    video_fps: float = 1.0,
    video_size: tuple[int, int] | None = None,
    max_video_frames: int | None = None,
    **generate_kwargs: Any,
) -> GenerationResult:
    """Answer `text` about the given media, optionally inside `with press(model):`.

    Parameters
    ----------
    model:
        A model of a supported family (see `omnipress.adapters`). For the full Qwen2.5-Omni the thinker generates.
    processor:
        The model's `transformers` processor, or just its tokenizer (see the module docstring).
    images:
        PIL images or image paths.
    video:
        A video path (decoded with `omnipress.media.read_video` at `video_fps`, at most `max_video_frames`
        frames), a list of PIL frames (taken as sampled at `video_fps`), or `(seconds, frame)` pairs.
    audio:
        16 kHz mono float arrays or audio paths (decoded and resampled with `omnipress.media.read_audio`).
    press:
        An omnipress method (a press, or any `op.Method`), a list of methods (applied together with `op.compose`),
        or any callable with `press(model) -> context manager`. The `report` of the KV press among them is returned.
        `None` runs the untouched model.
    max_new_tokens, generate_kwargs:
        Passed to `model.generate`; decoding is greedy unless `do_sample` is given.
    video_size:
        `(height, width)` for the frames; `None` keeps the family processor's default sizing.

    Raises
    ------
    ValueError
        When the model's family does not accept a requested modality (the message lists what it accepts).
    """
    inputs = build_inputs(
        model,
        processor,
        text=text,
        images=images,
        video=video,
        audio=audio,
        video_fps=video_fps,
        video_size=video_size,
        max_video_frames=max_video_frames,
    )
    generator = get_adapter(model).generation_model
    generate_kwargs.setdefault("do_sample", False)
    methods = list(press) if isinstance(press, (list, tuple)) else [press] if press is not None else []
    if len(methods) > 1:
        from .core import compose

        press = compose(*methods)
    elif methods:
        press = methods[0]
    context = press(model) if press is not None else contextlib.nullcontext()
    with torch.no_grad(), context:
        output = generator.generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    sequences = output.sequences if hasattr(output, "sequences") else output
    new_ids = sequences[0, inputs["input_ids"].shape[1] :]
    answer = _tokenizer(processor).decode(new_ids, skip_special_tokens=True)
    report = next((m.report for m in methods if getattr(m, "report", None) is not None), None)
    return GenerationResult(text=answer, token_ids=new_ids, inputs=inputs, report=report)


def build_inputs(
    model: nn.Module,
    processor: Any,
    *,
    text: str,
    images: ImageLike | Sequence[ImageLike] | None = None,
    video: VideoLike | None = None,
    audio: AudioLike | Sequence[AudioLike] | None = None,
    video_fps: float = 1.0,
    video_size: tuple[int, int] | None = None,
    max_video_frames: int | None = None,
) -> dict[str, torch.Tensor]:
    """The model inputs (`input_ids`, `attention_mask`, media tensors) of one user turn; see `generate`."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    adapter = get_adapter(model)
    image_list = [_load_image(x) for x in _as_list(images, (Image.Image, str, os.PathLike))]
    clips = [_load_audio(x) for x in _as_list(audio, (np.ndarray, str, os.PathLike))]
    frames, times = _load_video(video, video_fps, max_video_frames) if video is not None else (None, None)
    requested = [m for m, given in (("image", image_list), ("video", frames), ("audio", clips)) if given]
    adapter.check_modalities(requested)

    content: list[dict[str, str]] = [{"type": "image"} for _ in image_list]
    content += [{"type": "video"}] if frames else []
    content += [{"type": "audio"} for _ in clips]
    # Text-only prompts use plain string content: text LLM chat templates (e.g. SmolLM2's) concatenate strings
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": text}] if content else text}]

    if _handles_natively(processor, requested):
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        kwargs: dict[str, Any] = {}
        if image_list:
            kwargs["images"] = image_list
        if frames:
            kwargs["videos"] = [frames]
        if clips:
            kwargs.update(audio=clips, sampling_rate=16000)
        return dict(processor(text=[prompt], return_tensors="pt", **kwargs))

    tokenizer = _tokenizer(processor)
    templater = processor if getattr(processor, "chat_template", None) else tokenizer
    prompt = templater.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return adapter.build_inputs(
        prompt_ids,
        tokenizer=tokenizer,
        images=image_list,
        video=frames,
        video_timestamps=times,
        video_size=video_size,
        audio=clips,
        image_processor=getattr(processor, "image_processor", None),
        feature_extractor=getattr(processor, "feature_extractor", None),
    )


def _handles_natively(processor: Any, requested: list[str]) -> bool:
    """Whether `processor` is a multimodal `transformers` processor able to take every requested modality."""
    from transformers import ProcessorMixin

    if not isinstance(processor, ProcessorMixin):
        return False
    needs = {"image": "image_processor", "video": "video_processor", "audio": "feature_extractor"}
    return all(getattr(processor, needs[m], None) is not None for m in requested)


def _tokenizer(processor: Any) -> Any:
    tokenizer = getattr(processor, "tokenizer", processor)
    if not callable(getattr(tokenizer, "apply_chat_template", None)):
        raise TypeError(f"{type(processor).__name__} is neither a processor with a tokenizer nor a tokenizer")
    return tokenizer


def _as_list(value: Any, single: tuple[type, ...]) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, single):
        return [value]
    return list(value)


def _load_image(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as opened:
        return opened.convert("RGB")


def _load_audio(clip: AudioLike) -> np.ndarray:
    if isinstance(clip, np.ndarray):
        if clip.ndim != 1:
            raise ValueError(f"audio arrays must be 1-D mono 16 kHz samples, got shape {clip.shape}")
        return clip.astype(np.float32, copy=False)
    return read_audio(clip, sampling_rate=16000)


def _load_video(video: VideoLike, fps: float, max_frames: int | None) -> tuple[list[Image.Image], list[float]]:
    if isinstance(video, (str, os.PathLike)):
        pairs = list(read_video(video, fps=fps, max_frames=max_frames))
    else:
        items = list(video)[:max_frames] if max_frames else list(video)
        if not items:
            raise ValueError("video has no frames")
        if all(isinstance(x, Image.Image) for x in items):
            pairs = [(i / fps, frame) for i, frame in enumerate(items)]
        elif all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], Image.Image) for x in items):
            pairs = [(float(t), frame) for t, frame in items]
        else:
            raise TypeError("video must be a path, a list of PIL frames or a list of (seconds, PIL frame) pairs")
    return [f.convert("RGB") for _, f in pairs], [t for t, _ in pairs]
