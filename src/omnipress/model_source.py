"""Where model weights come from (a local folder or a Hugging Face hub id), with errors that say which went wrong.

Shared by the CLI and the EEG application; imports neither torch nor transformers at module level.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def check_device(device: str) -> str:
    """`device` if torch can place tensors there; `ValueError` naming the device otherwise (no CUDA, a typo)."""
    import torch

    try:
        torch.zeros(1).to(device)
    except (RuntimeError, AssertionError) as err:  # torch says "not compiled with CUDA" with an AssertionError
        raise ValueError(f"device {device!r} is not available here: {str(err).strip().splitlines()[0]}") from err
    return device


def model_source(spec: str | Path, *, what: str) -> str:
    """`spec` as given to ``from_pretrained``: an existing local folder, or something that can only be a hub id.

    Raises
    ------
    FileNotFoundError
        `spec` is a path (absolute, relative with ``./``, ``~``, or not a valid hub id) and no such folder exists.
    NotADirectoryError
        `spec` is a file, not a folder.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{what} {text} is a file; expected a folder written by save_pretrained")
        return str(path)
    if text.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(text):
        raise FileNotFoundError(f"{what} folder {text} does not exist")
    return text


def load_error(source: str, *, what: str, error: OSError) -> OSError:
    """A one-line error for a failed ``from_pretrained(source)``: the local folder's problem, or why the hub failed."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if Path(source).is_dir():
        return OSError(f"cannot load {what} from {source}: {first}")
    if not is_offline_error(error):
        return OSError(f"{what} {source!r} is not a local folder, and the Hugging Face hub gave: {first}")
    offline = [v for v in _OFFLINE_VARS if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
    why = f"nothing can be downloaded offline ({offline[0]} is set)" if offline else "the hub cannot be reached"
    return OSError(
        f"{what} {source!r} is not a local folder and not in the Hugging Face cache, and {why}: pass a local folder "
        "(written by save_pretrained)"
    )


def is_offline_error(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says the hub files are neither cached nor reachable."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
