"""The progress bar every EEG stage shows (tqdm, from the ``eeg`` extra)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omnipress.extras import require


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
) -> Any:
    """A tqdm bar over `iterable` (or one updated by hand up to `total`); ``enabled=False`` draws nothing.

    Raises
    ------
    MissingExtraError
        tqdm is not installed (the message names the ``eeg`` extra).
    """
    tqdm = require("tqdm.auto", extra="eeg", purpose="progress bars").tqdm
    return tqdm(iterable, total=total, disable=not enabled, desc=desc, unit=unit, dynamic_ncols=True)


__all__ = ["progress_bar"]
