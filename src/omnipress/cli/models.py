"""The model and prompt a command runs on: a tiny built-in model, or a model folder (or hub id) and the user's media."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..extras import require
from ..model_source import is_offline_error
from .errors import CLIError
from .options import check_model_path

#: the question of a tiny model's prompt, by the first modality its family takes (text families: none)
QUESTIONS = {"image": "Describe the image.", "audio": "What does the speaker say?", "text": "Who wrote Hamlet?"}


def tiny_prompt(family: str, video_frames: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A tiny random-weight model of `family` (built from its config, no download) and a prompt with real media: a
    photograph where the family takes images, a speech clip for audio-only families, `video_frames` video frames."""
    from ..adapters import get_adapter
    from ..testing import MediaUnavailableError, tiny_inputs, tiny_model

    require("skimage", extra="demo", purpose="the built-in prompt's real photograph")
    model = tiny_model(family)
    question = QUESTIONS[next(iter(get_adapter(model).modalities), "text")]
    try:
        inputs = tiny_inputs(family, model, image=True, video_frames=video_frames, question=question)
    except (ValueError, MediaUnavailableError) as error:
        raise CLIError(f"cannot build the {family} prompt: {error}") from error
    return model, inputs


def load_model(path: str, *, gguf_file: str | None = None) -> tuple[torch.nn.Module, object]:
    """A supported model and its processor (or tokenizer) from a local folder, or a hub id where the hub is reachable.

    Vision/audio models load with `AutoModelForImageTextToText` (falling back to `AutoModelForCausalLM`); when no
    processor can be built (for example without torchvision), the tokenizer is used and omnipress builds the media
    inputs itself. Raises `CLIError` with one line saying why the model cannot be loaded.
    """
    import transformers as T

    from ..adapters import UnsupportedModelError, get_adapter

    source = _model_source(path, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        try:
            model = T.AutoModelForImageTextToText.from_pretrained(source, **kwargs)
        except (ValueError, KeyError):
            model = T.AutoModelForCausalLM.from_pretrained(source, **kwargs)
        try:
            processor = T.AutoProcessor.from_pretrained(source, **kwargs)
        except (OSError, ValueError, TypeError, AttributeError, ImportError):
            processor = T.AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise CLIError(_load_error(path, source, error)) from error
    try:
        get_adapter(model)
    except UnsupportedModelError as error:
        raise CLIError(str(error)) from error
    return model.eval(), processor


def user_prompt(
    model: torch.nn.Module,
    processor: object,
    *,
    text: str,
    images: Sequence[str] = (),
    video: str | None = None,
    audio: str | None = None,
) -> dict[str, torch.Tensor]:
    """The inputs of one chat turn with the user's media files; `CLIError` for media the model or reader refuses."""
    import sys
    import warnings

    from ..generation import build_inputs
    from ..media import TruncatedMediaWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncatedMediaWarning)
            inputs = build_inputs(model, processor, text=text, images=list(images) or None, video=video, audio=audio)
    except (ValueError, OSError) as error:
        raise CLIError(f"cannot build the prompt: {error}") from error
    for warning in caught:
        if issubclass(warning.category, TruncatedMediaWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return inputs


def read_text(path: str) -> str:
    """The text of a `--text-file`."""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CLIError(f"cannot read {path} as text: {error}") from error


def _model_source(path: str, gguf_file: str | None) -> str:
    """`path` as a local folder if it is one, else as a hub id; `CLIError` for a missing folder, file or extra."""
    check_model_path(path, gguf_file)
    if gguf_file:
        require("gguf", extra="real", purpose="loading a GGUF model")
        require("accelerate", extra="real", purpose="loading a GGUF model")
    local = Path(path).expanduser()
    return str(local) if local.is_dir() else path


def _load_error(path: str, source: str, error: Exception) -> str:
    """One line saying why `source` could not be loaded."""
    if not Path(source).is_dir() and is_offline_error(error):
        return (
            f"{path} is not a local folder, and it cannot be downloaded from the Hugging Face Hub: offline or the hub "
            "is unreachable (give a local model folder, or connect and retry)"
        )
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot load the model {path}: {first_line}"
