"""Handcrafted signal features of EEG windows, vectorised over windows and channels.

Per channel: log band powers (delta 0.5-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz, Welch PSD with 2-s
Hann segments, 50 % overlap), relative band powers, log line length, excess kurtosis, normalised spectral entropy
(0.5-45 Hz) and log variance. Each is summarised over channels by mean, std, max and min, so the feature vector has
a fixed length (`FEATURE_NAMES`) for any montage. Three synchrony features come from the channel correlation
matrix: mean and max absolute pairwise correlation, and the share of the largest eigenvalue.

These are the classical baselines' inputs (`omnipress.eeg.baselines`) and an offline substitute for CLIP
embeddings in retrieval.
"""

from __future__ import annotations

import numpy as np

from omnipress.extras import require

BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
SPECTRUM_RANGE = (0.5, 45.0)
CHANNEL_FEATURES: list[str] = [
    *(f"log_power_{b}" for b in BANDS),
    *(f"rel_power_{b}" for b in BANDS),
    "log_line_length",
    "kurtosis",
    "spectral_entropy",
    "log_variance",
]
AGGREGATES = ("mean", "std", "max", "min")
SYNCHRONY_FEATURES = ["corr_mean_abs", "corr_max_abs", "corr_top_eigen_share"]
FEATURE_NAMES: list[str] = [f"{f}_{a}" for f in CHANNEL_FEATURES for a in AGGREGATES] + SYNCHRONY_FEATURES
_EPS = 1e-12


def welch_psd(data: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD along the last axis: 2-s Hann segments (or the whole window if shorter), 50 % overlap, mean removed
    per segment, one-sided density in µV²/Hz (the same as ``scipy.signal.welch`` with these settings, computed in
    the input precision).

    Returns ``(freqs, psd)`` with ``psd`` of shape ``data.shape[:-1] + (n_freqs,)``.
    """
    nperseg = min(data.shape[-1], round(2 * sfreq))
    step = max(nperseg // 2, 1)
    n_segments = (data.shape[-1] - nperseg) // step + 1
    segments = np.lib.stride_tricks.sliding_window_view(data, nperseg, axis=-1)[..., ::step, :][..., :n_segments, :]
    signal = require("scipy.signal", extra="eeg", purpose="EEG signal features")
    window = signal.get_window("hann", nperseg).astype(data.dtype)
    segments = (segments - segments.mean(axis=-1, keepdims=True)) * window  # (..., n_segments, nperseg)
    spectrum = np.abs(np.fft.rfft(segments, axis=-1)) ** 2
    psd = spectrum.mean(axis=-2) / (sfreq * float((window**2).sum()))  # (..., n_freqs)
    psd[..., 1 : None if nperseg % 2 else -1] *= 2  # one-sided: double all but DC (and Nyquist for even lengths)
    return np.fft.rfftfreq(nperseg, 1 / sfreq), psd


def channel_features(data: np.ndarray, sfreq: float) -> np.ndarray:
    """Per-channel features ``(n, n_channels, len(CHANNEL_FEATURES))`` float64 of windows ``(n, n_channels, T)``."""
    x = np.asarray(data, dtype=np.float64)
    freqs, psd = welch_psd(x, sfreq)  # (n, C, F)
    df = freqs[1] - freqs[0]
    nyquist = sfreq / 2
    band_power = []
    for lo, hi in BANDS.values():
        mask = (freqs >= lo) & (freqs < min(hi, nyquist))
        band_power.append(psd[..., mask].sum(axis=-1) * df)
    band_power = np.stack(band_power, axis=-1)  # (n, C, 5)
    in_range = (freqs >= SPECTRUM_RANGE[0]) & (freqs < min(SPECTRUM_RANGE[1], nyquist))
    spectrum = psd[..., in_range]  # (n, C, F')
    total = spectrum.sum(axis=-1)  # (n, C)
    safe_total = np.where(total > 0, total, 1.0)
    relative = band_power / (safe_total[..., None] * df)
    relative = np.where(total[..., None] > 0, relative, 0.0)
    p = spectrum / safe_total[..., None]
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1) / np.log(max(spectrum.shape[-1], 2))

    line_length = np.abs(np.diff(x, axis=-1)).mean(axis=-1)  # (n, C)
    centred = x - x.mean(axis=-1, keepdims=True)
    squared = centred * centred
    m2 = squared.mean(axis=-1)
    m4 = (squared * squared).mean(axis=-1)  # (x * x)**2: integer powers > 2 take numpy's slow pow() path
    kurtosis = np.where(m2 > 0, m4 / np.where(m2 > 0, m2, 1.0) ** 2 - 3.0, 0.0)
    return np.concatenate(
        [
            np.log10(band_power + _EPS),
            relative,
            np.log10(line_length + _EPS)[..., None],
            kurtosis[..., None],
            entropy[..., None],
            np.log10(m2 + _EPS)[..., None],
        ],
        axis=-1,
    )  # (n, C, 14)


def synchrony_features(data: np.ndarray) -> np.ndarray:
    """Mean/max absolute inter-channel correlation and top-eigenvalue share, ``(n, 3)`` float64."""
    x = np.asarray(data, dtype=np.float64)
    n, c, t = x.shape
    if c < 2:
        return np.zeros((n, 3))
    centred = x - x.mean(axis=-1, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=-1, keepdims=True))
    z = np.where(std > 0, centred / np.where(std > 0, std, 1.0), 0.0)
    corr = z @ z.transpose(0, 2, 1) / t  # (n, C, C)
    iu = np.triu_indices(c, k=1)
    pairs = np.abs(corr[:, iu[0], iu[1]])  # (n, C*(C-1)/2)
    eig = np.linalg.eigvalsh(corr)  # (n, C) ascending
    trace = np.trace(corr, axis1=1, axis2=2)
    share = np.where(trace > 0, eig[:, -1] / np.where(trace > 0, trace, 1.0), 0.0)
    return np.stack([pairs.mean(axis=1), pairs.max(axis=1), share], axis=1)


def signal_features(data: np.ndarray, sfreq: float, *, batch_size: int = 512) -> np.ndarray:
    """Feature vectors of EEG windows, one row per window, columns named by `FEATURE_NAMES`.

    Parameters
    ----------
    data : np.ndarray
        ``(n_windows, n_channels, n_samples)`` microvolts (a memory map is fine: it is read in batches).
    sfreq : float
        Sampling rate in Hz.
    batch_size : int
        Windows processed at once (bounds memory).

    Returns
    -------
    np.ndarray
        ``(n_windows, len(FEATURE_NAMES))`` float32.
    """
    if data.ndim != 3:
        raise ValueError(f"signal_features expects (n_windows, n_channels, n_samples), got shape {data.shape}")
    if not sfreq > 0:
        raise ValueError(f"sampling rate must be positive, got {sfreq}")
    if data.shape[-1] < 8:
        raise ValueError(f"windows of {data.shape[-1]} samples are too short for spectral features")
    out = np.empty((data.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    for begin in range(0, data.shape[0], batch_size):
        chunk = np.asarray(data[begin : begin + batch_size], dtype=np.float64)  # (b, C, T)
        per_channel = channel_features(chunk, sfreq)  # (b, C, 14)
        summary = np.stack(
            [per_channel.mean(axis=1), per_channel.std(axis=1), per_channel.max(axis=1), per_channel.min(axis=1)],
            axis=-1,
        )  # (b, 14, 4) -> flattened feature-major, matching FEATURE_NAMES
        out[begin : begin + len(chunk)] = np.concatenate(
            [summary.reshape(len(chunk), -1), synchrony_features(chunk)], axis=1
        )
    return out
