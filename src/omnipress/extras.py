"""Optional dependencies: import them by name, or say which extra installs them.

    av = require("av", extra="media", purpose="reading video")

raises `MissingExtraError` ("reading video needs the `av` package: pip install "omnipress[media]"") instead of a
bare `ModuleNotFoundError` deep in a stack.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: the extra that installs each optional top-level module
EXTRA_OF = {
    "av": "media",
    "skimage": "demo",
    "mne": "eeg",
    "edfio": "eeg",
    "matplotlib": "eeg",
    "sklearn": "eeg",
    "scipy": "eeg",
    "tqdm": "eeg",
    "httpx": "eeg",
    "gguf": "real",
    "accelerate": "real",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, *, extra: str | None = None, purpose: str = "this feature") -> ModuleType:
    """Import `module` (e.g. `"av"` or `"sklearn.linear_model"`), or raise `MissingExtraError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the module exists but one of its own dependencies is broken: show the real error
        name = extra or EXTRA_OF.get(top, "all")
        raise MissingExtraError(
            f'{purpose} needs the `{top}` package: pip install "omnipress[{name}]"', name=top
        ) from error
