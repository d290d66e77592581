"""Streaming video: a live stream of frames in a VLM's cache, answered at any time (`StreamingSession`).

- `session.py`: `StreamingSession` (append frames, `ask`, `reset`; whole prompts with prefix reuse, `generate`);
- `layout.py`: where a stream sits in each family's prompt, its cache columns and (M-)RoPE positions;
- `hook.py`: the session's listener on the model (ragged cache, pruned columns, per-chunk compression, retrieval);
- `compress.py`: a KV press on each appended chunk; `memory.py`: full / window / retrieval memory policies;
- `blocks.py`: frame blocks, their host-memory copies and ReKV-style retrieval; `decode.py`: the decode loop;
- `prompt.py`: whole prompts in chunks (positions, media digests, prefix signatures); `report.py`: answers, reports.
"""

from .blocks import BlockStore, FrameBlock
from .memory import FullMemory, MemoryPolicy, RetrievalMemory, WindowMemory
from .prompt import PromptInputs
from .report import PromptReport, StreamAnswer, StreamReport, StreamStats
from .session import StreamingSession

__all__ = [
    "BlockStore",
    "FrameBlock",
    "FullMemory",
    "MemoryPolicy",
    "PromptInputs",
    "PromptReport",
    "RetrievalMemory",
    "StreamAnswer",
    "StreamReport",
    "StreamStats",
    "StreamingSession",
    "WindowMemory",
]
