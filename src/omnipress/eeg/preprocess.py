"""Filtering and resampling of continuous EEG (pure array functions plus a `Recording` wrapper).

RAICL's released code does not show its preprocessing, so the defaults here are the usual
clinical ones: zero-phase 4th-order Butterworth band-pass 0.5-40 Hz, optional 50/60 Hz notch, polyphase
resampling to 256 Hz (the Helsinki/NICU rate of the paper; CHSZ used 250 Hz).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from omnipress.extras import require

if TYPE_CHECKING:
    from omnipress.eeg.io import Recording


def bandpass(data: np.ndarray, sfreq: float, low: float | None, high: float | None, *, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass (or high-/low-pass when one edge is ``None``) along the last axis.

    Returns float64 data of the same shape. Raises ValueError when an edge is not inside ``(0, sfreq / 2)``.
    """
    nyquist = sfreq / 2
    for name, edge in (("lower", low), ("upper", high)):
        if edge is not None and not 0 < edge < nyquist:
            raise ValueError(f"band {name} edge {edge} Hz must lie in (0, {nyquist:g}) Hz (Nyquist of {sfreq:g} Hz)")
    if low is not None and high is not None and low >= high:
        raise ValueError(f"band lower edge {low} Hz must be below the upper edge {high} Hz")
    if low is None and high is None:
        return np.asarray(data, dtype=np.float64)
    signal = _signal()
    if low is None:
        sos = signal.butter(order, high, btype="lowpass", fs=sfreq, output="sos")
    elif high is None:
        sos = signal.butter(order, low, btype="highpass", fs=sfreq, output="sos")
    else:
        sos = signal.butter(order, (low, high), btype="bandpass", fs=sfreq, output="sos")
    _check_length(data, sfreq)
    return signal.sosfiltfilt(sos, np.asarray(data, dtype=np.float64), axis=-1)


def notch(data: np.ndarray, sfreq: float, freq: float, *, quality: float = 30.0) -> np.ndarray:
    """Zero-phase IIR notch at ``freq`` Hz (mains interference) along the last axis; float64 out."""
    if not 0 < freq < sfreq / 2:
        raise ValueError(f"notch frequency {freq} Hz must lie in (0, {sfreq / 2:g}) Hz")
    signal = _signal()
    b, a = signal.iirnotch(freq, quality, fs=sfreq)
    _check_length(data, sfreq)
    return signal.filtfilt(b, a, np.asarray(data, dtype=np.float64), axis=-1)


def resample(data: np.ndarray, sfreq: float, target: float) -> tuple[np.ndarray, float]:
    """Polyphase resampling along the last axis to (a rational approximation of) ``target`` Hz.

    Returns ``(data, new_sfreq)``; ``new_sfreq`` is exactly ``sfreq * up / down``, equal to ``target`` whenever the
    ratio is a fraction with a denominator up to 1000 (all usual EEG rates).
    """
    if not target > 0:
        raise ValueError(f"target sampling rate must be positive, got {target}")
    ratio = Fraction(target / sfreq).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(data), float(sfreq)
    out = _signal().resample_poly(np.asarray(data, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return out, float(sfreq * ratio.numerator / ratio.denominator)


def _signal():
    return require("scipy.signal", extra="eeg", purpose="filtering EEG")


def _check_length(data: np.ndarray, sfreq: float) -> None:
    if data.shape[-1] < 3 * sfreq:
        raise ValueError(f"recording too short to filter: {data.shape[-1]} samples (< 3 s at {sfreq:g} Hz)")


def preprocess(
    recording: Recording,
    *,
    band: tuple[float | None, float | None] | None = (0.5, 40.0),
    notch_freq: float | None = None,
    sfreq: float | None = 256.0,
) -> Recording:
    """Band-pass, notch and resample a recording (in that order, at the native rate before resampling).

    Parameters
    ----------
    band : (low, high) or None
        Pass band in Hz; ``None`` (or ``(None, None)``) skips it; one ``None`` edge gives a high-/low-pass.
    notch_freq : float or None
        Mains frequency to notch out (50 or 60 Hz); ``None`` skips it. With the default 40 Hz upper edge the
        band-pass already removes mains, so the default is ``None``.
    sfreq : float or None
        Target rate in Hz; ``None`` keeps the native rate.
    """
    data = recording.data
    rate = recording.sfreq
    if band is not None and (band[0] is not None or band[1] is not None):
        data = bandpass(data, rate, band[0], band[1])
    if notch_freq is not None:
        data = notch(data, rate, notch_freq)
    if sfreq is not None:
        data, rate = resample(data, rate, sfreq)
    return replace(recording, data=np.asarray(data, dtype=np.float32), sfreq=rate)
