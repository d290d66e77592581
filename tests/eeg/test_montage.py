from __future__ import annotations

import numpy as np
import pytest

from omnipress.eeg.io import Recording
from omnipress.eeg.montage import (
    CLINICAL_PAIRS,
    DOUBLE_BANANA,
    ELECTRODES_1020,
    bipolar_from_referential,
    bipolar_montage,
    canonical_electrode,
    canonical_pair,
    pair_names,
)

OLD_NAMES = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}


def _referential(names: list[str], n: int = 300, seed: int = 0) -> tuple[Recording, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 30, (len(names), n)).astype(np.float32)
    rec = Recording("p1", "p1_r1", data, names, 256.0)
    return rec, {name: data[i] for i, name in enumerate(names)}


def test_canonical_names():
    assert canonical_electrode("EEG T3-REF") == "T7"
    assert canonical_electrode("T5-LE") == "P7"
    assert canonical_electrode("fp1") == "Fp1"
    assert canonical_electrode(" FZ ") == "Fz"
    assert canonical_electrode("T6") == "P8"
    assert canonical_electrode("ECG") is None
    assert canonical_electrode("FP1-F7") is None
    assert canonical_pair("FP1-F7") == ("Fp1", "F7")
    assert canonical_pair("T8-P8-0") == ("T8", "P8")
    assert canonical_pair("EEG T3-T5") == ("T7", "P7")
    assert canonical_pair("EEG FP1-REF") is None
    assert canonical_pair("ECG-1") is None


def test_double_banana_order():
    assert len(DOUBLE_BANANA) == 18 and DOUBLE_BANANA[0] == "Fp2-F4" and DOUBLE_BANANA[-1] == "Cz-Pz"
    assert pair_names("clinical")[:4] == ["Fp1-F7", "F7-T7", "T7-P7", "P7-O1"]
    assert sorted(pair_names("clinical")) == sorted(DOUBLE_BANANA)
    with pytest.raises(ValueError, match="montage order"):
        pair_names("banana")


def test_montage_from_old_names_equals_hand_differences():
    # old 10-20 names, TUH-style labels, shuffled order, plus non-EEG channels that must be ignored
    labels = [f"EEG {OLD_NAMES.get(e, e).upper()}-REF" for e in ELECTRODES_1020] + ["ECG", "EEG A1-REF"]
    order = np.random.default_rng(1).permutation(len(labels))
    labels = [labels[i] for i in order]
    rec, ref = _referential(labels)
    out = bipolar_montage(rec)
    assert out.channels == DOUBLE_BANANA
    assert out.data.shape == (18, 300) and out.data.dtype == np.float32
    hand = {
        "Fp2-F4": ref["EEG FP2-REF"] - ref["EEG F4-REF"],
        "F4-C4": ref["EEG F4-REF"] - ref["EEG C4-REF"],
        "C4-P4": ref["EEG C4-REF"] - ref["EEG P4-REF"],
        "P4-O2": ref["EEG P4-REF"] - ref["EEG O2-REF"],
        "Fp1-F3": ref["EEG FP1-REF"] - ref["EEG F3-REF"],
        "F3-C3": ref["EEG F3-REF"] - ref["EEG C3-REF"],
        "C3-P3": ref["EEG C3-REF"] - ref["EEG P3-REF"],
        "P3-O1": ref["EEG P3-REF"] - ref["EEG O1-REF"],
        "Fp2-F8": ref["EEG FP2-REF"] - ref["EEG F8-REF"],
        "F8-T8": ref["EEG F8-REF"] - ref["EEG T4-REF"],
        "T8-P8": ref["EEG T4-REF"] - ref["EEG T6-REF"],
        "P8-O2": ref["EEG T6-REF"] - ref["EEG O2-REF"],
        "Fp1-F7": ref["EEG FP1-REF"] - ref["EEG F7-REF"],
        "F7-T7": ref["EEG F7-REF"] - ref["EEG T3-REF"],
        "T7-P7": ref["EEG T3-REF"] - ref["EEG T5-REF"],
        "P7-O1": ref["EEG T5-REF"] - ref["EEG O1-REF"],
        "Fz-Cz": ref["EEG FZ-REF"] - ref["EEG CZ-REF"],
        "Cz-Pz": ref["EEG CZ-REF"] - ref["EEG PZ-REF"],
    }
    for i, name in enumerate(out.channels):
        np.testing.assert_array_equal(out.data[i], hand[name])
    clinical = bipolar_montage(rec, order="clinical")
    assert clinical.channels == [f"{a}-{b}" for a, b in CLINICAL_PAIRS]
    np.testing.assert_array_equal(clinical.data[1], hand["F7-T7"])


def test_montage_from_bipolar_file_chbmit_style():
    names = [p.upper() for p in DOUBLE_BANANA]
    names[names.index("F8-T8")] = "T8-F8"  # stored the other way round -> negated
    names[names.index("T8-P8")] = "T8-P8-0"  # MNE's renamed duplicate
    rec, ref = _referential([*names, "T8-P8-1", "-"])
    out = bipolar_montage(rec)
    np.testing.assert_array_equal(out.data[DOUBLE_BANANA.index("F8-T8")], -ref["T8-F8"])
    np.testing.assert_array_equal(out.data[DOUBLE_BANANA.index("T8-P8")], ref["T8-P8-0"])
    np.testing.assert_array_equal(out.data[DOUBLE_BANANA.index("Fp1-F7")], ref["FP1-F7"])


def test_missing_channel_is_named():
    names = [e for e in ELECTRODES_1020 if e != "T8"] + ["ECG"]
    rec, _ = _referential(names)
    with pytest.raises(ValueError) as err:
        bipolar_montage(rec)
    message = str(err.value)
    assert "p1_r1" in message and "'T8'" in message
    assert "F8-T8" in message and "T8-P8" in message and "ECG" in message
    assert "Fp1-F7" not in message.split("(electrodes")[0]


def test_bipolar_from_referential_pure():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(3, 10))
    out = bipolar_from_referential(data, ["A", "B", "C"], [("A", "B"), ("C", "A")])
    np.testing.assert_array_equal(out, np.stack([data[0] - data[1], data[2] - data[0]]))
    with pytest.raises(ValueError, match="missing electrodes"):
        bipolar_from_referential(data, ["A", "B", "C"], [("A", "D")])
