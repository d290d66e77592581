"""Token pruning between the encoder and the language model (stage "tokens").

Every pruner keeps, per video frame (per frame group for Qwen-VL), `tokens_per_frame` of the LLM-side visual
tokens, in spatial order. Use one on a stream of frame chunks (`pruner.compress(chunk)` / `pruner.select(chunk)`,
`pruner.reset()` between streams), or on an offline video with plain `generate` (`with pruner(model):
model.generate(**inputs)`); see `omnipress.tokens.base`. STC's temporal memory is also available as a pure function
for streaming sessions that keep state themselves: `indices, memory = stc_prune(chunk, k, memory)`.

| pruner | keeps |
|---|---|
| `STCPruner` | tokens least redundant with the frame mean and the stream's running mean (STC, arXiv 2512.00891) |
| `VisionZipPruner` | dominant tokens plus merged contextual tokens (VisionZip, arXiv 2412.04467) |
| `VidCom2Pruner` | per-frame budgets from frame uniqueness, distinctive tokens per frame (VidCom2, arXiv 2505.14454) |
| `DivPrunePruner` | the max-min diverse subset of each frame (DivPrune, arXiv 2503.02175) |
| `UniformPruner` | evenly spaced tokens |
| `RandomPruner` | seeded random tokens |
"""

from .base import Selection, TokenPruner
from .divprune import DivPrunePruner
from .random_pruner import RandomPruner
from .report import PruningReport
from .stc_pruner import STCMemory, STCPruner, stc_prune
from .uniform import UniformPruner
from .vidcom2 import VidCom2Pruner
from .visionzip import VisionZipPruner

__all__ = [
    "DivPrunePruner",
    "PruningReport",
    "RandomPruner",
    "STCMemory",
    "STCPruner",
    "Selection",
    "TokenPruner",
    "UniformPruner",
    "VidCom2Pruner",
    "VisionZipPruner",
    "stc_prune",
]
