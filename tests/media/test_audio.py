"""read_audio against scipy on real speech; resampling; errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from omnipress.media import read_audio
from omnipress.testing import data_dir

SPEECH = data_dir() / "speech"


def _needs(path):
    if not path.is_file():
        pytest.skip(f"real speech {path} not present")
    return path


def test_16k_wav_is_read_exactly():
    from scipy.io import wavfile

    path = _needs(SPEECH / "harvard_01.wav")
    rate, samples = wavfile.read(path)
    assert rate == 16000 and samples.dtype == np.int16
    audio = read_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    np.testing.assert_array_equal(audio, samples.astype(np.float32) / 32768)


def test_48k_recorded_voice_is_resampled_to_16k():
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    path = _needs(SPEECH / "Front_Center.wav")
    rate, samples = wavfile.read(path)
    assert rate == 48000
    reference = resample_poly(samples.astype(np.float64) / 32768, 1, 3)
    audio = read_audio(path, sampling_rate=16000)
    assert abs(len(audio) - len(reference)) <= 64
    n = min(len(audio), len(reference))
    # same waveform up to filter details: near-perfect correlation, best at zero lag
    lags = range(-8, 9)
    corr = [np.corrcoef(audio[16 + k : n - 16 + k], reference[16 : n - 16])[0, 1] for k in lags]
    assert max(corr) > 0.98 and abs(list(lags)[int(np.argmax(corr))]) <= 2


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("nothing.wav")):
        read_audio(tmp_path / "nothing.wav")
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 50)
    with pytest.raises(ValueError, match=re.escape("noise.wav")):
        read_audio(bad)
    with pytest.raises(ValueError, match="sampling_rate"):
        read_audio(bad, sampling_rate=0)
