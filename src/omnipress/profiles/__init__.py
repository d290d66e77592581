"""Head profiles: per-(layer, KV head) scores measured offline and stored as versioned JSON profile files."""

from .audio_heads import CalibrationSample, audio_head_profile, calibration_sample
from .head_profile import HeadProfile, shipped_profiles
from .measure import modality_head_profile, redundancy_profile
from .store import FORMAT_VERSION, ModelFingerprint, ProfileError, ProfileRecord, load_profile, save_profile

__all__ = [
    "FORMAT_VERSION",
    "CalibrationSample",
    "HeadProfile",
    "ModelFingerprint",
    "ProfileError",
    "ProfileRecord",
    "audio_head_profile",
    "calibration_sample",
    "load_profile",
    "modality_head_profile",
    "redundancy_profile",
    "save_profile",
    "shipped_profiles",
]
