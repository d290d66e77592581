"""Head profiles: per-(layer, KV head) scores measured offline and stored as JSON."""

from .head_profile import HeadProfile

__all__ = ["HeadProfile"]
