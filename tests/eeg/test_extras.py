"""A missing optional dependency names the extra that installs it, in Python and on the command line."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from omnipress.eeg.cli import main
from omnipress.extras import MissingExtraError

INSTALL = 'pip install "omnipress[eeg]"'


def uninstall(patch: pytest.MonkeyPatch, top: str) -> None:
    """Make `import <top>` (and its submodules) fail as if the package were not installed, until `patch` undoes it."""
    for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        patch.setitem(sys.modules, name, None)
    patch.setitem(sys.modules, top, None)


def _window() -> tuple[np.ndarray, list[str], float]:
    from omnipress.eeg.montage import pair_names

    return np.random.default_rng(0).normal(0, 20, (18, 1024)), pair_names(), 256.0


def test_each_eeg_dependency_names_the_eeg_extra(synth_cohort, tmp_path):
    from omnipress.eeg.backends.http import OpenAIChatBackend
    from omnipress.eeg.baselines import make_model
    from omnipress.eeg.io import read_recording
    from omnipress.eeg.prepare import prepare
    from omnipress.eeg.preprocess import bandpass
    from omnipress.eeg.render import RenderConfig, Renderer
    from omnipress.eeg.synth import write_edf

    edf = synth_cohort / "p01_r01.edf"
    cases = {
        "mne": lambda: read_recording(edf),
        "edfio": lambda: write_edf(tmp_path / "x.edf", np.zeros((1, 1000)), ["Cz"], 100.0, []),
        "matplotlib": lambda: Renderer(RenderConfig(kind="vlm", size=64)).render(*_window()),
        "sklearn": lambda: make_model("logreg"),
        "scipy": lambda: bandpass(np.zeros((2, 2560)), 256.0, 0.5, 40.0),
        "tqdm": lambda: prepare(edf, None, progress=True),
        "httpx": lambda: OpenAIChatBackend("http://127.0.0.1:8000/v1", "m"),
    }
    for module, call in cases.items():
        with pytest.MonkeyPatch.context() as patch:
            uninstall(patch, module)
            with pytest.raises(MissingExtraError) as info:
                call()
        assert f"needs the `{module}` package: {INSTALL}" in str(info.value), module
        assert info.value.name == module


def test_the_cli_says_which_extra_to_install(monkeypatch, synth_cohort, tmp_path, capsys):
    uninstall(monkeypatch, "mne")
    assert main(["prepare", str(synth_cohort / "p01_r01.edf"), "--out", str(tmp_path / "w"), "--quiet"]) == 1
    assert capsys.readouterr().err == f"error: reading EDF/BDF files needs the `mne` package: {INSTALL}\n"
