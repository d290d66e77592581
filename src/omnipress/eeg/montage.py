"""The 18-channel bipolar longitudinal ("double banana") montage.

RAICL (arXiv:2601.17844) draws 18 bipolar derivations of the international 10-20 system. This module builds them
from whatever a file holds: referential channels (``Fp1``, ``EEG FP1-REF``, ``FP1-LE``, old names ``T3/T4/T5/T6``
for ``T7/T8/P7/P8``) or bipolar channels that are already there (CHB-MIT's ``FP1-F7``, ``T8-P8-0``). Output channel
names always use the new 10-20 names (``"F7-T7"``).

Default order is RAICL's (right parasagittal, left parasagittal, right temporal, left temporal, midline);
``order="clinical"`` gives the left-before-right order of CHB-MIT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from omnipress.eeg.io import Recording

# The 19 electrodes of the 10-20 system, new (10-10) names.
ELECTRODES_1020: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip
OLD_TO_NEW: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
NEW_TO_OLD: dict[str, str] = {new: old for old, new in OLD_TO_NEW.items()}

# RAICL order (released VLM4EEG code): right parasagittal, left parasagittal, right temporal, left temporal, midline.
RAICL_PAIRS: tuple[tuple[str, str], ...] = (
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("Fp2", "F8"), ("F8", "T8"), ("T8", "P8"), ("P8", "O2"),
    ("Fp1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"),
    ("Fz", "Cz"), ("Cz", "Pz"),
)  # fmt: skip
# Clinical / CHB-MIT order: left temporal, left parasagittal, right parasagittal, right temporal, midline.
CLINICAL_PAIRS: tuple[tuple[str, str], ...] = (
    ("Fp1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"),
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
    ("Fp2", "F8"), ("F8", "T8"), ("T8", "P8"), ("P8", "O2"),
    ("Fz", "Cz"), ("Cz", "Pz"),
)  # fmt: skip
ORDERS = {"raicl": RAICL_PAIRS, "clinical": CLINICAL_PAIRS}
DOUBLE_BANANA: list[str] = [f"{a}-{b}" for a, b in RAICL_PAIRS]

_CANONICAL = {name.upper(): name for name in ELECTRODES_1020} | {old: new for old, new in OLD_TO_NEW.items()}
_REFERENCE_SUFFIX = re.compile(r"[-_ ]?(REF|LE|AR|AVG|AV|CAR|A1A2|M1M2)$")
_PREFIX = re.compile(r"^(EEG|EEG_)\s*")


def old_channel_names(channels: Sequence[str]) -> list[str]:
    """Channel names with the old 10-20 electrode names (``"F8-T8"`` -> ``"F8-T4"``, ``"T8-P8"`` -> ``"T4-T6"``).

    Each ``-``-separated part that is T7/T8/P7/P8 (any case) is renamed; everything else is kept as it is.
    """
    out = []
    for name in channels:
        parts = str(name).split("-")
        out.append("-".join(NEW_TO_OLD.get(_CANONICAL.get(p.upper(), p), p) for p in parts))
    return out


def pair_names(order: str = "raicl") -> list[str]:
    """Names of the 18 derivations (``"Fp2-F4"``, ...) in ``order`` (``"raicl"`` or ``"clinical"``)."""
    return [f"{a}-{b}" for a, b in _pairs(order)]


def _pairs(order: str) -> tuple[tuple[str, str], ...]:
    if order not in ORDERS:
        raise ValueError(f"unknown montage order {order!r}; expected one of {sorted(ORDERS)}")
    return ORDERS[order]


def _clean(name: str) -> str:
    name = name.strip().upper()
    name = _PREFIX.sub("", name).strip()
    return name.replace(" ", "")


def canonical_electrode(name: str) -> str | None:
    """The 10-20 electrode a referential channel name refers to, in new naming; ``None`` if it is not one.

    >>> canonical_electrode("EEG T3-REF"), canonical_electrode("fp1"), canonical_electrode("ECG")
    ('T7', 'Fp1', None)
    """
    base = _REFERENCE_SUFFIX.sub("", _clean(name))
    return _CANONICAL.get(base)


def canonical_pair(name: str) -> tuple[str, str] | None:
    """The two 10-20 electrodes of a bipolar channel name (``"FP1-F7"``, ``"T8-P8-0"``), else ``None``."""
    parts = [p for p in re.split(r"-", _clean(name)) if p]
    if len(parts) == 3 and parts[2].isdigit():  # MNE renames duplicate channels "T8-P8-0", "T8-P8-1"
        parts = parts[:2]
    if len(parts) != 2:
        return None
    a, b = _CANONICAL.get(parts[0]), _CANONICAL.get(parts[1])
    if a is None or b is None:
        return None
    return a, b


def bipolar_from_referential(
    data: np.ndarray, channels: Sequence[str], pairs: Sequence[tuple[str, str]] = RAICL_PAIRS
) -> np.ndarray:
    """Bipolar derivations ``data[anode] - data[cathode]`` from referential channels already named canonically.

    Parameters
    ----------
    data : np.ndarray
        ``(n_channels, n_samples)`` referential signals.
    channels : sequence of str
        Canonical electrode name of each row (as returned by `canonical_electrode`).
    pairs : sequence of (anode, cathode)
        Derivations to build.

    Returns
    -------
    np.ndarray
        ``(len(pairs), n_samples)``, same dtype as ``data``.
    """
    index = {name: i for i, name in enumerate(channels)}
    missing = sorted({e for pair in pairs for e in pair if e not in index})
    if missing:
        raise ValueError(f"missing electrodes {missing}; available: {list(channels)}")
    anode = np.array([index[a] for a, _ in pairs])
    cathode = np.array([index[b] for _, b in pairs])
    return data[anode] - data[cathode]  # (n_pairs, n_samples)


def bipolar_montage(recording: Recording, *, order: str = "raicl") -> Recording:
    """The recording re-expressed in the 18-channel double-banana montage.

    Each derivation is taken from referential channels when both electrodes are present (old and new 10-20 names,
    reference suffixes such as ``-REF``/``-LE`` stripped), otherwise from a bipolar channel of the same name already
    in the file (negated if it is stored the other way round). Extra channels (ECG, mastoids, ...) are ignored.

    Raises
    ------
    ValueError
        Naming every derivation that cannot be built, the electrodes it lacks, and the channels the file has.
    """
    pairs = _pairs(order)
    referential: dict[str, int] = {}
    bipolar: dict[tuple[str, str], int] = {}
    for i, name in enumerate(recording.channels):
        electrode = canonical_electrode(name)
        if electrode is not None:
            referential.setdefault(electrode, i)
            continue
        pair = canonical_pair(name)
        if pair is not None:
            bipolar.setdefault(pair, i)

    rows: list[np.ndarray] = []
    missing: list[str] = []
    for a, b in pairs:
        if a in referential and b in referential:
            rows.append(recording.data[referential[a]] - recording.data[referential[b]])
        elif (a, b) in bipolar:
            rows.append(recording.data[bipolar[(a, b)]])
        elif (b, a) in bipolar:
            rows.append(-recording.data[bipolar[(b, a)]])
        else:
            missing.append(f"{a}-{b}")
    if missing:
        absent = sorted({e for m in missing for e in m.split("-") if e not in referential}, key=ELECTRODES_1020.index)
        raise ValueError(
            f"recording {recording.recording!r}: cannot build the double-banana montage: missing derivations "
            f"{missing} (electrodes not found: {absent}); channels in the file: {list(recording.channels)}"
        )
    data = np.stack(rows).astype(np.float32, copy=False)  # (18, n_samples)
    return replace(recording, data=data, channels=[f"{a}-{b}" for a, b in pairs])
