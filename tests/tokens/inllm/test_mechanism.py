"""In-LLM audio pruning at layer K on real model classes (tiny random Qwen2-Audio, Qwen2.5-Omni thinker, Whisper)
with real speech: bit-identity when everything is kept, shrinking layers, original positions, decoding against a
hand-built reference, batches, beams, errors."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.cache import RaggedLayer
from omnipress.generation import build_inputs
from omnipress.testing import real_speech, tiny_inputs, tiny_model, tiny_processor, whisper_inputs

from .reference import eager_attentions, encoded_inputs, pruned_logits, whisper_pruned_logits

PRUNERS = [op.FastV, op.DART, op.FrameAudioPruner, op.RandomAudioPruner]


@pytest.fixture(scope="module")
def audio_model():
    return tiny_model("qwen2_audio", num_hidden_layers=4)


@pytest.fixture(scope="module")
def omni_model():
    return tiny_model("qwen2_5_omni", num_hidden_layers=4)


@pytest.fixture(scope="module")
def whisper():
    return tiny_model("whisper", decoder_layers=3)


def _inputs(model, family="qwen2_audio", clip="harvard_01", question="What is said?"):
    return build_inputs(model, tiny_processor(family, model), text=question, audio=[real_speech(clip)])


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni", "whisper"])
def test_retain_one_is_bit_identical(family, audio_model, omni_model, whisper):
    model = {"qwen2_audio": audio_model, "qwen2_5_omni": omni_model, "whisper": whisper}[family]
    inputs = tiny_inputs(family, model, audio=True, image=False) if family != "whisper" else tiny_inputs(family, model)
    with torch.no_grad():
        if family == "whisper":  # encode once: the methods act on the decoder
            encoded = model.model.encoder(inputs.pop("input_features"))
            inputs["encoder_outputs"] = (encoded.last_hidden_state,)
        elif family == "qwen2_audio":
            inputs = encoded_inputs(model, inputs)
        ref = model(**inputs).logits
        for method in [*(p(retain=1.0, layer=2) for p in PRUNERS), op.HeadRouter(retain=1.0, debias="detrend")]:
            with method(model):
                got = model(**inputs).logits
            assert torch.equal(got, ref), method.name
            assert not method.report.pruned and method.report.audio_before[0] > 0


def _tokens_per_layer(model, method, inputs):
    adapter = op.get_adapter(model)
    counts = {}

    def count(idx):
        def hook(module, args, kwargs):
            counts[idx] = (args[0] if args else kwargs["hidden_states"]).shape[1]

        return hook

    with method(model):
        handles = [
            layer.register_forward_pre_hook(count(i), with_kwargs=True)
            for i, layer in enumerate(adapter.decoder_layers)
        ]
        try:
            with torch.no_grad():
                model(**inputs)
        finally:
            for h in handles:
                h.remove()
    return counts


@pytest.mark.parametrize("pruner", PRUNERS)
def test_layers_from_k_run_on_the_kept_tokens(pruner, audio_model):
    inputs = encoded_inputs(audio_model, _inputs(audio_model))
    n = inputs["input_ids"].shape[1]
    audio = int((inputs["input_ids"] == audio_model.config.audio_token_id).sum())
    method = pruner(retain=0.5, layer=2)
    counts = _tokens_per_layer(audio_model, method, inputs)
    kept = n - audio + -(-audio // 2)
    assert counts == {0: n, 1: n, 2: kept, 3: kept}
    assert method.report.audio_after == [-(-audio // 2)]
    assert method.report.keep.sum() == kept


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni"])
def test_kept_positions_keep_their_original_values(family, audio_model, omni_model):
    model = audio_model if family == "qwen2_audio" else omni_model
    inputs = tiny_inputs(family, model, audio=True, image=False)
    adapter = op.get_adapter(model)
    seen = {}

    def grab(name):
        def hook(module, args, kwargs):
            seen[name] = (kwargs["position_embeddings"], kwargs["position_ids"])

        return hook

    method = op.FastV(retain=0.3, layer=2)
    with method(model):
        h0 = adapter.decoder_layers[0].register_forward_pre_hook(grab(0), with_kwargs=True)
        h3 = adapter.decoder_layers[3].register_forward_pre_hook(grab(3), with_kwargs=True)
        with torch.no_grad():
            model(**inputs)
        h0.remove()
        h3.remove()
    keep = method.report.keep[0]
    (cos0, sin0), pos0 = seen[0]
    (cos3, sin3), pos3 = seen[3]
    assert cos3.shape[-2] == int(keep.sum()) < cos0.shape[-2]
    assert torch.equal(cos3, cos0[..., keep, :]) and torch.equal(sin3, sin0[..., keep, :])
    if family == "qwen2_audio":
        assert torch.equal(pos3, pos0[..., keep])
        assert torch.equal(pos3[0], keep.nonzero().squeeze(-1))  # positions are the unpruned columns, with gaps
    else:  # M-RoPE: the rotary tables are those of the original 3-D positions at the kept columns
        positions, _ = adapter.rope_index(inputs["input_ids"], inputs)  # (3, 1, N)
        kept_positions = positions[..., keep]
        cos, sin = adapter.language_model.rotary_emb(cos3, kept_positions)
        assert torch.equal(cos, cos3) and torch.equal(sin, sin3)
        assert torch.equal(kept_positions[0, 0], keep.nonzero().squeeze(-1))


@pytest.mark.parametrize(
    ("family", "pruner"),
    [
        ("qwen2_audio", op.FastV),
        ("qwen2_audio", op.DART),
        ("qwen2_audio", op.FrameAudioPruner),
        ("qwen2_5_omni", op.FastV),
    ],
)
def test_decoding_equals_the_hand_built_reference(family, pruner, audio_model, omni_model):
    model = audio_model if family == "qwen2_audio" else omni_model
    inputs = tiny_inputs(family, model, audio=True, image=False)
    method = pruner(retain=0.4, layer=2)
    with method(model), torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    keep = method.report.keep[0]
    ids = out.sequences[:, :-1]  # the prompt and every generated token but the last
    extended = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    expected = pruned_logits(model, extended, keep, layer=2, steps=len(out.logits))
    for got, want in zip(out.logits, expected):
        torch.testing.assert_close(got[0], want, atol=2e-5, rtol=1e-4)


def test_fastv_keeps_the_top_mean_attention_of_the_last_token():
    model = tiny_model("qwen2_audio", num_hidden_layers=4, attn_implementation="eager")
    inputs = encoded_inputs(model, _inputs(model))
    attention = eager_attentions(model, inputs)[1]  # layer K-1 = 1, (1, H, N, N)
    scores = attention[0, :, -1].mean(0)  # (N,)
    audio = (inputs["input_ids"][0] == model.config.audio_token_id).nonzero().squeeze(-1)
    k = -(-len(audio) * 3 // 10)
    expected = audio[scores[audio].topk(k).indices].sort().values
    method = op.FastV(retain=0.3, layer=2)
    with method(model), torch.no_grad():
        model(**inputs)
    kept_audio = (method.report.keep[0] & (inputs["input_ids"][0] == model.config.audio_token_id)).nonzero()
    assert torch.equal(kept_audio.squeeze(-1), expected)
    text = op.FastV(retain=0.3, layer=2, query="text")  # every token after the audio
    with text(model), torch.no_grad():
        model(**inputs)
    start = int(audio.max()) + 1
    scores_t = attention[0, :, start:].mean(dim=(0, 1))
    expected_t = audio[scores_t[audio].topk(k).indices].sort().values
    got_t = (text.report.keep[0] & (inputs["input_ids"][0] == model.config.audio_token_id)).nonzero().squeeze(-1)
    assert torch.equal(got_t, expected_t)
    assert not torch.equal(expected_t, expected)


def test_dart_scores_the_hidden_states_entering_layer_k(audio_model):
    from omnipress.tokens.inllm.scoring import dart_scores, top_fraction

    inputs = encoded_inputs(audio_model, _inputs(audio_model))
    seen = {}
    layer = op.get_adapter(audio_model).decoder_layers[2]
    handle = layer.register_forward_pre_hook(lambda m, a, k: seen.update(h=a[0]), with_kwargs=True)
    with torch.no_grad():
        audio_model(**inputs)
    handle.remove()
    c = inputs["input_ids"] == audio_model.config.audio_token_id
    keeps = []
    for pivots in (1, 6):
        method = op.DART(retain=0.5, layer=2, pivots=pivots)
        with method(audio_model), torch.no_grad():
            audio_model(**inputs)
        expected = top_fraction(dart_scores(seen["h"], c, pivots), c, 0.5)
        assert torch.equal(method.report.keep & c, expected)
        keeps.append(expected)
    assert not torch.equal(*keeps)


def _batch(model):
    short = real_speech("harvard_02")[: 16000 * 2]
    rows = [_inputs(model, clip="harvard_01"), _inputs(model, question="Say it.")]
    rows[1] = build_inputs(model, tiny_processor("qwen2_audio", model), text="Say it.", audio=[short])
    return rows, op.get_adapter(model)


def test_batched_rows_decode_like_each_row_alone(audio_model):
    rows, adapter = _batch(audio_model)
    batch = adapter.collate_inputs(rows) if hasattr(adapter, "collate_inputs") else None
    if batch is None:
        from omnipress.adapters import collate_inputs

        batch = collate_inputs(audio_model, rows)
    method = op.FastV(retain=0.5, layer=2)
    with method(audio_model), torch.no_grad():
        together = audio_model.generate(
            **batch, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    report = method.report
    assert report.audio_after == [-(-n // 2) for n in report.audio_before]
    assert report.audio_before[0] != report.audio_before[1]
    for row, inputs in enumerate(rows):
        alone = op.FastV(retain=0.5, layer=2)
        with alone(audio_model), torch.no_grad():
            single = audio_model.generate(
                **inputs, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
            )
        assert torch.equal(together.sequences[row, -3:], single.sequences[0, -3:])
        for a, b in zip(together.logits, single.logits):
            torch.testing.assert_close(a[row], b[0], atol=2e-5, rtol=1e-4)


def test_cache_layers_from_k_hold_only_the_kept_tokens(audio_model):
    inputs = _inputs(audio_model)
    method = op.FrameAudioPruner(retain=0.5, layer=1)
    with method(audio_model), torch.no_grad():
        out = audio_model(**inputs)
        cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
        n = inputs["input_ids"].shape[1]
        kept = int(method.report.keep.sum())
        assert not isinstance(cache.layers[0], RaggedLayer) and cache.layers[0].keys.shape[2] == n
        for layer in cache.layers[1:]:
            assert isinstance(layer, RaggedLayer)
            assert layer.host_lengths == [kept] * layer.num_segments
            assert layer.get_seq_length() == n  # decoding continues at the unpruned length
            assert torch.equal(layer.dense_positions()[0, 0].long(), method.report.keep[0].nonzero().squeeze(-1))


def test_beam_search_runs_on_pruned_caches(audio_model):
    inputs = _inputs(audio_model)
    with torch.no_grad():
        vanilla = audio_model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False)
        with op.FastV(retain=1.0)(audio_model):
            same = audio_model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False)
        method = op.DART(retain=0.5)
        with method(audio_model):
            beams = audio_model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False)
    assert torch.equal(same, vanilla)
    assert beams.shape == vanilla.shape
    assert len(method.report.audio_before) == 3 and len(set(map(tuple, method.report.keep.tolist()))) == 1


def test_random_pruner_is_seeded_and_frame_is_uniform(audio_model):
    inputs = encoded_inputs(audio_model, _inputs(audio_model))
    audio = inputs["input_ids"][0] == audio_model.config.audio_token_id
    keeps = []
    for seed in (0, 0, 1):
        method = op.RandomAudioPruner(retain=0.5, seed=seed)
        with method(audio_model), torch.no_grad():
            audio_model(**inputs)
        keeps.append(method.report.keep[0])
    assert torch.equal(keeps[0], keeps[1]) and not torch.equal(keeps[0], keeps[2])
    frame = op.FrameAudioPruner(retain=0.25)
    with frame(audio_model), torch.no_grad():
        audio_model(**inputs)
    columns = audio.nonzero().squeeze(-1)
    n, k = len(columns), -(-len(columns) // 4)
    expected = columns[[i * n // k for i in range(k)]]
    assert torch.equal((frame.report.keep[0] & audio).nonzero().squeeze(-1), expected)


def test_prompt_without_audio_runs_untouched(audio_model):
    inputs = tiny_inputs("qwen2_audio", audio_model, audio=False)
    method = op.FastV(retain=0.5)
    with torch.no_grad():
        ref = audio_model(**inputs).logits
        with method(audio_model):
            got = audio_model(**inputs).logits
    assert torch.equal(got, ref) and method.report.audio_before == [0]


def test_errors():
    with pytest.raises(ValueError, match="retain"):
        op.FastV(retain=0.0)
    with pytest.raises(ValueError, match="retain"):
        op.DART(retain=1.5)
    with pytest.raises(ValueError, match="layer"):
        op.FastV(layer=0)
    with pytest.raises(ValueError, match="layer"):
        op.FrameAudioPruner(layer=-1)
    with pytest.raises(ValueError, match="query"):
        op.FastV(query="all")
    with pytest.raises(ValueError, match="pivots"):
        op.DART(pivots=0)
    with pytest.raises(ValueError, match="whisper_padding"):
        op.FastV(whisper_padding="trim")
    text = tiny_model("qwen2")
    with pytest.raises(ValueError, match="takes no audio"), op.FastV()(text):
        pass
    model = tiny_model("qwen2_audio", num_hidden_layers=2)
    with pytest.raises(ValueError, match="out of range"), op.FastV(layer=2)(model):
        pass
    inputs = _inputs(model)
    with pytest.raises(ValueError, match="KV press"), op.SnapKV(compression_ratio=0.5)(model), op.FastV(layer=1)(model):
        model(**inputs)


# -- Whisper ------------------------------------------------------------------------------------------------------
def test_whisper_decoding_equals_the_hand_built_reference(whisper):
    inputs = tiny_inputs("whisper", whisper)
    with torch.no_grad():
        states = whisper.model.encoder(inputs["input_features"]).last_hidden_state
    n_audio = op.get_adapter(whisper).audio_encoder_positions(feature_attention_mask=inputs["attention_mask"])[0]
    for pruner in (op.FastV, op.DART):
        method = pruner(retain=0.4, layer=2)
        with method(whisper), torch.no_grad():
            out = whisper.generate(
                input_features=inputs["input_features"],
                attention_mask=inputs["attention_mask"],
                language="en",
                max_new_tokens=2,
                output_logits=True,
                return_dict_in_generate=True,
            )
        keep = method.report.keep[0]
        assert method.report.audio_before == [n_audio] and n_audio < states.shape[1]
        assert bool(keep[n_audio:].all())  # whisper_padding="keep"
        assert int(keep[:n_audio].sum()) == -(-n_audio * 4 // 10)
        prompt = out.sequences.shape[1] - len(out.logits)
        for step, logits in enumerate(out.logits):
            expected = whisper_pruned_logits(whisper, states, out.sequences[:, : prompt + step], keep, layer=2)
            torch.testing.assert_close(logits[0], expected, atol=2e-5, rtol=1e-4)


def test_whisper_padding_drop_and_beam_search(whisper):
    inputs = whisper_inputs(whisper, [real_speech("harvard_01"), real_speech("harvard_03")[: 16000 * 2]])
    gen = {"input_features": inputs["input_features"], "attention_mask": inputs["attention_mask"], "language": "en"}
    method = op.FastV(retain=0.5, layer=1, whisper_padding="drop")
    with torch.no_grad(), method(whisper):
        beams = whisper.generate(**gen, max_new_tokens=3, num_beams=5)
    assert beams.shape[0] == 2
    report = method.report
    assert len(report.audio_before) == 10 and report.audio_before[0] > report.audio_before[5]
    kept = report.keep.sum(-1).tolist()
    assert kept == [-(-n // 2) for n in report.audio_before]  # the padding went too
    assert len({tuple(row) for row in report.keep[:5].tolist()}) == 1  # the beams of a clip share one selection


def test_whisper_cross_cache_layers_shrink(whisper):
    inputs = tiny_inputs("whisper", whisper)
    method = op.HeadRouter(retain=0.3, layer=1, debias="detrend")
    with method(whisper), torch.no_grad():
        out = whisper(**inputs)
    cross = out.past_key_values.cross_attention_cache.layers
    assert not isinstance(cross[0], RaggedLayer) and cross[0].keys.shape[2] == 1500
    kept = int(method.report.keep[0].sum())
    for layer in cross[1:]:
        assert isinstance(layer, RaggedLayer) and layer.host_lengths == [kept] * layer.num_segments
    assert kept < 1500


def _whisper_generate(model, gen, *methods):
    caches = []

    def grab(module, args, kw):
        caches.append(kw.get("cache", kw.get("past_key_values")))

    handle = model.model.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad(), op.compose(*methods)(model):
            out = model.generate(**gen, return_dict_in_generate=True, output_scores=True)
    finally:
        handle.remove()
    return out, caches[-1].cross_attention_cache.layers


def test_whisper_pruner_and_kv_press_compose(whisper):
    """On Whisper an in-LLM pruner and a KV press run together: layers < K hold the press's selection over every
    encoder state, layers >= K the press's selection among the states the pruner kept (its budget still counts the
    clip's audio), and each alone is recovered when the other keeps everything."""
    inputs = whisper_inputs(whisper, [real_speech("harvard_01")])
    gen = {
        "input_features": inputs["input_features"],
        "attention_mask": inputs["attention_mask"],
        "language": "en",
        "max_new_tokens": 3,
        "num_beams": 3,
    }
    n_audio = op.get_adapter(whisper).audio_encoder_positions(feature_attention_mask=inputs["attention_mask"])[0]
    for make_press in (lambda c: op.SnapKV(compression_ratio=c), lambda c: op.AudioKV(compression_ratio=c)):
        pruner, press = op.HeadRouter(retain=0.6, layer=2, debias="detrend"), make_press(0.5)
        both, layers = _whisper_generate(whisper, gen, pruner, press)
        assert both.sequences.shape[0] == 1 and len(both.scores) == 3  # 3 beams decoded 3 tokens
        kept = pruner.report.keep[0]  # (1500,) the pruner's states for layers >= 2, padding included
        alone_press, alone_layers = _whisper_generate(whisper, gen, make_press(0.5))
        budget = int(n_audio * 0.5)
        for idx, layer in enumerate(layers):
            for head, columns in enumerate(layer.head_positions()):
                audio = columns[columns < n_audio]
                assert len(audio) == min(budget, int(kept[:n_audio].sum()))
                assert bool((columns[len(audio) :] == torch.arange(n_audio, 1500)).all())  # the padding, whole
                if idx >= 2:
                    assert bool(kept[audio].all())  # among the states the pruner kept
                else:
                    assert torch.equal(columns, alone_layers[idx].head_positions()[head])
        assert press.report.compressed and [s.layer for s in press.report.layers] == [0, 1, 2]
        # each alone when the other keeps everything
        keep_all, _ = _whisper_generate(
            whisper, gen, op.HeadRouter(retain=1.0, layer=2, debias="detrend"), make_press(0.5)
        )
        assert torch.equal(keep_all.sequences, alone_press.sequences)
        for a, b in zip(keep_all.scores, alone_press.scores):
            assert torch.equal(a, b)
        pruner_alone, _ = _whisper_generate(whisper, gen, op.HeadRouter(retain=0.6, layer=2, debias="detrend"))
        no_press, _ = _whisper_generate(
            whisper, gen, op.HeadRouter(retain=0.6, layer=2, debias="detrend"), make_press(0.0)
        )
        assert torch.equal(no_press.sequences, pruner_alone.sequences)
        for a, b in zip(no_press.scores, pruner_alone.scores):
            assert torch.equal(a, b)


def test_decode_steps_never_read_the_device_on_the_host(audio_model):
    from ...sync_guard import no_host_sync

    inputs = _inputs(audio_model)
    n = inputs["input_ids"].shape[1]
    with op.FastV(retain=0.5, layer=1)(audio_model), torch.no_grad():
        out = audio_model(**inputs)
        step = {"input_ids": out.logits[:, -1:].argmax(-1), "cache": out.past_key_values}
        with no_host_sync():  # the pruned (ragged) layers and the listener's hooks on a decode step
            for offset in range(3):
                audio_model(**step, position_ids=torch.tensor([[n + offset]]))
