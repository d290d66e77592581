"""StreamingSession: offline equivalence, ask() leaves the stream as it was, reset, presses, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import omnipress as op
from omnipress.cache import cache_kept_bytes
from omnipress.encoders import STCCacher
from omnipress.streaming import FullMemory, StreamingSession
from tests.streaming._reference import (
    FRAME_SIZE,
    STREAM_FAMILIES,
    assert_same_state,
    frames,
    model_and_tokenizer,
    offline_inputs,
    offline_prefill,
    stream_state,
)

QUESTION = "What happens in the video?"
TIMES = [0.0, 0.5, 1.0, 1.5]


def _session(family: str, methods=(), memory="full", **knobs) -> StreamingSession:
    model, tok = model_and_tokenizer(family)
    return StreamingSession(model, tok, methods=methods, memory=memory, frame_size=FRAME_SIZE[family], **knobs)


def _stream_columns(session: StreamingSession) -> torch.Tensor:
    return session.cache.layers[0].head_positions()[0].long()


@pytest.mark.parametrize(
    ("family", "pruner"),
    [(f, None) for f in STREAM_FAMILIES] + [("llava_onevision", "stc"), ("qwen3_vl", "stc"), ("qwen2_vl", "uniform")],
)
def test_frames_appended_one_by_one_equal_one_offline_prefill(family, pruner):
    """Same keys, values, columns and answer logits as one prefill of the same kept tokens of the offline prompt
    (M-RoPE positions included: the offline positions are the model's own)."""
    methods = {"stc": [op.STCPruner(tokens_per_frame=3)], "uniform": [op.UniformPruner(tokens_per_frame=2)]}
    session = _session(family, methods.get(pruner, []))
    video, times = frames(6), [0.5 * i for i in range(6)]  # Qwen-VL: 3 temporal patches, more than grid rows
    for frame, t in zip(video, times):
        session.append_frame(frame, t)
    answer = session.ask(QUESTION, max_new_tokens=3)
    model, tok = model_and_tokenizer(family)
    offline = offline_inputs(model, tok, QUESTION, video, times)
    n = offline["inputs_embeds"].shape[1]
    stream = _stream_columns(session)
    end = session.stream_columns
    if pruner is None:
        assert torch.equal(stream, torch.arange(end))
    else:
        assert len(stream) < end  # something was pruned
    keep = torch.cat([stream, torch.arange(end, n)])  # kept stream tokens + the question turn
    cache, logits = offline_prefill(model, offline, keep)
    for ref, layer in zip(cache.layers, session.cache.layers):
        keys, values = layer.segments()
        for h, (k, v, c) in enumerate(zip(keys, values, layer.head_positions())):
            assert torch.equal(c.long(), stream)
            torch.testing.assert_close(k, ref.keys[0, h, : len(stream)], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(v, ref.values[0, h, : len(stream)], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(answer.logits, logits, rtol=1e-4, atol=1e-4)
    assert answer.time == times[-1] and answer.report.frames == 6


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_chunks_equal_frames_one_by_one(family):
    video = frames(4)
    one = _session(family, [op.STCPruner(tokens_per_frame=3)])
    for frame, t in zip(video, TIMES):
        one.append_frame(frame, t)
    chunked = _session(family, [op.STCPruner(tokens_per_frame=3)])
    chunked.append_frames(video[:2], TIMES[:2])
    chunked.append_frames(video[2:], TIMES[2:])
    a, b = stream_state(one.cache), stream_state(chunked.cache)
    for (ka, va, ca, la), (kb, vb, cb, lb) in zip(a, b):
        assert la == lb and all(torch.equal(x, y) for x, y in zip(ca, cb))
        for x, y in zip([*ka, *va], [*kb, *vb]):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    assert one.stats.frames == chunked.stats.frames == 4
    assert one.stats.blocks == chunked.stats.blocks == len(one.blocks)


@pytest.mark.parametrize(
    ("family", "memory"), [("llava_onevision", "full"), ("qwen3_vl", "window"), ("llava_onevision", "retrieval")]
)
def test_ask_leaves_the_cache_bitwise_unchanged(family, memory):
    policies = {"window": op.WindowMemory(frames=1, sinks=1), "retrieval": op.RetrievalMemory(frames=1, retrieve=2)}
    session = _session(family, memory=policies.get(memory, memory))
    for frame, t in zip(frames(6), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]):
        session.append_frame(frame, t)
    before = stream_state(session.cache)
    first = session.ask(QUESTION, max_new_tokens=4)
    assert_same_state(before, stream_state(session.cache))
    again = session.ask(QUESTION, max_new_tokens=4)
    assert_same_state(before, stream_state(session.cache))
    assert first.token_ids == again.token_ids and torch.equal(first.logits, again.logits)
    other = session.ask("And then?", max_new_tokens=2, do_sample=True, generator=torch.Generator().manual_seed(0))
    assert len(other.token_ids) <= 2
    assert_same_state(before, stream_state(session.cache))


def test_answer_continues_after_more_frames():
    """Asking, then appending more frames, gives the stream of a session that never asked."""
    video = frames(5)
    asked, silent = _session("llava_onevision"), _session("llava_onevision")
    for i, frame in enumerate(video):
        asked.append_frame(frame, float(i))
        silent.append_frame(frame, float(i))
        if i in (1, 3):
            asked.ask(QUESTION, max_new_tokens=2)
    assert_same_state(stream_state(asked.cache), stream_state(silent.cache))
    assert torch.equal(asked.ask(QUESTION).logits, silent.ask(QUESTION).logits)


def test_press_compresses_each_frame_chunk():
    """KNorm (key norms only) on a one-frame stream keeps, per KV head, the `budget` lowest-norm keys of the frame
    (brute force on the uncompressed session's keys) and every text token; budget >= the chunk keeps everything."""
    video = frames(1)
    plain = _session("llava_onevision")
    plain.append_frame(video[0], 0.0)
    press = op.KNorm(budget=5, scope="video")
    pressed = _session("llava_onevision", [press])
    pressed.append_frame(video[0], 0.0)
    prefix = 6  # chat turn before the video (text, never compressed)
    for ref, layer in zip(plain.cache.layers, pressed.cache.layers):
        ref_keys, _ = ref.segments()
        keys, _ = layer.segments()
        for h, (k, c) in enumerate(zip(keys, layer.head_positions())):
            frame_keys = ref_keys[h][prefix:]
            expected = frame_keys.float().norm(dim=-1).topk(5, largest=False).indices.sort().values + prefix
            assert torch.equal(c[:prefix].long(), torch.arange(prefix))
            assert torch.equal(c[prefix:].long(), expected)
            assert torch.equal(k, ref_keys[h][c.long()])
    assert press.report is not None and press.report.compressed
    assert cache_kept_bytes(pressed.cache) < cache_kept_bytes(plain.cache)
    answer = pressed.ask(QUESTION, max_new_tokens=2)
    assert answer.report.kv_bytes_kept < plain.ask(QUESTION, max_new_tokens=2).report.kv_bytes_kept

    keep_all = _session("llava_onevision", [op.SnapKV(budget=64, scope="video")])
    keep_all.append_frame(video[0], 0.0)
    assert_same_state(stream_state(plain.cache), stream_state(keep_all.cache))


def test_press_pruner_and_window_compose():
    methods = [op.STCPruner(tokens_per_frame=3), op.SnapKV(budget=2, window=1, scope="video")]
    session = _session("qwen2_5_vl", methods, memory=op.WindowMemory(frames=1, sinks=1))
    for frame, t in zip(frames(6), [0.5 * i for i in range(6)]):
        session.append_frame(frame, t)
    assert [b.where for b in session.blocks] == ["live", "evicted", "live"]
    layer = session.cache.layers[0]
    stream = layer.host_lengths[0]
    assert stream == 7 + 2 * 2  # prefix + two live blocks of 2 kept entries
    columns = layer.head_positions()[0]
    evicted = session.blocks[1]
    assert not bool(((columns >= evicted.start) & (columns < evicted.end)).any())
    answer = session.ask(QUESTION, max_new_tokens=2)
    assert answer.report.stream_tokens == stream and answer.report.frames_in_cache == 4
    # the model is left untouched between calls
    assert op.ModelSession.active_on(session.model) is None
    assert not session.model.config.get_text_config()._attn_implementation.startswith("omnipress")


def test_reset_starts_a_new_stream():
    pruner = op.STCPruner(tokens_per_frame=3)
    session = _session("llava_onevision", [pruner])
    video = frames(3)
    for i, frame in enumerate(video):
        session.append_frame(frame, float(i))
    first = session.ask(QUESTION, max_new_tokens=3)
    session.reset()
    assert session.cache is None and session.blocks == [] and pruner.memory_chunks == 0
    with pytest.raises(RuntimeError, match="at least one frame"):
        session.ask(QUESTION)
    for i, frame in enumerate(video):
        session.append_frame(frame, float(i))
    assert torch.equal(session.ask(QUESTION, max_new_tokens=3).logits, first.logits)


def test_pending_frames_of_a_temporal_patch():
    session = _session("qwen2_vl")
    video = frames(3)
    session.append_frame(video[0], 0.0)
    with pytest.raises(RuntimeError, match="wait for a whole temporal patch"):
        session.ask(QUESTION)
    session.append_frames(video[1:], [0.5, 1.0])
    answer = session.ask(QUESTION, max_new_tokens=1)
    assert answer.report.frames == 3 and answer.report.frames_pending == 1 and answer.report.frames_in_cache == 2
    assert answer.time == 0.5


def test_a_failed_encode_leaves_the_stream_as_it_was(monkeypatch):
    session = _session("qwen2_vl")
    video = frames(4)
    session.append_frame(video[0], 0.0)  # pending: half a temporal patch
    layout = session._layout

    def broken(frames, times):
        raise RuntimeError("encoder failure")

    monkeypatch.setattr(layout, "encode", broken)
    with pytest.raises(RuntimeError, match="encoder failure"):
        session.append_frames(video[1:3], [0.5, 1.0])
    monkeypatch.undo()
    assert session.blocks == [] and session.stats.frames == 0
    session.append_frames(video[1:3], [0.5, 1.0])  # the same frames again: accepted, as if the failure never was
    reference = _session("qwen2_vl")
    reference.append_frames(video[:3], [0.0, 0.5, 1.0])
    assert_same_state(stream_state(session.cache), stream_state(reference.cache))
    assert session.ask(QUESTION, max_new_tokens=1).report.frames_pending == 1


def test_stc_cacher_in_the_session():
    cacher = STCCacher(update_ratio=1.0, interval=2)
    video = frames(4)
    cached, dense = _session("llava_onevision", [cacher]), _session("llava_onevision")
    for i, frame in enumerate(video):
        cached.append_frame(frame, float(i))
        dense.append_frame(frame, float(i))
    assert cacher.stats.frames == 4 and cacher.frames_seen == 4
    torch.testing.assert_close(cached.ask(QUESTION).logits, dense.ask(QUESTION).logits, rtol=1e-4, atol=1e-4)
    cached.reset()
    assert cacher.frames_seen == 0


def test_real_video_frames():
    video = op.read_video("/work/shared/data/video/tree.avi", fps=2, max_frames=4)
    session = _session("llava_onevision", [op.STCPruner(tokens_per_frame=4)], memory="window")
    times = []
    for t, frame in video:
        session.append_frame(frame, t)
        times.append(t)
    answer = session.ask(QUESTION, max_new_tokens=2)
    assert len(times) == 4 and answer.time == times[-1]
    assert answer.report.frames == 4 and answer.text is not None


def test_errors():
    text_model, text_tok = model_and_tokenizer("qwen2")
    session = StreamingSession(text_model, text_tok)
    with pytest.raises(ValueError, match="streaming video supports"):
        session.append_frame(frames(1)[0])
    with pytest.raises(ValueError):
        StreamingSession(torch.nn.Linear(2, 2), text_tok)
    model, tok = model_and_tokenizer("llava_onevision")
    with pytest.raises(ValueError, match="unknown memory policy"):
        StreamingSession(model, tok, memory="lru")
    with pytest.raises(ValueError, match="frames must be an integer"):
        op.WindowMemory(frames=0)
    with pytest.raises(ValueError, match="retrieve must be an integer"):
        op.RetrievalMemory(retrieve=0)
    with pytest.raises(ValueError, match="at most one token pruner and one KV press"):
        StreamingSession(model, tok, methods=[op.KNorm(budget=4), op.KNorm(budget=4)])
    with pytest.raises(ValueError, match="decode_budget"):
        StreamingSession(model, tok, methods=[op.KNorm(budget=4, decode_budget=8)])
    with pytest.raises(TypeError, match="encoder methods, one token pruner and one KV press"):
        StreamingSession(model, tok, methods=["SnapKV"])
    session = StreamingSession(model, tok)
    with pytest.raises(RuntimeError, match="at least one frame"):
        session.ask(QUESTION)
    with pytest.raises(TypeError, match=r"\(H, W, 3\) uint8"):
        session.append_frame(np.zeros((8, 8), np.float32))
    session.append_frame(frames(1)[0], 1.0)
    with pytest.raises(ValueError, match="timestamps must increase"):
        session.append_frame(frames(1)[0], 1.0)
    with pytest.raises(ValueError, match="frames and"):
        session.append_frames(frames(2), [2.0])
    with pytest.raises(TypeError, match="unsupported generation argument"):
        session.ask(QUESTION, num_beams=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        session.ask(QUESTION, max_new_tokens=0)
    with pytest.raises(RuntimeError, match="holds a video stream"):
        session.generate({"input_ids": torch.tensor([[1, 2, 3]])})
    assert isinstance(session.memory, FullMemory)
