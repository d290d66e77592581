"""Memory policies: window and retrieval bound the live cache; retrieval brings back the blocks a brute-force
ReKV scoring picks, and the answer attends over exactly the live entries plus those blocks."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import omnipress as op
from omnipress.cache import RaggedLayer
from omnipress.streaming import BlockStore, FrameBlock, StreamingSession
from tests.streaming._reference import FRAME_SIZE, frames, model_and_tokenizer, offline_inputs

QUESTION = "What happens in the video?"


def _session(memory, family="llava_onevision", tokens=4) -> StreamingSession:
    model, tok = model_and_tokenizer(family)
    pruner = op.UniformPruner(tokens_per_frame=tokens)
    return StreamingSession(model, tok, methods=[pruner], memory=memory, frame_size=FRAME_SIZE[family])


@pytest.mark.parametrize("memory", ["window", "retrieval"])
def test_window_and_retrieval_keep_the_live_cache_flat(memory):
    policy = op.WindowMemory(frames=3, sinks=1) if memory == "window" else op.RetrievalMemory(frames=3, sinks=1)
    session = _session(policy)
    full = _session("full") if memory == "window" else None
    entries, nbytes, host = [], [], []
    video = frames(4, size=32) * 6  # 24 frames
    for i, frame in enumerate(video):
        session.append_frame(frame, float(i))
        if full is not None:
            full.append_frame(frame, float(i))
        entries.append(session.cache.layers[0].host_lengths[0])
        nbytes.append(session.kv_bytes())
        host.append(session.offloaded.nbytes if session.offloaded is not None else 0)
    prefix = 6
    assert entries[3:] == [prefix + 4 * 4] * 21  # prefix + (1 sink + 3 recent) frames of 4 tokens
    assert len(set(nbytes[8:])) == 1  # no growth once the window is full
    live = [b for b in session.blocks if b.where == "live"]
    assert [b.index for b in live] == [0, 21, 22, 23]
    if memory == "retrieval":
        assert all(b.where == "offloaded" for b in session.blocks[1:21]) and len(session.offloaded) == 20
        assert host[-1] == 20 * host[5] // 2  # 20 blocks offloaded, 2 after frame 5
    else:
        assert all(b.where == "evicted" for b in session.blocks[1:21]) and session.offloaded is None
        assert full.cache.layers[0].host_lengths[0] == prefix + 24 * 4 and full.kv_bytes() > 3 * nbytes[-1]
    answer = session.ask(QUESTION, max_new_tokens=2)
    assert answer.report.frames_in_cache == 4 and answer.time == 23.0
    if memory == "retrieval":
        assert answer.report.offloaded_bytes == host[-1]
        assert answer.report.answer_kv_bytes > answer.report.kv_bytes  # the answering cache holds retrieved blocks


def _brute_force_scores(store: BlockStore, layer: int, query: torch.Tensor) -> torch.Tensor:
    """Mean attention logit of every question query head to each block's mean key (its own KV head), by loops."""
    q_heads, _, dim = query.shape
    scores = []
    for entries in store.entries[layer]:
        kv_heads = len(entries.lengths)
        groups = q_heads // kv_heads
        total = 0.0
        for h in range(q_heads):
            keys, _, _ = entries.segment(h // groups)
            mean_key = keys.double().mean(0)
            total += float((query[h].double().mean(0) * mean_key).sum()) * dim**-0.5
        scores.append(total / q_heads)
    return torch.tensor(scores, dtype=torch.float64)


def test_block_store_scores_equal_brute_force():
    torch.manual_seed(0)
    layer = RaggedLayer.from_dense(torch.randn(1, 2, 30, 8), torch.randn(1, 2, 30, 8))
    store = BlockStore(num_layers=1)
    for i in range(5):
        store.add(FrameBlock(i, 5 + 5 * i, 10 + 5 * i, [float(i)]), [layer])
    query = torch.randn(4, 3, 8)  # 4 query heads over 2 KV heads, 3 question tokens
    expected = _brute_force_scores(store, 0, query)
    torch.testing.assert_close(store.scores(0, query, 8**-0.5).double(), expected, rtol=1e-5, atol=1e-6)
    top = sorted(expected.topk(2).indices.tolist())
    assert store.select(0, query, 8**-0.5, 2) == top
    assert store.select(0, query, 8**-0.5, 9) == list(range(5))


@pytest.mark.parametrize("retrieve", [2, 100])
def test_retrieval_answers_over_the_live_cache_and_the_best_blocks(monkeypatch, retrieve):
    """The blocks brought back are the brute-force best per layer, and the answer's logits equal a prefill of the
    question over a dense cache of the live entries plus those blocks' offloaded entries (column order)."""
    session = _session(op.RetrievalMemory(frames=2, sinks=1, retrieve=retrieve))
    video = frames(8, size=32)
    times = [float(i) for i in range(8)]
    for frame, t in zip(video, times):
        session.append_frame(frame, t)
    store = session.offloaded
    assert len(store) == 5
    picked: dict[int, tuple[torch.Tensor, list[int]]] = {}
    select = store.select

    def recording(layer_idx, query, scaling, count):
        chosen = select(layer_idx, query, scaling, count)
        picked[layer_idx] = (query.clone(), chosen)
        return chosen

    monkeypatch.setattr(store, "select", recording)
    answer = session.ask(QUESTION, max_new_tokens=1)
    model, tok = model_and_tokenizer("llava_onevision")
    num_layers = len(session.cache.layers)
    assert sorted(picked) == list(range(num_layers))
    cache = DynamicCache()
    for idx, layer in enumerate(session.cache.layers):
        query, chosen = picked[idx]
        expected = _brute_force_scores(store, idx, query).topk(min(retrieve, len(store))).indices
        assert chosen == sorted(expected.tolist())
        assert answer.report.retrieved[idx] == [store.blocks[i].times[0] for i in chosen]
        keys, values = layer.segments()
        heads_k, heads_v = [], []
        for h in range(layer.num_segments):
            parts = [(layer.head_positions()[h], keys[h], values[h])]
            parts += [(store.entries[idx][i].segment(h)[2], *store.entries[idx][i].segment(h)[:2]) for i in chosen]
            columns = torch.cat([p[0] for p in parts]).long()
            order = columns.argsort()
            heads_k.append(torch.cat([p[1] for p in parts])[order])
            heads_v.append(torch.cat([p[2] for p in parts])[order])
        cache.update(torch.stack(heads_k)[None], torch.stack(heads_v)[None], idx)
    offline = offline_inputs(model, tok, QUESTION, video, times)
    end = session.stream_columns
    n = offline["inputs_embeds"].shape[1]
    with torch.no_grad():
        out = model.model.language_model(
            inputs_embeds=offline["inputs_embeds"][:, end:],
            position_ids=offline["position_ids"][..., end:],
            attention_mask=torch.ones(1, cache.get_seq_length() + n - end, dtype=torch.long),
            cache=cache,
            use_cache=True,
        )
        logits = model.get_output_embeddings()(out.last_hidden_state[0, -1])
    torch.testing.assert_close(answer.logits, logits, rtol=1e-4, atol=1e-4)
