"""Encoder-stage methods: they act inside the vision encoder, frame by frame.

- `STCCacher` (`stc_cacher.py`): STC's selective recomputation of the tokens that changed since a reference frame
  (arXiv 2512.00891);
- `ToMe` (`tome.py`): token merging by bipartite soft matching inside each ViT block (arXiv 2210.09461), a baseline.

Both take a whole VLM or its bare vision tower (`SiglipVisionModel`, `CLIPVisionModel`, the Qwen-VL vision models).
"""

from .stc_cacher import STCCacher
from .stc_state import CacherStats, FrameStats
from .tome import ToMe, ToMeStats

__all__ = ["CacherStats", "FrameStats", "STCCacher", "ToMe", "ToMeStats"]
