"""Press wiring: every press's `keep_indices` on real captured prefills against a brute-force reference of that press.

The scoring functions are tested against brute force in test_scoring.py; this file tests what the presses feed them
and do with them. Each reference below is written from the paper / official-code definition in plain loops and
float64 eager math, on each row's real tokens alone (padding stripped), from the captured post-RoPE queries, keys
and values of tiny random-weight models (`initializer_range=0.1`, so that attention is peaked enough for the query
heads of a GQA group to disagree; at the default 0.02 it is nearly uniform and every group reduction ranks alike):

- ``vl``: Qwen2-VL with a real photograph (M-RoPE, 48 image tokens among 83), 4 query / 2 KV heads;
- ``vl_batch``: the same prompt and a text-only prompt, left-padded into one batch;
- ``gqa``: a 4-layer Llama text model (4 query / 2 KV heads), a left-padded batch of two prompts.

Every check runs twice: `press.keep_indices` on `LayerInputs` the test builds itself (window = the last `window`
columns, candidates = in-scope real tokens outside the window, protected = every other real token), and the cache
`compress_captured` leaves (the plan's masks and capacities included). The last part changes one knob at a time and
requires the selection to change, so a press that ignores a knob fails.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import omnipress as op
from omnipress.cache import generated_cache
from omnipress.kv.base import LayerInputs
from omnipress.kv.budgets import RaggedIndices
from omnipress.kv.session import PrefillCapture, capture_prefill, compress_captured
from omnipress.testing import tiny_batch_inputs, tiny_inputs, tiny_model

from . import reference_attention as ref
from .test_budgets import ref_adakv, ref_pyramid, ref_sparsemm

# ---------------------------------------------------------------------------------------------------------------
# captured prefills


@dataclass
class Prefill:
    capture: PrefillCapture
    valid: torch.Tensor  # (batch, N) real tokens
    image: torch.Tensor  # (batch, N) image tokens
    num_layers: int
    kv_heads: int


def _prefill_of(model: torch.nn.Module, inputs: dict) -> Prefill:
    capture, _ = capture_prefill(model, **inputs)
    ids = inputs["input_ids"]
    image_id = getattr(model.config, "image_token_id", None)
    image = ids == image_id if image_id is not None else torch.zeros_like(ids, dtype=torch.bool)
    valid = inputs.get("attention_mask", torch.ones_like(ids)).bool()
    key = capture.layers[0][1]
    return Prefill(capture, valid, image & valid, len(capture.layers), key.shape[1])


@functools.cache
def prefill(name: str) -> Prefill:
    if name.startswith("vl"):
        model = tiny_model("qwen2_vl", initializer_range=0.1)
        if name == "vl":
            return _prefill_of(model, tiny_inputs("qwen2_vl", model))
        prompts = [{"question": "What is shown?"}, {"image": False, "question": "Say hi to everyone in the room now."}]
        return _prefill_of(model, tiny_batch_inputs("qwen2_vl", model, prompts))
    model = tiny_model(
        "llama", num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1
    )
    prompts = [
        {"question": "Tell me a short story about a fox who crosses a cold river at night."},
        {"question": "Say hi to everyone in the room, then describe today's weather."},
    ]
    return _prefill_of(model, tiny_batch_inputs("llama", model, prompts))


# ---------------------------------------------------------------------------------------------------------------
# the plan, written from the budget conventions


@dataclass
class RowPlan:
    start: int  # first real column (left padding before it)
    candidates: list[int]  # evictable positions, relative to `start`
    protected: list[int]  # always-kept positions, relative to `start`
    capacity: int  # base candidates kept per head


def row_plans(p: Prefill, press: op.KVPress) -> list[RowPlan]:
    cfg = press.budget_config
    n_cols = p.valid.shape[1]
    window = min(cfg.window, n_cols)
    plans = []
    for row in range(p.valid.shape[0]):
        real = p.valid[row].nonzero().flatten().tolist()
        start, n = real[0], len(real)
        in_scope = [i for i in range(n) if cfg.scope == "all" or bool(p.image[row, start + i])]
        candidates = [i for i in in_scope if i < n - window]
        protected = [i for i in range(n) if i not in candidates]
        if cfg.budget is not None:
            capacity = cfg.budget - window
        else:
            capacity = int(len(in_scope) * (1 - cfg.compression_ratio)) - (len(in_scope) - len(candidates))
        plans.append(RowPlan(start, candidates, protected, max(0, min(capacity, len(candidates)))))
    return plans


def layer_inputs(p: Prefill, press: op.KVPress, layer_idx: int) -> LayerInputs:
    """`LayerInputs` built by the test from `row_plans`, independent of `omnipress.kv.plan`."""
    q, k, v, scaling = p.capture.layers[layer_idx]
    bsz, n_cols = p.valid.shape
    candidates = torch.zeros(bsz, 1, n_cols, dtype=torch.bool)
    for row, plan in enumerate(row_plans(p, press)):
        candidates[row, 0, [plan.start + i for i in plan.candidates]] = True
    return LayerInputs(
        layer_idx=layer_idx,
        num_layers=p.num_layers,
        query=q,
        keys=k,
        values=v,
        scaling=scaling,
        window=min(press.budget_config.window, n_cols),
        candidates=candidates,
        protected=p.valid.unsqueeze(1) & ~candidates,
        capacity=torch.tensor([plan.capacity for plan in row_plans(p, press)]),
        key_mask=p.valid.unsqueeze(1),
    )


# ---------------------------------------------------------------------------------------------------------------
# brute-force scores, one row's real tokens at a time: q (Hq, n, D), k and v (Hkv, n, D), float64


def softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x - x.max())
    return e / e.sum()


def pool(x: list[float], kernel: int, how: str) -> list[float]:
    """SnapKV's 1-D pooling, stride 1, `kernel // 2` zero padding counted in the average (avg_pool1d default)."""
    r = kernel // 2
    out = []
    for i in range(len(x)):
        inside = [x[j] for j in range(i - r, i + r + 1) if 0 <= j < len(x)]
        out.append(sum(inside) / kernel if how == "avg" else max(inside))
    return out


def snapkv_ref(q: torch.Tensor, k: torch.Tensor, scaling: float, window: int, kernel: int, pooling: str) -> list:
    """Per KV head, the score of each of the first n - window positions: the attention of the last `window`
    queries (query j at position n - window + j sees keys <= its position), averaged over the window and over the
    head's query group (mean), then pooled."""
    q_heads, n = q.shape[:2]
    kv_heads = k.shape[0]
    group = q_heads // kv_heads
    prefix = n - window
    out = []
    for h in range(kv_heads):
        acc = [0.0] * prefix
        for qh in range(h * group, (h + 1) * group):
            for pos in range(n - window, n):
                probs = softmax((k[h, : pos + 1] @ q[qh, pos]) * scaling)
                for i in range(prefix):
                    acc[i] += float(probs[i]) / (window * group)
        out.append(pool(acc, kernel, pooling))
    return out


def h2o_ref(q: torch.Tensor, k: torch.Tensor, scaling: float) -> list:
    """Per KV head, the causal attention each key receives from every prompt query, summed, group mean."""
    q_heads, n = q.shape[:2]
    group = q_heads // k.shape[0]
    out = []
    for h in range(k.shape[0]):
        received = torch.zeros(n, dtype=torch.float64)
        for qh in range(h * group, (h + 1) * group):
            for pos in range(n):
                received[: pos + 1] += softmax((k[h, : pos + 1] @ q[qh, pos]) * scaling) / group
        out.append(received.tolist())
    return out


def knorm_ref(k: torch.Tensor) -> list:
    return [[-math.sqrt(float((k[h, i] ** 2).sum())) for i in range(k.shape[1])] for h in range(k.shape[0])]


def random_draw(press: op.RandomPress, q: torch.Tensor, k: torch.Tensor, layer_idx: int) -> list:
    """RandomPress's draw for one row alone (no padding), per KV head: the press's own seeded numbers (the draw is
    its definition; `test_random_draw_is_seeded_per_layer_head_and_token` checks what it may depend on)."""
    n = k.shape[2]
    alone = LayerInputs(
        layer_idx=layer_idx,
        num_layers=1 + layer_idx,
        query=q,
        keys=k,
        values=k,
        scaling=1.0,
        window=0,
        candidates=torch.ones(n, dtype=torch.bool),
        protected=torch.zeros(n, dtype=torch.bool),
        capacity=0,
    )
    return press.score(alone)[0].double().tolist()


def mixkv_ref(
    attention: list[float], keys: torch.Tensor, values: torch.Tensor, candidates: list[int], weight, value_norm: bool
) -> list[float]:
    """MixKV on one KV head (MixKV spec §2.2): min-max diversity against the mean unit key of all real keys and
    min-max value norms, each scaled to the mean host score over the candidates; weight = mean pairwise cosine of
    the head's keys (online) or fixed. Returns the score of every candidate position (others -inf)."""
    eps = 1e-8
    n = keys.shape[0]
    unit = keys / keys.norm(dim=-1, keepdim=True)
    mean_key = unit.mean(0)
    if weight == "online":
        cos = unit @ unit.T
        weight = min(max(float((cos.sum() - cos.diagonal().sum()) / (n * (n - 1))), 0.0), 1.0)
    mean_a = sum(attention[i] for i in candidates) / len(candidates)

    def scaled(raw: dict[int, float], e: float) -> dict[int, float]:
        low, high = min(raw.values()), max(raw.values())
        span = high - low + e
        mm = {i: (x - low) / span if span > 0 else 0.0 for i, x in raw.items()}
        mean = sum(mm.values()) / len(mm)
        return {i: x * mean_a / (mean + eps) for i, x in mm.items()}

    diversity = scaled({i: -float(unit[i] @ mean_key) for i in candidates}, eps)
    norms = scaled({i: float(values[i].norm()) for i in candidates}, 0.0)
    out = [float("-inf")] * n
    for i in candidates:
        importance = attention[i] + (norms[i] if value_norm else 0.0)
        out[i] = weight * diversity[i] + (1 - weight) * importance
    return out


# ---------------------------------------------------------------------------------------------------------------
# the reference selection of every press


def host_of(press: op.KVPress) -> op.KVPress:
    return press.host if isinstance(press, op.MixKV) else press


def reference(p: Prefill, press: op.KVPress, layer_idx: int) -> tuple[list[list[list[int]]], list[list[list[float]]]]:
    """Kept positions (padded columns, ascending) and ranking scores per row and KV head."""
    q_all, k_all, v_all, scaling = p.capture.layers[layer_idx]
    host = host_of(press)
    kept, all_scores = [], []
    for row, plan in enumerate(row_plans(p, press)):
        q = q_all[row, :, plan.start :].double()
        k = k_all[row, :, plan.start :].double()
        v = v_all[row, :, plan.start :].double()
        n = k.shape[1]
        window = min(host.window, p.valid.shape[1])
        if not plan.candidates:  # nothing in scope (a text-only row under a media scope): everything is kept
            kept.append([[plan.start + i for i in range(n)]] * k.shape[0])
            all_scores.append([[0.0] * (plan.start + n)] * k.shape[0])
            continue
        # importance scores of the host, per KV head over the row's n positions
        if isinstance(host, op.SnapKV):
            prefix = snapkv_ref(q, k, scaling, window, host.kernel, host.pooling)
            scores = [s + [0.0] * window for s in prefix]
        elif isinstance(host, op.H2O):
            scores = h2o_ref(q, k, scaling)
        elif isinstance(host, op.KNorm):
            scores = knorm_ref(k)
        elif isinstance(host, op.StreamingLLM):
            sinks = [i for i in plan.candidates if i < host.sinks]  # the row's first `sinks` tokens
            assert plan.capacity >= len(sinks), "choose a budget that holds the sinks"
            recent = [i for i in plan.candidates if i not in sinks][::-1][: plan.capacity - len(sinks)]
            order = sinks + recent  # ranked: sinks, then the most recent
            scores = [[float(len(order) - order.index(i)) if i in order else 0.0 for i in range(n)]] * k.shape[0]
        elif isinstance(host, op.RandomPress):
            scores = random_draw(
                host, q_all[row : row + 1, :, plan.start :], k_all[row : row + 1, :, plan.start :], layer_idx
            )
        else:
            raise AssertionError(f"no reference for {host.name}")
        # capacities per KV head
        base, heads, n_cand = plan.capacity, k.shape[0], len(plan.candidates)
        if isinstance(host, op.PyramidKV):
            caps = [ref_pyramid(base, p.num_layers, n_cand, host.beta, host.exact_total)[layer_idx]] * heads
        elif isinstance(host, op.AdaKV):
            rows = [[scores[h][i] for i in plan.candidates] for h in range(heads)]
            caps = ref_adakv(rows, base, host.floor_ratio, host.normalize, host.exact_total)
        elif isinstance(host, op.SparseMM):
            table = ref_sparsemm(host.profile.scores.double().tolist(), base, host.min_ratio, n_cand, host.exact_total)
            caps = table[layer_idx * heads : (layer_idx + 1) * heads]
        else:
            caps = [base] * heads
        if isinstance(press, op.MixKV):
            scores = [
                mixkv_ref(scores[h], k[h], v[h], plan.candidates, press.weight, press.use_value_norm)
                for h in range(heads)
            ]
        row_kept = []
        for h in range(heads):
            ranked = sorted(plan.candidates, key=lambda i, h=h: (-scores[h][i], i))
            chosen = set(ranked[: min(caps[h], n_cand)]) | set(plan.protected)
            row_kept.append(sorted(plan.start + i for i in chosen))
        kept.append(row_kept)
        all_scores.append([[float("nan")] * plan.start + s for s in scores])
    return kept, all_scores


# ---------------------------------------------------------------------------------------------------------------
# comparison


def as_lists(keep: torch.Tensor | RaggedIndices) -> list[list[list[int]]]:
    if isinstance(keep, RaggedIndices):
        return [[h.tolist() for h in row] for row in keep]
    return keep.tolist()


def cache_lists(cache, layer_idx: int, bsz: int) -> list[list[list[int]]]:
    layer = cache.layers[layer_idx]
    flat = [pos.long().tolist() for pos in layer.head_positions()]
    heads = len(flat) // bsz
    return [flat[row * heads : (row + 1) * heads] for row in range(bsz)]


def assert_same_selection(got: list, want: list, scores: list, protected: list[list[int]], label: str) -> None:
    """Equal kept positions per (row, head); where float32 and float64 rankings may legitimately differ (a swap of
    two entries whose reference scores agree to 1e-5 relative), the swap is accepted."""
    for row, (got_row, want_row) in enumerate(zip(got, want)):
        for h, (g, w) in enumerate(zip(got_row, want_row)):
            where = f"{label}: row {row} head {h}"
            assert len(g) == len(w), f"{where}: kept {len(g)} entries, reference {len(w)}"
            missing = set(protected[row]) - set(g)
            assert not missing, f"{where}: protected positions {sorted(missing)} not kept"
            if g == w:
                continue
            s = scores[row][h]
            swapped = [s[i] for i in set(g) ^ set(w)]
            scale = max(abs(x) for x in s if x == x and x != float("-inf"))
            assert max(swapped) - min(swapped) <= 1e-5 * scale, (
                f"{where}: kept {sorted(set(g) - set(w))} instead of {sorted(set(w) - set(g))}"
            )


def check_press(p: Prefill, press: op.KVPress, label: str) -> None:
    bsz = p.valid.shape[0]
    plans = row_plans(p, press)
    protected = [[plan.start + i for i in plan.protected] for plan in plans]
    cache, report = compress_captured(press, p.capture)
    assert report.compressed, f"{label}: choose a budget that compresses"
    for layer_idx in range(p.num_layers):
        want, scores = reference(p, press, layer_idx)
        got = as_lists(press.keep_indices(layer_inputs(p, press, layer_idx)))
        assert_same_selection(got, want, scores, protected, f"{label} keep_indices layer {layer_idx}")
        from_cache = cache_lists(cache, layer_idx, bsz)
        assert_same_selection(from_cache, want, scores, protected, f"{label} compress_captured layer {layer_idx}")


# ---------------------------------------------------------------------------------------------------------------
# every press against its reference


def _profile(p: Prefill, seed: int = 0) -> op.HeadProfile:
    scores = torch.rand(p.num_layers, p.kv_heads, generator=torch.Generator().manual_seed(seed)) ** 2
    scores[0, 0] = 2.0  # one dominant head
    return op.HeadProfile(scores, kind="visual", model="tiny")


PressFactory = Callable[[Prefill], op.KVPress]

PRESSES: dict[str, PressFactory] = {
    "SnapKV": lambda p: op.SnapKV(budget=24, window=4),
    "SnapKV-k3-max-w8": lambda p: op.SnapKV(budget=24, window=8, kernel=3, pooling="max"),
    "SnapKV-k7-ratio": lambda p: op.SnapKV(compression_ratio=0.6, window=4, kernel=7),
    "PyramidKV": lambda p: op.PyramidKV(budget=24, window=4, beta=4),
    "PyramidKV-official": lambda p: op.PyramidKV(budget=24, window=4, exact_total=False),
    "AdaKV": lambda p: op.AdaKV(budget=24, window=4, floor_ratio=0.3),
    "AdaKV-official": lambda p: op.AdaKV(budget=20, window=6, kernel=3, normalize=False, exact_total=False),
    "SparseMM": lambda p: op.SparseMM(budget=24, window=4, profile=_profile(p), min_ratio=0.2),
    "H2O": lambda p: op.H2O(budget=24, window=4),
    "H2O-ratio": lambda p: op.H2O(compression_ratio=0.5, window=8),
    "StreamingLLM": lambda p: op.StreamingLLM(budget=20, window=4, sinks=4),
    "StreamingLLM-no-sinks": lambda p: op.StreamingLLM(budget=16, window=2, sinks=0),
    "KNorm": lambda p: op.KNorm(budget=20, window=4),
    "RandomPress": lambda p: op.RandomPress(budget=20, window=4, seed=3),
    "MixKV-SnapKV": lambda p: op.MixKV(op.SnapKV(budget=24, window=4)),
    "MixKV-AdaKV": lambda p: op.MixKV(op.AdaKV(budget=24, window=4), weight=0.7, use_value_norm=False),
}
SCOPED: dict[str, PressFactory] = {  # only media tokens evicted: the image prompts
    "SnapKV-image": lambda p: op.SnapKV(budget=20, window=4, kernel=7, scope="image"),
    "AdaKV-image-ratio": lambda p: op.AdaKV(compression_ratio=0.7, window=4, scope="image"),
    "H2O-image": lambda p: op.H2O(budget=16, window=4, scope="image"),
    "KNorm-image": lambda p: op.KNorm(budget=12, window=4, scope="image"),
    "MixKV-PyramidKV-image": lambda p: op.MixKV(op.PyramidKV(budget=20, window=4, scope="image"), weight=0.3),
}
CASES = [(name, f, data) for name, f in PRESSES.items() for data in ("vl", "vl_batch", "gqa")]
CASES += [(name, f, data) for name, f in SCOPED.items() for data in ("vl", "vl_batch")]


@pytest.mark.parametrize(("name", "factory", "data"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_keep_indices_equal_the_brute_force_reference(name: str, factory: PressFactory, data: str) -> None:
    p = prefill(data)
    check_press(p, factory(p), f"{name} on {data}")


def test_scope_protects_text_and_evicts_only_image_tokens() -> None:
    p = prefill("vl")
    press = op.SnapKV(budget=20, window=4, scope="image")
    _, report = compress_captured(press, p.capture)
    n_image = int(p.image.sum())
    for layer_idx in range(p.num_layers):
        kept = as_lists(press.keep_indices(layer_inputs(p, press, layer_idx)))[0]
        for positions in kept:
            text = [i for i in range(p.valid.shape[1]) if not p.image[0, i]]
            assert set(text) <= set(positions)
            assert sum(bool(p.image[0, i]) for i in positions) == 16 < n_image
    assert report.kept_fraction("text") == 1.0


@pytest.mark.parametrize("data", ["vl", "vl_batch", "gqa"])
def test_headwise_presses_keep_exactly_the_nominal_total(data: str) -> None:
    p = prefill(data)
    for press in (
        op.PyramidKV(budget=24, window=4),
        op.AdaKV(budget=24, window=4),
        op.SparseMM(budget=24, window=4, profile=_profile(p)),
        op.MixKV(op.PyramidKV(budget=24, window=4)),
    ):
        _, report = compress_captured(press, p.capture)
        plans = row_plans(p, press)
        nominal = sum(p.num_layers * p.kv_heads * (plan.capacity + len(plan.protected)) for plan in plans)
        assert report.tokens_after == nominal, press.name
    official = op.PyramidKV(budget=24, window=4, exact_total=False)  # floored step: more than nominal
    _, report = compress_captured(official, p.capture)
    if p.num_layers > 2:
        assert report.tokens_after > nominal


# ---------------------------------------------------------------------------------------------------------------
# StreamingLLM, RandomPress and KNorm end to end


def _generate(model, inputs, n=5):
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=n, do_sample=False, output_logits=True, return_dict_in_generate=True
        )


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: op.StreamingLLM(budget=20, window=4, sinks=4),
        lambda: op.RandomPress(budget=20, window=4, seed=1),
        lambda: op.KNorm(budget=20, window=4),
    ],
    ids=["StreamingLLM", "RandomPress", "KNorm"],
)
def test_query_free_presses_generate_like_the_masked_full_cache(family: str, make) -> None:
    model = tiny_model(family, attn_implementation="eager")
    inputs = tiny_inputs(family, model)
    n_prompt = inputs["input_ids"].shape[1]
    press = make()
    with press(model):
        out = _generate(model, inputs)
    report = press.report
    assert report.compressed and report.prompt_tokens == n_prompt
    assert all(kept == 20 for stats in report.layers for kept in stats.kept_per_head)
    cache = generated_cache(out)
    keep = ref.keep_masks_from_cache(cache, n_prompt)
    for mask in keep.values():
        assert bool(mask[..., -4:].all())  # the window, in every head
        assert int(mask.sum(-1).min()) == int(mask.sum(-1).max()) == 20
    if isinstance(press, op.StreamingLLM):
        want = list(range(4)) + list(range(n_prompt - 16, n_prompt))
        assert all(mask[0, h].nonzero().flatten().tolist() == want for mask in keep.values() for h in range(2))
    ref.install(keep)
    with ref.attention_as(model):
        want = _generate(model, inputs)
    assert torch.equal(out.sequences, want.sequences)
    for a, b in zip(out.logits, want.logits):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# every knob changes the selection


def selection(p: Prefill, press: op.KVPress) -> list:
    return [as_lists(press.keep_indices(layer_inputs(p, press, i))) for i in range(p.num_layers)]


def _other_profile(p: Prefill) -> op.HeadProfile:
    scores = torch.ones(p.num_layers, p.kv_heads)
    scores[-1, -1] = 5.0
    return op.HeadProfile(scores, kind="visual", model="tiny")


KNOBS: list[tuple[str, str, PressFactory, PressFactory]] = [
    ("SnapKV", "window", lambda p: op.SnapKV(budget=24, window=4), lambda p: op.SnapKV(budget=24, window=8)),
    ("SnapKV", "kernel", lambda p: op.SnapKV(budget=24, window=4), lambda p: op.SnapKV(budget=24, window=4, kernel=7)),
    (
        "SnapKV",
        "kernel=1",
        lambda p: op.SnapKV(budget=24, window=4),
        lambda p: op.SnapKV(budget=24, window=4, kernel=1),
    ),
    (
        "SnapKV",
        "pooling",
        lambda p: op.SnapKV(budget=24, window=4),
        lambda p: op.SnapKV(budget=24, window=4, pooling="max"),
    ),
    (
        "SnapKV",
        "scope",
        lambda p: op.SnapKV(budget=24, window=4),
        lambda p: op.SnapKV(budget=24, window=4, scope="image"),
    ),
    (
        "SnapKV",
        "compression_ratio",
        lambda p: op.SnapKV(compression_ratio=0.3, window=4),
        lambda p: op.SnapKV(compression_ratio=0.6, window=4),
    ),
    (
        "PyramidKV",
        "beta",
        lambda p: op.PyramidKV(budget=24, window=4),
        lambda p: op.PyramidKV(budget=24, window=4, beta=2),
    ),
    (
        "PyramidKV",
        "kernel",
        lambda p: op.PyramidKV(budget=24, window=4),
        lambda p: op.PyramidKV(budget=24, window=4, kernel=9),
    ),
    (
        "AdaKV",
        "floor_ratio",
        lambda p: op.AdaKV(budget=24, window=4),
        lambda p: op.AdaKV(budget=24, window=4, floor_ratio=0.9),
    ),
    (
        "AdaKV",
        "normalize",
        lambda p: op.AdaKV(budget=12, window=4, floor_ratio=0.0),
        lambda p: op.AdaKV(budget=12, window=4, floor_ratio=0.0, normalize=False),
    ),
    (
        "AdaKV",
        "pooling",
        lambda p: op.AdaKV(budget=24, window=4),
        lambda p: op.AdaKV(budget=24, window=4, pooling="max"),
    ),
    (
        "SparseMM",
        "min_ratio",
        lambda p: op.SparseMM(budget=24, window=4, profile=_profile(p)),
        lambda p: op.SparseMM(budget=24, window=4, profile=_profile(p), min_ratio=0.8),
    ),
    (
        "SparseMM",
        "profile",
        lambda p: op.SparseMM(budget=24, window=4, profile=_profile(p)),
        lambda p: op.SparseMM(budget=24, window=4, profile=_other_profile(p)),
    ),
    ("H2O", "window", lambda p: op.H2O(budget=24, window=4), lambda p: op.H2O(budget=24, window=8)),
    ("H2O", "scope", lambda p: op.H2O(budget=24, window=4), lambda p: op.H2O(budget=24, window=4, scope="image")),
    (
        "StreamingLLM",
        "sinks",
        lambda p: op.StreamingLLM(budget=20, window=4),
        lambda p: op.StreamingLLM(budget=20, window=4, sinks=0),
    ),
    (
        "RandomPress",
        "seed",
        lambda p: op.RandomPress(budget=20, window=4),
        lambda p: op.RandomPress(budget=20, window=4, seed=1),
    ),
    ("KNorm", "window", lambda p: op.KNorm(budget=20, window=4), lambda p: op.KNorm(budget=20, window=10)),
    (
        "MixKV",
        "weight",
        lambda p: op.MixKV(op.SnapKV(budget=24, window=4), weight=0.0),
        lambda p: op.MixKV(op.SnapKV(budget=24, window=4), weight=1.0),
    ),
    (
        "MixKV",
        "weight=online",
        lambda p: op.MixKV(op.SnapKV(budget=24, window=4), weight=0.0),
        lambda p: op.MixKV(op.SnapKV(budget=24, window=4)),
    ),
    (
        "MixKV",
        "use_value_norm",
        lambda p: op.MixKV(op.AdaKV(budget=24, window=4)),
        lambda p: op.MixKV(op.AdaKV(budget=24, window=4), use_value_norm=False),
    ),
    (
        "MixKV",
        "host kernel",
        lambda p: op.MixKV(op.SnapKV(budget=24, window=4), weight=0.2),
        lambda p: op.MixKV(op.SnapKV(budget=24, window=4, kernel=1), weight=0.2),
    ),
]


@pytest.mark.parametrize(("press", "knob", "a", "b"), KNOBS, ids=[f"{k[0]}-{k[1]}" for k in KNOBS])
def test_each_knob_changes_the_selection(press: str, knob: str, a: PressFactory, b: PressFactory) -> None:
    p = prefill("vl")
    first, second = a(p), b(p)
    assert selection(p, first) == selection(p, a(p)), f"{press}: the selection is not reproducible"
    assert selection(p, first) != selection(p, second), f"{press} ignores `{knob}`"


def test_random_draw_is_seeded_per_layer_head_and_token() -> None:
    """The draw is uniform in [0, 1), reproducible, different for every seed, layer and KV head, and depends on a
    token's index among its row's real tokens only (a left-padded row draws as the prompt alone)."""
    p = prefill("gqa")
    press = op.RandomPress(budget=20, window=4, seed=5)
    draws = [press.score(layer_inputs(p, press, i)) for i in range(p.num_layers)]  # (batch, kv_heads, N) each
    assert torch.equal(draws[0], op.RandomPress(budget=20, window=4, seed=5).score(layer_inputs(p, press, 0)))
    other_seed = op.RandomPress(budget=20, window=4, seed=6).score(layer_inputs(p, press, 0))
    valid = p.valid.unsqueeze(1).expand_as(draws[0])
    assert not torch.equal(draws[0][valid], other_seed[valid])
    assert not torch.equal(draws[0][valid], draws[1][valid])  # per layer
    assert not torch.equal(draws[0][:, 0][p.valid], draws[0][:, 1][p.valid])  # per KV head
    real = torch.cat([d[valid] for d in draws])
    assert float(real.min()) >= 0.0 and float(real.max()) < 1.0 and abs(float(real.mean()) - 0.5) < 0.05
    start = int(p.valid[1].long().argmax())
    q, k = p.capture.layers[2][0][1:, :, start:], p.capture.layers[2][1][1:, :, start:]
    alone = torch.tensor(random_draw(press, q, k, 2), dtype=torch.float32)
    assert torch.equal(draws[2][1, :, start:], alone)


@pytest.mark.parametrize("cls", [op.PyramidKV, op.AdaKV, op.SparseMM], ids=lambda c: c.__name__)
def test_exact_total_knob_changes_the_selection(cls) -> None:
    p = prefill("gqa")  # 4 layers: the official pyramid step and per-head rounding miss the total here
    extra = {"profile": _profile(p)} if cls is op.SparseMM else {}
    exact, official = cls(budget=20, window=4, **extra), cls(budget=20, window=4, exact_total=False, **extra)
    assert selection(p, exact) != selection(p, official), f"{cls.__name__} ignores `exact_total`"
