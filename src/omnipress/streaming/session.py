"""`StreamingSession`: a live video stream in a VLM's cache, answered at any time under bounded memory.

::

    session = op.StreamingSession(model, processor, methods=[op.STCCacher(), op.STCPruner(64)], memory="window")
    for t, frame in op.read_video("clip.mp4", fps=1):
        session.append_frame(frame, t)
        if t in question_times:
            print(session.ask("What is happening?").text)

Each appended block of frames (one frame; one temporal patch of 2 frames for Qwen-VL) goes through the model's own
vision path (with the session's encoder methods, e.g. the STC-Cacher), is pruned by the session's token pruner (its
functional `compress`, per block, with the pruner's running state), and is prefilled into the language model's cache
by an in-place append at the columns and positions it has in the offline prompt (`omnipress.streaming.layout`); a
KV press among the methods compresses each appended chunk (`ChunkCompressor`). The memory policy then evicts or
offloads old blocks (`omnipress.streaming.memory`). `ask()` appends the end of the video, the question and the
assistant turn, decodes, and removes all of it again (`RaggedLayer.pop`), so the stream's cache is left as it was.

The same session answers whole prompts with prefix reuse (`generate`): the cached prefix of the previous prompt is
cut to the longest common prefix (token ids and media contents) and only the rest is prefilled. With a KV press the
prefix is compressed when it is prefilled, and a compressed prefix is cut by cache column like any other, so it is
reused too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..adapters import get_adapter
from ..cache.accounting import cache_kept_bytes, cache_kv_bytes
from ..cache.ragged import RaggedLayer
from ..core.method import Composed, Method, compose
from ..kv.base import KVPress
from ..spans import ModalitySpans, Span
from ..tokens.base import TokenPruner
from .blocks import BlockStore, FrameBlock, merge
from .compress import ChunkCompressor
from .decode import Sampling, decode
from .hook import CallPlan, StreamHook
from .layout import QUESTION, Cursor, EncodedBlock, Placed, StreamLayout, layout_for
from .memory import MemoryPolicy, RetrievalMemory, WindowMemory, memory_policy
from .prompt import PromptInputs, chunk_inputs, common_prefix, prepare_prompt, prompt_inputs, snap
from .report import PromptReport, StreamAnswer, StreamReport, StreamStats


class StreamingSession:
    """A video stream (or a series of prompts sharing a prefix) answered by one model (module docstring).

    Parameters
    ----------
    model : transformers model
        LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL or Qwen3-VL for streams; `generate` takes any supported family.
    processor : processor or tokenizer
        Its tokenizer (or a processor holding one) with a chat template that writes `{"type": "video"}` items.
    methods : sequence of omnipress methods
        Encoder-stage methods (`STCCacher`, `ToMe`) active while frames are encoded; at most one token pruner
        (`STCPruner`, `VisionZipPruner`, ...) applied to each block; at most one KV press (any `KVPress`, `MixKV`)
        applied to each appended chunk, its `budget` counted per chunk and KV head.
    memory : str or policy
        `"full"`, `"window"`, `"retrieval"`, or `FullMemory()`, `WindowMemory(frames, sinks)`,
        `RetrievalMemory(frames, sinks, retrieve)`.
    system : str, optional
        System message of the chat turn.
    frame_size : (height, width), optional
        Resize frames to this size before the vision encoder (`None`: the family processor's default).
    frame_interval : float, optional
        Seconds between frames for Qwen2.5-VL's temporal positions (default: from the first block's timestamps).
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        methods: Sequence[Method | Composed] = (),
        memory: str | MemoryPolicy = "full",
        *,
        system: str | None = None,
        frame_size: tuple[int, int] | None = None,
        frame_interval: float | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.adapter = get_adapter(model)  # UnsupportedModelError for other models
        if not getattr(self.adapter, "has_language_model", True) or self.adapter.is_encoder_decoder:
            raise ValueError(f"a streaming session needs a decoder-only language model, not {type(model).__name__}")
        self.memory = memory_policy(memory)
        self.encoders, self.pruner, self.press = _split_methods(methods)
        self.system = system
        self._layout: StreamLayout | None = None
        self._layout_error: str | None = None
        try:
            knobs = {"frame_size": frame_size, "frame_interval": frame_interval}
            self._layout = layout_for(self.adapter, self.tokenizer, **knobs)
        except ValueError as err:
            self._layout_error = str(err)
        compressor = None
        if self.press is not None:
            compressor = ChunkCompressor(self.press, self.adapter.num_layers, self.adapter.num_key_value_heads)
        self._hook = StreamHook(compressor)
        self._eos = _eos_ids(model, self.tokenizer)
        self._contents: dict[str, int] = {}
        self.reset()

    # -- state -----------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream (or the cached prompt prefix): empty cache, no frames; the pruner's and encoder
        methods' stream state is reset too."""
        self._cache: Any = None
        self._logical = 0  # cache columns seen (pruned and evicted ones included)
        self._mode: str | None = None  # "stream" or "prompt"
        self._cursor = Cursor()
        self._blocks: list[FrameBlock] = []
        self._pending: list[tuple[float, Image.Image]] = []
        self._frames = 0
        self._last_time: float | None = None
        self._store = None
        if isinstance(self.memory, RetrievalMemory):  # host memory, pinned for fast copies back to a GPU
            self._store = BlockStore(self.adapter.num_layers, pin=_device(self.model).type == "cuda")
        self._prompt_signature: np.ndarray | None = None
        self._prompt_compressed = False
        self.stats = StreamStats()
        if self.pruner is not None:
            self.pruner.reset()
        for method in self.encoders:
            if callable(getattr(method, "reset", None)):
                method.reset()

    @property
    def cache(self) -> Any:
        """The live cache (a transformers `DynamicCache` of `RaggedLayer`s), None before anything was prefilled."""
        return self._cache

    @property
    def blocks(self) -> list[FrameBlock]:
        """Every frame block of the stream, with where it is now (`"live"`, `"evicted"`, `"offloaded"`)."""
        return list(self._blocks)

    @property
    def offloaded(self) -> BlockStore | None:
        """The retrieval memory's host store (None under other policies)."""
        return self._store

    @property
    def stream_columns(self) -> int:
        """Cache columns of the stream so far (its length in the unpruned offline prompt; pruned and evicted tokens
        included)."""
        return self._logical

    def kv_bytes(self) -> int:
        """Physical key/value bytes of the live cache (spare capacity included)."""
        return cache_kv_bytes(self._cache) if self._cache is not None else 0

    # -- stream ----------------------------------------------------------------------------------------------------
    def append_frame(self, frame: Image.Image | np.ndarray | torch.Tensor, t: float | None = None) -> None:
        """Append one frame at stream time `t` seconds (default: one second after the previous frame)."""
        self.append_frames([frame], None if t is None else [t])

    def append_frames(
        self, frames: Sequence[Image.Image | np.ndarray | torch.Tensor], times: Sequence[float] | None = None
    ) -> None:
        """Append a chunk of frames (timestamps in seconds, increasing). Whole blocks are encoded in one vision call
        and prefilled in one language-model call; a Qwen-VL frame waiting for its temporal partner stays pending."""
        layout = self._stream_layout()
        if self._mode == "prompt":
            raise RuntimeError("this session holds a prompt prefix (generate); call reset() before streaming frames")
        images = [_as_image(f) for f in frames]
        if times is None:
            start = -1.0 if self._last_time is None else self._last_time
            times = [start + 1.0 + i for i in range(len(images))]
        times = [float(t) for t in times]
        if len(times) != len(images):
            raise ValueError(f"got {len(images)} frames and {len(times)} timestamps")
        previous = self._last_time
        for t in times:
            if previous is not None and not t > previous:
                raise ValueError(f"frame timestamps must increase: {t} s after {previous} s")
            previous = t
        if not images:
            return
        self._mode = "stream"
        last_time, self._last_time = self._last_time, times[-1]
        self._frames += len(images)
        self._pending.extend(zip(times, images))
        per = layout.frames_per_block
        ready = len(self._pending) // per * per
        if not ready:
            return
        take, self._pending = self._pending[:ready], self._pending[ready:]
        with torch.no_grad(), compose(self._hook, *self.encoders)(self.model):
            if self._cache is None:
                self._start(layout)
            t0 = self._clock()
            try:
                blocks = layout.encode([f for _, f in take], [t for t, _ in take])
            except Exception:  # nothing of these frames entered the stream: forget them
                earlier = take + self._pending  # frames pending from earlier calls stay pending
                self._pending = [p for p in earlier if last_time is not None and p[0] <= last_time]
                self._frames -= len(images)
                self._last_time = last_time
                raise
            t1 = self._clock()
            self._prefill_blocks(layout, blocks)
            t2 = self._clock()
            self._apply_memory(reserve=sum(len(b.ids) for b in blocks))
            t3 = self._clock()
        self.stats.add(frames=ready, blocks=len(blocks), encode_s=t1 - t0, prefill_s=t2 - t1, memory_s=t3 - t2)

    def ask(self, question: str, *, max_new_tokens: int = 32, **sampling: Any) -> StreamAnswer:
        """Answer `question` about the stream so far; the stream's cache is left exactly as it was.

        Generation keywords: `do_sample`, `temperature`, `top_k`, `top_p`, `repetition_penalty`, `eos_token_id`,
        `generator` (greedy by default). The answer's `time` is the timestamp of the newest frame in the cache.
        """
        layout = self._stream_layout()
        if not self._blocks:
            raise RuntimeError(
                "ask() needs at least one frame block in the stream: append frames first"
                + (f" ({len(self._pending)} frame(s) wait for a whole temporal patch)" if self._pending else "")
            )
        settings = Sampling.from_kwargs(sampling)
        _check_max_new_tokens(max_new_tokens)
        prefix, suffix = layout.split(layout.chat_ids(question, self.system))
        if prefix != self._prefix_ids:
            raise RuntimeError("the chat template puts the question before the video; streaming needs it after")
        cursor = layout.snapshot(self._cursor)
        closing, closing_embeds = layout.close(cursor)
        text = layout.text(cursor, len(suffix))
        placed = Placed(torch.cat([closing.positions, text.positions], 1), torch.cat([closing.columns, text.columns]))
        embeds = self._embed(suffix)
        if closing_embeds is not None:
            embeds = torch.cat([closing_embeds.to(embeds.dtype), embeds])
        q0, q1 = layout.question_span(suffix, question)
        shift = int(closing.columns.shape[0])
        retrieved: dict[int, list[float]] = {}
        report = StreamReport(
            frames=self._frames,
            frames_in_cache=sum(len(b.times) for b in self._blocks if b.where == "live"),
            frames_pending=len(self._pending),
            stream_tokens=self._stream_tokens(),
            question_tokens=int(embeds.shape[0]),
            kv_bytes=self.kv_bytes(),
            kv_bytes_kept=cache_kept_bytes(self._cache),
            answer_kv_bytes=0,
            offloaded_bytes=self._store.nbytes if self._store is not None else 0,
            retrieved=retrieved,
        )
        swap = None
        if self._store is not None and len(self._store):
            swap = self._retrieval_swap((q0 + shift, q1 + shift), int(embeds.shape[0]), max_new_tokens, retrieved)
        tokens, logits = self._answer(embeds, placed, cursor, layout, swap, max_new_tokens, settings, report)
        newest = [b for b in self._blocks if b.where == "live"]
        return StreamAnswer(
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
            token_ids=tokens,
            time=newest[-1].times[-1] if newest else None,
            report=report,
            logits=logits,
        )

    # -- prompts with prefix reuse ---------------------------------------------------------------------------------
    def prompt(
        self,
        content: Sequence[str | Image.Image],
        *,
        image_processor: Any = None,
        max_pixels: int | None = None,
    ) -> PromptInputs:
        """The model inputs of one user turn whose `content` interleaves text and images, with its spans,
        positions and signature (see `omnipress.streaming.prompt.prompt_inputs`)."""
        inputs = prompt_inputs(
            self.adapter, self.tokenizer, content, system=self.system, image_processor=image_processor,
            max_pixels=max_pixels,
        )  # fmt: skip
        return prepare_prompt(self.adapter, inputs, self._contents, _device(self.model))

    def generate(
        self,
        prompt: PromptInputs | dict[str, Any],
        *,
        prefix_end: int | None = None,
        max_new_tokens: int = 32,
        **sampling: Any,
    ) -> StreamAnswer:
        """Answer one whole prompt (model inputs of one unpadded row, or `prompt(...)`'s result).

        With `prefix_end`, the tokens `[0, prefix_end)` are the reusable prefix: the session keeps them cached after
        answering, and the next prompt prefills only what follows its longest common prefix with them (never cutting
        a media item). The session's KV press compresses each prefilled part of the prefix (observation window: the
        part's last tokens); the rest of the prompt is appended uncompressed. Without `prefix_end` the whole prompt
        is prefilled (and compressed) in one chunk and nothing is kept.
        """
        if self._mode == "stream":
            raise RuntimeError("this session holds a video stream; call reset() before generate()")
        if self.pruner is not None:
            raise ValueError("token pruners apply to video streams (append_frame); generate() does not prune prompts")
        settings = Sampling.from_kwargs(sampling)
        _check_max_new_tokens(max_new_tokens)
        if not isinstance(prompt, PromptInputs):
            prompt = prepare_prompt(self.adapter, prompt, self._contents, _device(self.model))
        n = prompt.length
        end = n if prefix_end is None else int(prefix_end)
        if not 0 <= end <= n or (prefix_end is not None and end == n):
            raise ValueError(f"prefix_end must lie in [0, {n}) for a prompt of {n} tokens, got {prefix_end}")
        if snap(end, prompt.spans) != end:
            raise ValueError(f"prefix_end {end} cuts a media item of the prompt")
        start = self._clock()
        with torch.no_grad(), compose(self._hook, *self.encoders)(self.model):
            logits_holder: list[torch.Tensor] = []
            if prefix_end is None:  # the whole prompt in one (compressed) chunk
                reused = self._drop_cache()
                compressed_now = self._prefill_prompt(prompt, 0, n, compress=True, out=logits_holder)
            else:
                room = n - end + max_new_tokens  # spare slots for the suffix and the answer: no growth copy
                reused = self._reuse_prefix(prompt, end, reserve=room)
                compressed_now = False
                if reused < end:
                    compressed_now = self._prefill_prompt(prompt, reused, end, compress=True, reserve=room)
                self._mode = "prompt"
                self._prompt_signature = prompt.signature[:end].copy()
                self._prompt_compressed = self._prompt_compressed or compressed_now
                self._prefill_prompt(prompt, end, n, compress=False, out=logits_holder)
            report = PromptReport(
                prompt_tokens=n,
                reused_tokens=reused,
                prefilled_tokens=n - reused,
                kv_bytes=self.kv_bytes(),
                kv_bytes_kept=cache_kept_bytes(self._cache),
                compressed=compressed_now or (prefix_end is not None and self._prompt_compressed),
                prefill_s=self._clock() - start,
            )
            top, column = prompt.top, n

            def step(token: int, offset: int) -> torch.Tensor:
                position = column + offset if prompt.positions.shape[0] == 1 else top + 1 + offset
                placed = Placed(torch.full((prompt.positions.shape[0], 1), position), torch.tensor([column + offset]))
                return self._lm(self._embed([token]), placed)

            t0 = self._clock()
            try:
                tokens = decode(logits_holder[0], step, max_new_tokens=max_new_tokens, eos=self._eos, sampling=settings)
            finally:
                if prefix_end is None:
                    self._drop_cache()
                else:
                    self._pop_to(end)
            report.decode_s = self._clock() - t0
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return StreamAnswer(text=text, token_ids=tokens, time=None, report=report, logits=logits_holder[0])

    # -- internals: language model ---------------------------------------------------------------------------------
    def _stream_layout(self) -> StreamLayout:
        if self._layout is None:
            raise ValueError(self._layout_error or "this model has no stream layout")
        return self._layout

    def _clock(self) -> float:
        """Wall time after the device finished its queued work (stage timings on CUDA)."""
        device = _device(self.model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def _embed(self, ids: Sequence[int]) -> torch.Tensor:
        """`(n, hidden)` input embeddings of token ids."""
        table = self.model.get_input_embeddings()
        with torch.no_grad():
            return table(torch.tensor(list(ids), dtype=torch.long, device=table.weight.device))

    def _lm(
        self,
        embeds: torch.Tensor,
        placed: Placed,
        *,
        spans: ModalitySpans | None = None,
        extra: dict[str, Any] | None = None,
        end: int | None = None,
        logits: bool = True,
    ) -> torch.Tensor | None:
        """Prefill `embeds` `(n, hidden)` at `placed` columns/positions into the live cache (compressing them with
        the press when `spans` say where their media are); the last token's logits `(vocab,)` when asked. `end` is
        the logical length after the call (default: the last column + 1; larger when pruned tokens end the chunk)."""
        from transformers import DynamicCache

        device = embeds.device
        n = int(embeds.shape[0])
        if self._cache is None:
            self._cache = DynamicCache()
        columns = placed.columns.to(device)
        first = int(placed.columns[0])
        end = int(placed.columns[-1]) + 1 if end is None else end
        compressor = self._hook.compressor
        chunk = compressor.plan(spans, device) if compressor is not None and spans is not None else None
        self._hook.listener.call = CallPlan(
            columns=columns, end=end, contiguous=first == self._logical and end - first == n, chunk=chunk,
            reserve=n if chunk is not None else 0,
        )  # fmt: skip
        positions = placed.positions.to(device)
        position_ids = positions.unsqueeze(1) if positions.shape[0] == 3 else positions  # (3, 1, n) or (1, n)
        try:
            out = self.adapter.language_model(
                inputs_embeds=embeds.unsqueeze(0), position_ids=position_ids, cache=self._cache, use_cache=True,
                **(extra or {}),
            )  # fmt: skip
        finally:
            self._hook.listener.call = None
        self._logical = end
        if chunk is not None:
            compressor.finish(chunk)
        if not logits:
            return None
        hidden = out.last_hidden_state[0, -1]  # (hidden,)
        return self.model.get_output_embeddings()(hidden)

    def _answer(
        self,
        embeds: torch.Tensor,
        placed: Placed,
        cursor: Cursor,
        layout: StreamLayout,
        swap: Any,
        max_new_tokens: int,
        settings: Sampling,
        report: StreamReport,
    ) -> tuple[list[int], torch.Tensor]:
        """Prefill the question, decode, and put the stream's cache back as it was."""
        saved_layers = list(self._cache.layers)
        logical = self._logical
        with torch.no_grad(), compose(self._hook, *self.encoders)(self.model):
            listener = self._hook.listener
            try:
                t0 = self._clock()
                listener.swap = swap
                try:
                    logits = self._lm(embeds, placed)
                finally:
                    listener.swap = None
                report.answer_kv_bytes = self.kv_bytes()
                report.prefill_s = self._clock() - t0

                def step(token: int, offset: int) -> torch.Tensor:
                    return self._lm(self._embed([token]), layout.generated(cursor, offset))

                t1 = self._clock()
                tokens = decode(logits, step, max_new_tokens=max_new_tokens, eos=self._eos, sampling=settings)
                report.decode_s = self._clock() - t1
            finally:
                self._cache.layers[: len(saved_layers)] = saved_layers  # retrieval swapped some layers
                self._pop_to(logical)
        return tokens, logits

    def _pop_to(self, logical: int) -> None:
        """Remove every entry appended after the cache held `logical` columns (a question and its answer)."""
        for layer in self._cache.layers:
            if isinstance(layer, RaggedLayer) and layer.logical_length > logical:
                layer.pop(layer.logical_length - logical, logical_length=logical)
        self._logical = logical

    # -- internals: stream -----------------------------------------------------------------------------------------
    def _start(self, layout: StreamLayout) -> None:
        """Prefill the chat turn up to the video (the stream's prefix)."""
        prefix, _ = layout.split(layout.chat_ids(QUESTION, self.system))
        self._prefix_ids = prefix
        self._lm(self._embed(prefix), layout.text(self._cursor, len(prefix)), logits=False)

    def _prefill_blocks(self, layout: StreamLayout, blocks: list[EncodedBlock]) -> None:
        """Prune every block (in order, the pruner's state advancing per block) and prefill them in one call."""
        embeds, positions, columns, visual, deep, media = [], [], [], [], [], []
        offset = 0
        for block in blocks:
            placed = layout.block(self._cursor, block)
            v0, v1 = block.vision
            kept, features = self._prune(block)  # (k,) ascending indices into the vision tokens, (k, hidden)
            local = torch.cat([torch.arange(v0), v0 + kept.cpu(), torch.arange(v1, len(block.ids))])
            emb = self._embed(block.ids)
            emb[v0 + kept.to(emb.device)] = features.to(emb.dtype)
            embeds.append(emb[local.to(emb.device)])
            positions.append(placed.positions[:, local])
            columns.append(placed.columns[local])
            mask = torch.zeros(len(local), dtype=torch.bool)
            mask[v0 : v0 + len(kept)] = True
            visual.append(mask)
            if block.deepstack is not None:
                deep.append([d[kept.to(d.device)] for d in block.deepstack])
            media.append(Span("video", offset + v0, offset + v0 + len(kept), 0, len(self._blocks)))
            offset += len(local)
            self._blocks.append(
                FrameBlock(len(self._blocks), int(placed.columns[0]), int(placed.columns[-1]) + 1, list(block.times))
            )
        extra: dict[str, Any] = {}
        device = embeds[0].device
        if deep:
            extra["visual_pos_masks"] = torch.cat(visual).unsqueeze(0).to(device)
            extra["deepstack_visual_embeds"] = [torch.cat(parts) for parts in zip(*deep)]
        placed = Placed(torch.cat(positions, 1), torch.cat(columns))
        spans = ModalitySpans(offset, media)
        self._lm(torch.cat(embeds), placed, spans=spans, extra=extra, end=self._cursor.column, logits=False)

    def _prune(self, block: EncodedBlock) -> tuple[torch.Tensor, torch.Tensor]:
        features = block.features
        if self.pruner is None:
            return torch.arange(block.num_vision, device=features.device), features
        selection = self.pruner.compress(features.unsqueeze(0), grid=block.grid)
        valid = selection.indices[0] >= 0
        return selection.indices[0][valid], selection.features[0][valid]

    def _apply_memory(self, reserve: int) -> None:
        """Evict (window) or offload (retrieval) the blocks that left the live window."""
        memory = self.memory
        if not isinstance(memory, WindowMemory):
            return
        live = [b.index for b in self._blocks if b.where == "live" and b.index >= memory.sinks]
        leaving = [self._blocks[i] for i in memory.evictable(live)]
        if not leaving:
            return
        layers = [layer for layer in self._cache.layers if isinstance(layer, RaggedLayer)]
        for block in leaving:
            if self._store is not None:
                self._store.add(block, layers)  # marks it offloaded
            else:
                block.where = "evicted"
        lo, hi = leaving[0].start, leaving[-1].end  # consecutive blocks: one column range
        for layer in layers:
            layer.retain_where(lambda c: (c < lo) | (c >= hi), reserve=reserve)

    def _retrieval_swap(
        self, question: tuple[int, int], tail: int, max_new_tokens: int, retrieved: dict[int, list[float]]
    ) -> Any:
        """The listener's `swap`: per layer, the live layer plus the offloaded blocks the question picks."""
        store, memory = self._store, self.memory
        assert store is not None and isinstance(memory, RetrievalMemory)
        q0, q1 = question

        def swap(layer_idx: int, query: torch.Tensor, layer: RaggedLayer) -> RaggedLayer:
            chosen = store.select(layer_idx, query[0, :, q0:q1], query.shape[-1] ** -0.5, memory.retrieve)
            retrieved[layer_idx] = [store.blocks[i].times[0] for i in chosen]
            return merge(layer, store.fetch(layer_idx, chosen, layer.device), tail=tail, reserve=max_new_tokens)

        return swap

    def _stream_tokens(self) -> int:
        layers = [layer for layer in self._cache.layers if isinstance(layer, RaggedLayer)] if self._cache else []
        return max(layers[0].host_lengths) if layers else 0

    # -- internals: prompts ----------------------------------------------------------------------------------------
    def _drop_cache(self) -> int:
        self._cache, self._logical = None, 0
        self._prompt_signature, self._prompt_compressed = None, False
        return 0

    def _reuse_prefix(self, prompt: PromptInputs, end: int, *, reserve: int = 0) -> int:
        """Cut the cached prefix to its longest common prefix with `prompt[:end]` (leaving `reserve` spare slots
        beyond the prompt's rest); the number of tokens kept."""
        cached = self._prompt_signature
        if cached is None or self._cache is None:
            return self._drop_cache()
        reuse = snap(common_prefix(prompt.signature[:end], cached), prompt.spans)
        if reuse == 0:
            return self._drop_cache()
        if reuse < len(cached):
            for layer in self._cache.layers:
                layer.retain_where(lambda c: c < reuse, reserve=end - reuse + reserve)
                layer.logical_length = reuse
            self._logical = reuse
        return reuse

    def _prefill_prompt(
        self,
        prompt: PromptInputs,
        a: int,
        b: int,
        *,
        compress: bool,
        out: list[torch.Tensor] | None = None,
        reserve: int = 0,
    ) -> bool:
        """Prefill tokens `[a, b)` of `prompt` through the model's own forward (media included); whether the press
        removed entries. The last token's logits go to `out`; a layer built or compacted now keeps `reserve` spare
        slots per segment."""
        compressor = self._hook.compressor
        chunk = None
        if compress and compressor is not None:
            spans = [
                Span(s.modality, s.start - a, s.end - a, s.item, s.frame)
                for s in prompt.spans.spans
                if a <= s.start and s.end <= b
            ]
            chunk = compressor.plan(ModalitySpans(b - a, spans), _device(self.model))
        if self._cache is None:
            from transformers import DynamicCache

            self._cache = DynamicCache()
        self._hook.listener.call = CallPlan(
            columns=torch.arange(a, b, device=_device(self.model)), end=b, contiguous=a == self._logical, chunk=chunk,
            reserve=reserve,
        )  # fmt: skip
        try:
            result = self.model(**chunk_inputs(prompt, a, b), cache=self._cache, use_cache=True, logits_to_keep=1)
        finally:
            self._hook.listener.call = None
        self._logical = b
        if out is not None:
            out.append(result.logits[0, -1])
        if chunk is None:
            return False
        return bool(compressor.finish(chunk).compressed)


def _split_methods(methods: Iterable[Method | Composed]) -> tuple[list[Method], TokenPruner | None, KVPress | None]:
    flat: list[Method] = []
    for item in methods:
        flat.extend(item if isinstance(item, Composed) else [item])
    encoders, pruners, presses = [], [], []
    for method in flat:
        if isinstance(method, TokenPruner):
            pruners.append(method)
        elif isinstance(method, KVPress):
            presses.append(method)
        elif isinstance(method, Method) and method.stage == "encoder":
            encoders.append(method)
        else:
            raise TypeError(
                f"a streaming session takes encoder methods, one token pruner and one KV press; got {method!r}"
            )
    if len(pruners) > 1 or len(presses) > 1:
        raise ValueError("a streaming session takes at most one token pruner and one KV press (MixKV combines presses)")
    press = presses[0] if presses else None
    if press is not None and getattr(press, "decoding", None) is not None:
        raise ValueError(f"{press.name}: decoding-time compression (decode_budget) is not supported in a stream")
    return encoders, (pruners[0] if pruners else None), press


def _as_image(frame: Any) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    if isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3 and frame.dtype == np.uint8:
        return Image.fromarray(frame)
    shape = getattr(frame, "shape", None)
    raise TypeError(
        f"a frame is a PIL image or an (H, W, 3) uint8 RGB array, got {type(frame).__name__}"
        + (f" of shape {tuple(shape)}" if shape is not None else "")
    )


def _eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    out = {eos} if isinstance(eos, int) else set(eos or [])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        out.add(int(tokenizer.eos_token_id))
    return out


def _check_max_new_tokens(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {value!r}")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


__all__ = ["StreamingSession"]
