"""Reading video and audio (PyAV) and turning frames into the tensors video-LLMs expect."""

from .audio import read_audio
from .video import (
    StreamInterruptedWarning,
    TruncatedMediaWarning,
    frames_to_tensor,
    normalize_frames,
    qwen_video_patches,
    read_video,
    video_duration,
)

__all__ = [
    "StreamInterruptedWarning",
    "TruncatedMediaWarning",
    "frames_to_tensor",
    "normalize_frames",
    "qwen_video_patches",
    "read_audio",
    "read_video",
    "video_duration",
]
