"""Head profiles: per-(layer, KV head) scores measured offline and stored as JSON."""

from .head_profile import HeadProfile
from .measure import modality_head_profile, redundancy_profile

__all__ = ["HeadProfile", "modality_head_profile", "redundancy_profile"]
