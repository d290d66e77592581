"""A synthetic EEG cohort with seizures, written as EDF+ files, so the RAICL pipeline runs offline.

This is a demo and test source, **not** a benchmark of clinical performance: numbers measured on it say that the
code works end to end, nothing about real patients.

Recipe. Nineteen referential 10-20 electrodes per recording, microvolts:

- background: 1/f^beta noise (beta 1-2) mixed with a spatial covariance ``exp(-distance / lambda)`` plus a common
  reference signal (cancels in bipolar derivations); posterior alpha with a waxing-waning envelope (adults 8.5-11.5
  Hz, children 6-9 Hz), fronto-central beta; neonates get a discontinuous (burst / inter-burst) background instead;
- artefacts (hard negatives, labelled non-seizure): eye blinks on Fp1/Fp2, temporal muscle bursts (20-70 Hz),
  electrode pops (step + exponential decay), 50/60 Hz mains, slow drift, and post-ictal delta slowing after focal and
  tonic-clonic seizures (annotated ``"Post-ictal slowing"``);
- seizures (labelled 1), per patient one or two kinds out of `SEIZURE_KINDS`: generalised 3 Hz spike-and-wave
  (``absence``), focal evolving rhythmic discharge that slows from 5-8 to 2-3 Hz, grows 2-5x and spreads with delays
  (``focal``), neonatal focal rhythmic 0.5-4 Hz sharp waves on 1-3 electrodes (``neonatal``), tonic-clonic with a
  fast/muscle tonic phase, slowing clonic bursts and post-ictal suppression (``tonic_clonic``), and generalised
  polyspike-and-wave (``polyspike``);
- per-patient variation: age group, sampling rate (250 or 256 Hz), amplitudes, 1/f exponent, spatial scale, alpha
  frequency, artefact rates, mains frequency, seizure kinds and a seizure gain (the difficulty knob), and channel
  naming (new 10-20 names, old names T3/T4/T5/T6, or TUH-style ``EEG FP1-REF`` with ear electrodes).

Files: ``<out_dir>/pNN_rMM.edf`` (EDF+, seizures as ``"Seizure (<kind>)"`` annotations), ``manifest.json`` (the
settings, every patient's profile and every seizure) and ``seizures.csv`` (``file,onset,offset``, the plain annotation
format). Writing the same cohort again skips the recordings already there (the manifest is updated after each file).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from omnipress.eeg.montage import ELECTRODES_1020
from omnipress.eeg.progress import progress_bar
from omnipress.extras import require

SEIZURE_KINDS = ("absence", "focal", "neonatal", "tonic_clonic", "polyspike")
AGE_GROUPS: dict[str, tuple[str, ...]] = {
    "adult": ("focal", "tonic_clonic", "polyspike"),
    "child": ("absence", "focal", "polyspike", "tonic_clonic"),
    "neonate": ("neonatal", "focal"),
}
NAMINGS = ("new", "old", "tuh")
_MARGIN = 8.0  # seconds kept seizure-free at both ends of a recording
_MIN_SLOT = 10.0  # seconds of recording needed per seizure (seizure <= half of its slot, then post-ictal)
# Seizure duration range in seconds per kind.
_DURATIONS = {
    "absence": (6.0, 15.0),
    "polyspike": (6.0, 12.0),
    "focal": (20.0, 60.0),
    "neonatal": (15.0, 60.0),
    "tonic_clonic": (40.0, 90.0),
}
# Azimuthal projection of the 10-20 positions: x to the right ear, y to the nose, T7-T8 ring at radius 1.
ELECTRODE_POSITIONS: dict[str, tuple[float, float]] = {
    "Fp1": (-0.31, 0.95), "Fp2": (0.31, 0.95), "F7": (-0.81, 0.59), "F3": (-0.40, 0.52), "Fz": (0.0, 0.50),
    "F4": (0.40, 0.52), "F8": (0.81, 0.59), "T7": (-1.0, 0.0), "C3": (-0.50, 0.0), "Cz": (0.0, 0.0),
    "C4": (0.50, 0.0), "T8": (1.0, 0.0), "P7": (-0.81, -0.59), "P3": (-0.40, -0.52), "Pz": (0.0, -0.50),
    "P4": (0.40, -0.52), "P8": (0.81, -0.59), "O1": (-0.31, -0.95), "O2": (0.31, -0.95),
}  # fmt: skip
_XY = np.array([ELECTRODE_POSITIONS[e] for e in ELECTRODES_1020])  # (19, 2)
_INDEX = {e: i for i, e in enumerate(ELECTRODES_1020)}
_NEW_TO_OLD = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}


@dataclass(frozen=True)
class PatientProfile:
    """Everything that differs between synthetic patients."""

    patient: str
    age_group: str
    sfreq: float
    naming: str
    background_uv: float
    exponent: float
    spatial_lambda: float
    alpha_freq: float
    alpha_uv: float
    beta_uv: float
    blink_rate: float  # per minute
    muscle_rate: float
    pop_rate: float
    line_freq: float
    line_uv: float
    seizure_kinds: tuple[str, ...]
    seizure_gain: float


@dataclass(frozen=True)
class SeizureEvent:
    """One synthetic seizure (seconds from the recording start) and the post-ictal slowing after it (may be empty)."""

    onset: float
    offset: float
    kind: str
    postictal_end: float


def make_profile(
    index: int,
    rng: np.random.Generator,
    *,
    seizure_gain: float = 1.0,
    sfreqs: tuple[float, ...] = (250.0, 256.0),
    naming: str = "mixed",
) -> PatientProfile:
    """Draw patient ``index``'s profile (``naming="mixed"`` cycles new / old / TUH-style channel names)."""
    age = str(rng.choice(list(AGE_GROUPS), p=[0.4, 0.35, 0.25]))
    kinds = AGE_GROUPS[age]
    n_kinds = int(rng.integers(1, 3))
    chosen = tuple(sorted(rng.choice(kinds, size=min(n_kinds, len(kinds)), replace=False).tolist()))
    amplitude = {"adult": (10.0, 22.0), "child": (15.0, 35.0), "neonate": (15.0, 30.0)}[age]
    alpha = {"adult": (8.5, 11.5), "child": (6.0, 9.0), "neonate": (0.0, 0.0)}[age]
    if naming != "mixed" and naming not in NAMINGS:
        raise ValueError(f"naming must be 'mixed' or one of {NAMINGS}, got {naming!r}")
    return PatientProfile(
        patient=f"p{index + 1:02d}",
        age_group=age,
        sfreq=float(sfreqs[index % len(sfreqs)]) if age != "neonate" else 256.0,
        naming=NAMINGS[index % len(NAMINGS)] if naming == "mixed" else naming,
        background_uv=float(rng.uniform(*amplitude)),
        exponent=float(rng.uniform(1.2, 2.0)),
        spatial_lambda=float(rng.uniform(0.6, 1.0)),
        alpha_freq=float(rng.uniform(*alpha)),
        alpha_uv=0.0 if age == "neonate" else float(rng.uniform(15.0, 40.0)),
        beta_uv=float(rng.uniform(3.0, 8.0)),
        blink_rate=0.0 if age == "neonate" else float(rng.uniform(2.0, 15.0)),
        muscle_rate=float(rng.uniform(0.5, 4.0)),
        pop_rate=float(rng.uniform(0.0, 1.0)),
        line_freq=float(rng.choice([50.0, 60.0])),
        line_uv=float(rng.uniform(1.0, 8.0)),
        seizure_kinds=chosen,
        seizure_gain=float(seizure_gain * rng.uniform(0.7, 1.3)),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Signal building blocks (pure functions of a generator)


def powerlaw_noise(n_signals: int, n_samples: int, sfreq: float, exponent: float, rng: np.random.Generator):
    """Unit-variance Gaussian noise with a 1/f^exponent power spectrum (flat below 0.5 Hz); ``(n_signals, n)``."""
    freqs = np.fft.rfftfreq(n_samples, 1 / sfreq)
    gain = np.maximum(freqs, 0.5) ** (-exponent / 2)
    gain[0] = 0.0
    spectrum = np.fft.rfft(rng.standard_normal((n_signals, n_samples)), axis=-1) * gain
    x = np.fft.irfft(spectrum, n=n_samples, axis=-1)
    return x / (x.std(axis=-1, keepdims=True) + 1e-12)


def band_noise(n_signals: int, n_samples: int, sfreq: float, low: float, high: float, rng: np.random.Generator):
    """Unit-variance Gaussian noise band-limited to ``[low, high]`` Hz; ``(n_signals, n)``."""
    freqs = np.fft.rfftfreq(n_samples, 1 / sfreq)
    mask = (freqs >= low) & (freqs <= min(high, sfreq / 2))
    spectrum = np.fft.rfft(rng.standard_normal((n_signals, n_samples)), axis=-1) * mask
    x = np.fft.irfft(spectrum, n=n_samples, axis=-1)
    return x / (x.std(axis=-1, keepdims=True) + 1e-12)


def _envelope(n_samples: int, sfreq: float, max_freq: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth positive envelope in [0, 1] varying below ``max_freq`` Hz."""
    slow = band_noise(1, n_samples, sfreq, 0.01, max_freq, rng)[0]
    return (slow - slow.min()) / (np.ptp(slow) + 1e-12)


def _asymmetric_wave(u: np.ndarray, rise: float) -> np.ndarray:
    """Periodic unit wave with a fast rise (fraction ``rise`` of the cycle) and a slow fall; ``u`` in [0, 1)."""
    return np.where(u < rise, -np.cos(np.pi * u / rise), np.cos(np.pi * (u - rise) / (1 - rise)))


def _bump(u: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((u - centre) / width) ** 2)


def _distance(focus: str) -> np.ndarray:
    return np.linalg.norm(_XY - _XY[_INDEX[focus]], axis=1)  # (19,)


def background(profile: PatientProfile, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Spatially correlated 1/f background with alpha and beta rhythms; ``(19, n_samples)`` µV."""
    sfreq = profile.sfreq
    distance = np.linalg.norm(_XY[:, None] - _XY[None], axis=-1)  # (19, 19)
    covariance = np.exp(-distance / profile.spatial_lambda)
    mixing = np.linalg.cholesky(covariance + 1e-6 * np.eye(len(_XY)))
    sources = powerlaw_noise(len(_XY), n_samples, sfreq, profile.exponent, rng)
    x = mixing @ sources  # (19, n)
    x *= rng.uniform(0.85, 1.15, size=(len(_XY), 1)) * profile.background_uv
    x += 0.7 * profile.background_uv * powerlaw_noise(1, n_samples, sfreq, profile.exponent, rng)  # common reference
    if profile.age_group == "neonate":  # discontinuous background: bursts over a low inter-burst activity
        x *= 0.35 + 0.65 * _envelope(n_samples, sfreq, 0.15, rng) ** 2
    if profile.alpha_uv > 0:
        drift = 0.3 * band_noise(1, n_samples, sfreq, 0.01, 0.2, rng)[0]
        phase = 2 * np.pi * np.cumsum(profile.alpha_freq + drift) / sfreq
        alpha = np.sin(phase) * (0.2 + 0.8 * _envelope(n_samples, sfreq, 0.5, rng))
        weight = np.clip(-_XY[:, 1], 0, None) ** 1.5  # posterior maximum, 0 in front of C3-Cz-C4
        x += profile.alpha_uv * weight[:, None] * alpha[None]
    beta = band_noise(1, n_samples, sfreq, 13.0, 25.0, rng)[0]
    x += profile.beta_uv * np.exp(-((_XY[:, 1] - 0.3) ** 2) / 0.3)[:, None] * beta[None]
    return x


def add_artefacts(x: np.ndarray, profile: PatientProfile, rng: np.random.Generator) -> None:
    """Add blinks, muscle bursts, electrode pops, mains and drift to ``x`` (19, n) µV in place."""
    n_channels, n_samples = x.shape
    sfreq = profile.sfreq
    minutes = n_samples / sfreq / 60
    t = np.arange(n_samples) / sfreq
    blink_weight = np.exp(-((_XY[:, 1] - 0.95) ** 2) / 0.08)  # Fp1/Fp2 1, F row ~0.3
    for _ in range(rng.poisson(profile.blink_rate * minutes)):
        width = int(rng.uniform(0.2, 0.4) * sfreq)
        start = int(rng.integers(0, max(1, n_samples - width)))
        shape = np.hanning(width) * rng.uniform(80.0, 200.0)
        x[:, start : start + width] += blink_weight[:, None] * shape[None, : n_samples - start]
    for _ in range(rng.poisson(profile.muscle_rate * minutes)):
        width = int(rng.uniform(0.5, 2.0) * sfreq)
        start = int(rng.integers(0, max(1, n_samples - width)))
        side = rng.choice([-1.0, 1.0])
        weight = np.exp(-((_XY[:, 0] - side) ** 2) / 0.1) * rng.uniform(0.5, 1.5, n_channels)
        burst = band_noise(n_channels, width, sfreq, 20.0, 70.0, rng) * np.hanning(width)[None]
        x[:, start : start + width] += rng.uniform(15.0, 60.0) * weight[:, None] * burst[:, : n_samples - start]
    for _ in range(rng.poisson(profile.pop_rate * minutes)):
        channel = int(rng.integers(n_channels))
        start = int(rng.integers(0, n_samples))
        tau = rng.uniform(0.1, 0.5)
        x[channel, start:] += rng.choice([-1, 1]) * rng.uniform(100.0, 300.0) * np.exp(-(t[start:] - t[start]) / tau)
    x += profile.line_uv * rng.uniform(0.2, 1.5, (n_channels, 1)) * np.sin(2 * np.pi * profile.line_freq * t)[None]
    for channel in rng.choice(n_channels, size=2, replace=False):
        x[channel] += rng.uniform(20.0, 60.0) * band_noise(1, n_samples, sfreq, 0.02, 0.3, rng)[0]


def seizure_signal(kind: str, n_samples: int, sfreq: float, rng: np.random.Generator) -> tuple[np.ndarray, str | None]:
    """One seizure of ``kind`` over ``n_samples``: ``(19, n_samples)`` µV before the patient's gain, and the focus
    electrode (``None`` for generalised seizures)."""
    if kind not in SEIZURE_KINDS:
        raise ValueError(f"unknown seizure kind {kind!r}; expected one of {SEIZURE_KINDS}")
    t = np.arange(n_samples) / sfreq
    progress = t / max(t[-1], 1e-9)  # 0 -> 1 over the seizure
    n_channels = len(_XY)
    if kind in ("absence", "polyspike"):
        frontal = np.exp(-((_XY[:, 1] - 0.55) ** 2) / (2 * 0.45**2)) * rng.uniform(0.85, 1.15, n_channels)
        jitter = rng.uniform(0.0, 0.02, n_channels)  # ≤ 20 ms lag per electrode
        if kind == "absence":
            rate = rng.uniform(3.0, 4.0) - rng.uniform(0.3, 1.0) * progress  # slight slowing, 2.5-4 Hz
        else:
            rate = np.full(n_samples, rng.uniform(3.0, 4.0))
        cycles = np.cumsum(rate) / sfreq
        u = np.mod(cycles[None] - jitter[:, None] * rate[None], 1.0)  # (19, n) phase within a cycle
        if kind == "absence":
            wave = -0.8 * _bump(u, 0.08, 0.03) + 0.35 * _bump(u, 0.22, 0.05) - _bump(u, 0.58, 0.14)
        else:
            n_spikes = int(rng.integers(2, 5))
            spacing = rate[0] / rng.uniform(12.0, 20.0)  # spikes at 12-20 Hz, in cycle units
            wave = -0.55 * _bump(u, 0.7, 0.13)
            for k in range(n_spikes):
                wave = wave - 0.9 * _bump(u, 0.05 + k * spacing, 0.025)
        onset_ramp = np.clip(t / 0.05, 0, 1) * np.clip((t[-1] - t) / 0.05, 0, 1)  # abrupt on/offset
        amplitude = rng.uniform(150.0, 280.0)
        return amplitude * frontal[:, None] * wave * onset_ramp[None], None

    if kind in ("focal", "neonatal"):
        if kind == "focal":
            focus = str(rng.choice(["F7", "T7", "P7", "F8", "T8", "P8", "C3", "C4", "F3", "F4"]))
            f_start, f_end = rng.uniform(5.0, 8.0), rng.uniform(2.0, 3.0)
            growth, sigma, rise, base = rng.uniform(2.0, 5.0), 0.45, rng.uniform(0.2, 0.35), rng.uniform(25.0, 40.0)
            delay_per_unit = rng.uniform(1.0, 5.0)  # seconds per head radius: neighbours 0.5-3 s later
        else:
            focus = str(rng.choice(ELECTRODES_1020))
            f_start = rng.uniform(1.0, 3.0)
            f_end = f_start * rng.uniform(0.6, 1.4)
            growth, sigma, rise, base = rng.uniform(1.5, 3.0), 0.25, rng.uniform(0.15, 0.3), rng.uniform(40.0, 80.0)
            delay_per_unit = rng.uniform(0.5, 2.0)
        distance = _distance(focus)
        weight = np.exp(-(distance**2) / (2 * sigma**2))
        weight[weight < 0.05] = 0.0
        rate = f_start + (f_end - f_start) * progress
        cycles = np.cumsum(rate) / sfreq
        lag = distance * 0.02  # small phase lag away from the focus
        u = np.mod(cycles[None] - lag[:, None] * rate[None], 1.0)
        wave = _asymmetric_wave(u, rise)  # (19, n)
        growth_track = 1.0 + (growth - 1.0) * progress
        delay = distance * delay_per_unit  # seconds until the discharge reaches each electrode
        spread = np.clip((t[None] - delay[:, None]) / 1.0, 0, 1)  # (19, n) 1-s ramp after the delay
        taper = np.clip(t / 1.0, 0, 1) * np.clip((t[-1] - t) / 1.0, 0, 1)
        if kind == "neonatal":
            taper = taper * np.sin(np.pi * np.clip(progress, 0.05, 0.95)) ** 0.5  # rise, then fade
        return base * weight[:, None] * spread * wave * (growth_track * taper)[None], focus

    # tonic-clonic: tonic phase (fast activity + muscle), clonic phase (slowing polyspike bursts)
    weight = rng.uniform(0.6, 1.0, n_channels)
    tonic_end = rng.uniform(0.25, 0.4)
    tonic = progress < tonic_end
    fast = band_noise(n_channels, n_samples, sfreq, 15.0, 25.0, rng) * rng.uniform(20.0, 50.0)
    muscle = band_noise(n_channels, n_samples, sfreq, 20.0, 100.0, rng) * rng.uniform(40.0, 90.0)
    muscle *= (0.5 + np.abs(_XY[:, 0]))[:, None]  # strongest on temporal electrodes
    rate = 4.0 - 3.0 * np.clip((progress - tonic_end) / (1 - tonic_end), 0, 1)  # clonic bursts 4 -> 1 Hz
    u = np.mod(np.cumsum(rate) / sfreq, 1.0)
    bursts = -(_bump(u, 0.05, 0.02) + _bump(u, 0.12, 0.02) + 0.7 * _bump(u, 0.19, 0.02)) - 0.4 * _bump(u, 0.45, 0.12)
    clonic = ~tonic
    ramp = np.clip(progress / tonic_end, 0.2, 1.0)
    x = np.where(tonic[None], fast * ramp[None] + muscle * ramp[None], 0.0)
    burst_muscle = muscle * 0.6 * _bump(u, 0.12, 0.08)[None]
    x += np.where(clonic[None], rng.uniform(150.0, 250.0) * weight[:, None] * bursts[None] + burst_muscle, 0.0)
    return x, None


def postictal_slowing(n_samples: int, sfreq: float, focus: str | None, rng: np.random.Generator) -> np.ndarray:
    """Decaying polymorphic 1-3 Hz delta (no spikes) over a hemisphere or the whole head; ``(19, n)`` µV."""
    if focus is None:
        weight = rng.uniform(0.6, 1.0, len(_XY))
    else:
        side = np.sign(_XY[_INDEX[focus], 0]) or 1.0
        weight = np.clip(0.2 + side * _XY[:, 0], 0.1, 1.2)
    mix = rng.uniform(0.5, 1.0, (len(_XY), 2))
    delta = mix @ band_noise(2, n_samples, sfreq, 1.0, 3.0, rng)
    decay = np.linspace(1.0, 0.1, n_samples)
    return rng.uniform(30.0, 70.0) * weight[:, None] * delta * decay[None]


def simulate_recording(
    profile: PatientProfile, duration: float, n_seizures: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[SeizureEvent]]:
    """One recording of ``duration`` seconds with ``n_seizures`` seizures: ``(19, n)`` µV and the events."""
    sfreq = profile.sfreq
    n_samples = round(duration * sfreq)
    x = background(profile, n_samples, rng)
    add_artefacts(x, profile, rng)
    events: list[SeizureEvent] = []
    margin = _MARGIN
    slot = (duration - 2 * margin) / max(n_seizures, 1)
    for k in range(n_seizures):
        kind = str(rng.choice(profile.seizure_kinds))
        low, high = _DURATIONS[kind]
        length = min(rng.uniform(low, high), 0.5 * slot)
        if slot < _MIN_SLOT:
            raise ValueError(f"recording of {duration:g} s is too short for {n_seizures} seizures")
        slot_start = margin + k * slot
        wants_postictal = kind in ("focal", "tonic_clonic") and rng.random() < 0.7
        post = min(rng.uniform(20.0, 60.0), 0.4 * slot) if wants_postictal else 0.0
        latest = slot_start + slot - length - post - 2.0
        onset = float(rng.uniform(slot_start, max(slot_start, latest)))
        first = round(onset * sfreq)
        n_seizure = round(length * sfreq)
        signal, focus = seizure_signal(kind, n_seizure, sfreq, rng)
        x[:, first : first + n_seizure] += profile.seizure_gain * signal
        offset = (first + n_seizure) / sfreq
        end = offset
        if kind == "tonic_clonic":  # post-ictal suppression for a few seconds
            n_suppressed = int(min(rng.uniform(4.0, 10.0), post or 4.0) * sfreq)
            stop = min(first + n_seizure + n_suppressed, n_samples)
            x[:, first + n_seizure : stop] *= 0.25
        if post > 0:
            n_post = int(post * sfreq)
            start = first + n_seizure
            x[:, start : start + n_post] += postictal_slowing(n_post, sfreq, focus, rng)[:, : n_samples - start]
            end = offset + post
        events.append(SeizureEvent(onset=first / sfreq, offset=offset, kind=kind, postictal_end=end))
    return x, events


# ---------------------------------------------------------------------------------------------------------------------
# Writing


def channel_names(naming: str) -> list[str]:
    """Channel labels of a synthetic file for one naming style (see module docstring)."""
    if naming == "new":
        return list(ELECTRODES_1020)
    if naming == "old":
        return [_NEW_TO_OLD.get(e, e) for e in ELECTRODES_1020]
    if naming == "tuh":
        return [f"EEG {_NEW_TO_OLD.get(e, e).upper()}-REF" for e in ELECTRODES_1020] + ["EEG A1-REF", "EEG A2-REF"]
    raise ValueError(f"unknown naming {naming!r}; expected one of {NAMINGS}")


def write_edf(
    path: str | Path,
    data_uv: np.ndarray,
    channels: list[str],
    sfreq: float,
    annotations: list[tuple[float, float, str]],
    *,
    start: datetime | None = None,
) -> Path:
    """Write ``(n_channels, n_samples)`` µV data and ``(onset, duration, text)`` annotations as EDF+ via MNE/edfio."""
    mne = require("mne", extra="eeg", purpose="writing EDF files")
    require("edfio", extra="eeg", purpose="writing EDF files")  # MNE's EDF exporter

    path = Path(path)
    info = mne.create_info(list(channels), sfreq, "eeg")
    raw = mne.io.RawArray(np.asarray(data_uv, dtype=np.float64) * 1e-6, info, verbose="error")
    raw.set_meas_date(start or datetime(2020, 1, 1, tzinfo=timezone.utc))
    if annotations:
        onset, duration, text = zip(*annotations)
        raw.set_annotations(mne.Annotations(list(onset), list(duration), list(text)))
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
    return path


def write_cohort(
    out_dir: str | Path,
    *,
    patients: int = 20,
    seed: int = 0,
    minutes_per_patient: float = 10.0,
    recordings_per_patient: int = 2,
    seizures_per_patient: tuple[int, int] = (2, 4),
    seizure_gain: float = 1.0,
    sfreqs: tuple[float, ...] = (250.0, 256.0),
    naming: str = "mixed",
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Write a synthetic cohort of EDF+ recordings with seizure annotations.

    Parameters
    ----------
    out_dir : str or Path
        Created if needed. Recordings that an earlier call with the same settings (``patients`` aside) already wrote
        there are kept as they are; other files of the same names are overwritten.
    patients : int
        Number of patients (``p01``, ``p02``, ...).
    seed : int
        Patient ``i`` depends only on ``(seed, i)``, so adding patients leaves the first ones unchanged.
    minutes_per_patient : float
        Total recorded time per patient, split evenly over its recordings.
    recordings_per_patient : int
        Files per patient (``pNN_r01.edf``, ...).
    seizures_per_patient : (min, max)
        Inclusive range of seizures per patient, spread over its recordings (every patient has at least one).
    seizure_gain : float
        Global seizure amplitude factor: lower is harder (each patient also varies by x0.7-1.3).
    sfreqs : tuple of float
        Sampling rates cycled over (non-neonatal) patients; neonates use 256 Hz.
    naming : str
        ``"mixed"`` (cycle), ``"new"``, ``"old"`` or ``"tuh"`` channel names.
    overwrite : bool
        Write every recording again, even those already there.
    progress : bool
        Show a progress bar over recordings.

    Returns
    -------
    list of Path
        The EDF files, in patient then recording order. ``manifest.json`` and ``seizures.csv`` are written beside.
    """
    if patients < 1 or recordings_per_patient < 1:
        raise ValueError("patients and recordings_per_patient must be at least 1")
    low, high = seizures_per_patient
    if not 1 <= low <= high:
        raise ValueError(f"seizures_per_patient must be (min, max) with 1 <= min <= max, got {seizures_per_patient}")
    duration = minutes_per_patient * 60.0 / recordings_per_patient
    if duration < 30.0:
        raise ValueError(f"each recording would last {duration:g} s; need at least 30 s (raise minutes_per_patient)")
    if duration - 2 * _MARGIN < high * _MIN_SLOT:  # all of a patient's seizures may land in one recording
        raise ValueError(
            f"recordings of {duration:g} s cannot hold {high} seizures (each needs {_MIN_SLOT:g} s); raise "
            "minutes_per_patient or lower seizures_per_patient"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "seed": seed,
        "minutes_per_patient": minutes_per_patient,
        "recordings_per_patient": recordings_per_patient,
        "seizures_per_patient": [low, high],
        "seizure_gain": seizure_gain,
        "sfreqs": list(sfreqs),
        "naming": naming,
    }
    done = {} if overwrite else _written_before(out, settings)
    files: list[Path] = []
    manifest: dict = {
        "generator": "omnipress.eeg.synth",
        "note": "synthetic demo/test data, not a clinical benchmark",
        "seed": seed,
        "settings": settings,
        "patients": [],
        "recordings": [],
    }
    plain_rows: list[tuple[str, float, float]] = []
    bar = progress_bar(total=patients * recordings_per_patient, enabled=progress, desc="synth", unit="file")
    for index in range(patients):
        rng = np.random.default_rng([seed, index])
        profile = make_profile(index, rng, seizure_gain=seizure_gain, sfreqs=sfreqs, naming=naming)
        manifest["patients"].append(asdict(profile))
        total = int(rng.integers(low, high + 1))
        per_recording = np.bincount(
            rng.integers(0, recordings_per_patient, size=total), minlength=recordings_per_patient
        )
        for r in range(recordings_per_patient):
            name = f"{profile.patient}_r{r + 1:02d}"
            if name in done:  # written by an earlier call with the same settings: the same bytes
                entry = done[name]
                files.append(out / entry["file"])
                manifest["recordings"].append(entry)
                plain_rows += [(entry["file"], e["onset"], e["offset"]) for e in entry["seizures"]]
                bar.update(1)
                continue
            rec_rng = np.random.default_rng([seed, index, r + 1])
            data, events = simulate_recording(profile, duration, int(per_recording[r]), rec_rng)
            names = channel_names(profile.naming)
            if len(names) > data.shape[0]:  # ear electrodes: quiet, weakly correlated with the temporal chain
                ears = 0.3 * data[[_INDEX["T7"], _INDEX["T8"]]] + 5.0 * rec_rng.standard_normal((2, data.shape[1]))
                data = np.concatenate([data, ears])
            notes = [(0.0, 0.0, "Recording start")]
            for e in events:
                notes.append((e.onset, e.offset - e.onset, f"Seizure ({e.kind})"))
                if e.postictal_end > e.offset:
                    notes.append((e.offset, e.postictal_end - e.offset, "Post-ictal slowing"))
            start = datetime(2020, 1, 1, tzinfo=timezone.utc) + timedelta(days=index, hours=r)
            path = write_edf(out / f"{name}.edf", data, names, profile.sfreq, notes, start=start)
            files.append(path)
            manifest["recordings"].append(
                {
                    "patient": profile.patient,
                    "recording": name,
                    "file": path.name,
                    "bytes": path.stat().st_size,
                    "sfreq": profile.sfreq,
                    "duration": duration,
                    "seizures": [{"onset": e.onset, "offset": e.offset, "kind": e.kind} for e in events],
                    "postictal": [[e.offset, e.postictal_end] for e in events if e.postictal_end > e.offset],
                }
            )
            plain_rows += [(path.name, e.onset, e.offset) for e in events]
            _write_manifest(out, manifest, done)  # a rerun after an interruption keeps this file
            bar.update(1)
    bar.close()
    _write_manifest(out, manifest, {})
    with (out / "seizures.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "onset", "offset"])
        writer.writerows((name, repr(on), repr(off)) for name, on, off in plain_rows)
    return files


def _written_before(out: Path, settings: dict) -> dict[str, dict]:
    """Manifest entries of recordings an earlier `write_cohort` with these settings wrote and left intact."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict) or manifest.get("settings") != settings:
        return {}
    done = {}
    for entry in manifest.get("recordings", []):
        path = out / str(entry.get("file", ""))
        if "bytes" in entry and path.is_file() and path.stat().st_size == entry["bytes"]:
            done[entry["recording"]] = entry
    return done


def _write_manifest(out: Path, manifest: dict, pending: dict[str, dict]) -> None:
    """Write ``manifest.json``; entries of ``pending`` (not yet revisited) stay listed so they are not lost."""
    listed = {e["recording"] for e in manifest["recordings"]}
    extra = [e for name, e in pending.items() if name not in listed]
    (out / "manifest.json").write_text(json.dumps({**manifest, "recordings": manifest["recordings"] + extra}, indent=2))


def read_manifest(out_dir: str | Path) -> dict:
    """The ``manifest.json`` written by `write_cohort`."""
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic-cohort manifest at {path}")
    return json.loads(path.read_text())
