from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from omnipress.eeg.features import BANDS, FEATURE_NAMES, signal_features, welch_psd


def _reference_psd(x: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch by hand for one 1-D trace: 2-s periodic-Hann segments, 50 % overlap, mean removed, one-sided."""
    nperseg = min(len(x), round(2 * sfreq))
    step = nperseg // 2
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nperseg) / nperseg)
    spectra = []
    for begin in range(0, len(x) - nperseg + 1, step):
        seg = x[begin : begin + nperseg]
        seg = (seg - seg.mean()) * window
        spectra.append(np.abs(np.fft.rfft(seg)) ** 2 / (sfreq * np.sum(window**2)))
    psd = np.mean(spectra, axis=0)
    if nperseg % 2 == 0:
        psd[1:-1] *= 2  # all but DC and Nyquist
    else:
        psd[1:] *= 2
    return np.fft.rfftfreq(nperseg, 1 / sfreq), psd


def _reference_features(window: np.ndarray, sfreq: float) -> np.ndarray:
    """Brute force, one window (channels, samples) -> feature vector in FEATURE_NAMES order."""
    per_channel = []
    for x in window.astype(np.float64):
        freqs, psd = _reference_psd(x, sfreq)
        df = freqs[1] - freqs[0]
        powers = [sum(p for f, p in zip(freqs, psd) if lo <= f < min(hi, sfreq / 2)) * df for lo, hi in BANDS.values()]
        spectrum = [p for f, p in zip(freqs, psd) if 0.5 <= f < min(45.0, sfreq / 2)]
        total = sum(spectrum)
        rel = [p / (total * df) if total > 0 else 0.0 for p in powers]
        probs = [p / total for p in spectrum] if total > 0 else [0.0] * len(spectrum)
        entropy = -sum(p * np.log(p) for p in probs if p > 0) / np.log(len(spectrum))
        line_length = np.mean(np.abs(np.diff(x)))
        var = np.var(x)
        kurt = np.mean((x - x.mean()) ** 4) / var**2 - 3 if var > 0 else 0.0
        row = [np.log10(p + 1e-12) for p in powers] + rel
        row += [np.log10(line_length + 1e-12), kurt, entropy, np.log10(var + 1e-12)]
        per_channel.append(row)
    per_channel = np.array(per_channel)  # (C, 14)
    stats = np.stack([per_channel.mean(0), per_channel.std(0), per_channel.max(0), per_channel.min(0)], axis=1)
    usable = [i for i in range(len(window)) if np.std(window[i]) > 0]
    corr = np.zeros((len(window), len(window)))
    corr[np.ix_(usable, usable)] = np.corrcoef(window[usable].astype(np.float64))
    pairs = [abs(corr[i, j]) for i in range(len(window)) for j in range(i + 1, len(window))]
    eig = np.linalg.eigvalsh(corr)
    synchrony = [np.mean(pairs), np.max(pairs), eig[-1] / np.trace(corr)]
    return np.concatenate([stats.reshape(-1), synchrony])


@pytest.mark.parametrize("sfreq, n_samples", [(256.0, 1024), (64.0, 128), (250.0, 1000)])
def test_features_match_brute_force(sfreq, n_samples):
    rng = np.random.default_rng(0)
    t = np.arange(n_samples) / sfreq
    data = rng.normal(0, 20, (7, 5, n_samples)) + 50 * np.sin(2 * np.pi * 3 * t)
    data[2, 1] = 0.0  # a flat channel must give finite features
    data[3] += np.cumsum(rng.normal(0, 5, n_samples))
    data = data.astype(np.float32)
    fast = signal_features(data, sfreq, batch_size=3)
    assert fast.shape == (7, len(FEATURE_NAMES)) and fast.dtype == np.float32
    assert np.isfinite(fast).all()
    brute = np.stack([_reference_features(w, sfreq) for w in data])
    np.testing.assert_allclose(fast, brute, rtol=1e-4, atol=1e-4)


def test_welch_equals_scipy():
    x = np.random.default_rng(1).normal(size=(4, 3, 1024))
    freqs, psd = welch_psd(x, 256.0)
    ref_f, ref = signal.welch(x, fs=256.0, nperseg=512, noverlap=256, axis=-1)
    np.testing.assert_allclose(freqs, ref_f)
    np.testing.assert_allclose(psd, ref, rtol=1e-10)


def test_features_capture_rhythm_and_synchrony():
    sfreq, t = 256.0, np.arange(1024) / 256.0
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 10, (1, 18, 1024))
    rhythmic = noise + 100 * np.sin(2 * np.pi * 3 * t)
    feats = signal_features(np.concatenate([noise, rhythmic]), sfreq)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    assert feats[1, col["rel_power_delta_mean"]] > 0.8 > feats[0, col["rel_power_delta_mean"]]
    assert feats[1, col["spectral_entropy_mean"]] < feats[0, col["spectral_entropy_mean"]]
    assert feats[1, col["corr_mean_abs"]] > 0.9 > 0.2 > feats[0, col["corr_mean_abs"]]
    assert feats[1, col["corr_top_eigen_share"]] > 0.9


def test_feature_errors():
    with pytest.raises(ValueError, match="n_windows, n_channels, n_samples"):
        signal_features(np.zeros((3, 100)), 100.0)
    with pytest.raises(ValueError, match="too short"):
        signal_features(np.zeros((1, 2, 4)), 100.0)
    with pytest.raises(ValueError, match="positive"):
        signal_features(np.zeros((1, 2, 100)), 0.0)
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 14 * 4 + 3
