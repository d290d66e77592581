"""The method mechanism: contexts that nest and compose in any order, restore everything, fail cleanly."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from transformers import DynamicCache

import omnipress as op
from omnipress.adapters import UnsupportedModelError, get_adapter
from omnipress.cache import RaggedLayer
from omnipress.core import Listener, Method, ModelSession, dispatch
from omnipress.testing import tiny_model


@dataclass
class AttentionRecorder(Method):
    """A token-stage method that only listens: counts the attention calls it hears, per layer."""

    stage = "tokens"
    exclusive = False
    calls: list[tuple[int, int]] = field(default_factory=list)  # (layer, new tokens)

    def attach(self, session):
        recorder = self

        class _Listener(Listener):
            def after_attention(self, session, module, query, key, value, kwargs, layer):
                recorder.calls.append((session.route_of(module)[1], query.shape[2]))

        return _Listener()


@dataclass
class BrokenMethod(Method):
    """A method whose entry fails after adding a hook (the session must undo both)."""

    stage = "encoder"

    def attach(self, session):
        session.hook_forward_pre(session.adapter.language_model, lambda *a, **k: None)
        raise RuntimeError("entry failed on purpose")


def _ids(n=40, batch=1, seed=0):
    return torch.randint(5, 200, (batch, n), generator=torch.Generator().manual_seed(seed))


def _untouched(model, impl="sdpa"):
    """Nothing omnipress added is left on the model."""
    adapter = get_adapter(model)
    assert adapter.text_config._attn_implementation == impl
    assert ModelSession.active_on(model) is None
    modules = [model, adapter.language_model, *adapter.attention_modules]
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in modules)
    assert all(m not in dispatch.ROUTES for m in adapter.attention_modules)


def _generate(model, ids, n=4):
    with torch.no_grad():
        return model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)


@pytest.mark.parametrize("order", ["press_first", "recorder_first"])
def test_methods_nest_in_any_order_and_restore_everything(order):
    model = tiny_model("llama")
    ids = _ids()
    press, recorder = op.SnapKV(budget=16, window=4), AttentionRecorder()
    first, second = (press, recorder) if order == "press_first" else (recorder, press)
    with first(model), second(model):
        assert get_adapter(model).text_config._attn_implementation == "omnipress:sdpa"
        out = _generate(model, ids)
    assert press.report.compressed and press.report.tokens_after == 16 * 2 * 2  # layers x kv heads
    layers = get_adapter(model).num_layers
    assert recorder.calls[:layers] == [(i, 40) for i in range(layers)]  # the prefill
    assert len(recorder.calls) == 4 * layers  # prefill + 3 decode steps, every layer
    _untouched(model)
    with press(model):
        assert torch.equal(_generate(model, ids), out)


def test_compose_is_the_same_as_nesting():
    model = tiny_model("llama")
    ids = _ids()
    recorder = AttentionRecorder()
    press = op.AdaKV(budget=16, window=4)
    both = op.compose(recorder, press)
    assert both.name == "AttentionRecorder + AdaKV"
    with both(model):
        composed = _generate(model, ids)
    with recorder(model), press(model):
        nested = _generate(model, ids)
    assert torch.equal(composed, nested)
    assert len(recorder.calls) == 2 * 4 * get_adapter(model).num_layers
    _untouched(model)
    with pytest.raises(TypeError, match="omnipress methods"):
        op.compose(press, "snapkv")
    with pytest.raises(ValueError, match="at least one"):
        op.compose()


def test_a_failed_entry_leaves_the_model_and_the_process_usable():
    model = tiny_model("llama")
    ids = _ids()
    with pytest.raises(RuntimeError, match="on purpose"), BrokenMethod()(model):
        pass
    _untouched(model)
    recorder = AttentionRecorder()
    with pytest.raises(RuntimeError, match="on purpose"), op.compose(recorder, BrokenMethod())(model):
        pass
    _untouched(model)
    press = op.SnapKV(budget=16, window=4)
    with press(model):  # the old global counter made every later compressed generate fail here
        _generate(model, ids)
    assert press.report.compressed
    with press(model):
        with pytest.raises(RuntimeError, match="on purpose"), BrokenMethod()(model):
            pass
        assert get_adapter(model).text_config._attn_implementation == "omnipress:sdpa"  # the press stays active
        _generate(model, ids)
    _untouched(model)


def test_an_exception_inside_the_block_restores_everything():
    model = tiny_model("llama")
    with pytest.raises(KeyError), op.compose(AttentionRecorder(), op.SnapKV(budget=8, window=4))(model):
        raise KeyError("user code failed")
    _untouched(model)


def test_two_kv_presses_on_one_model_are_refused():
    model = tiny_model("llama")
    with op.SnapKV(budget=8, window=4)(model):
        with pytest.raises(ValueError, match=r"kv-stage methods.*MixKV"), op.AdaKV(budget=8, window=4)(model):
            pass
        press = op.SnapKV(budget=8, window=4)
    with press(model), pytest.raises(ValueError, match="already active"), press(model):
        pass
    _untouched(model)


def test_sessions_are_per_model():
    a, b = tiny_model("llama"), tiny_model("qwen2")
    press_a, press_b = op.SnapKV(budget=16, window=4), op.AdaKV(budget=16, window=4)
    with press_a(a):
        with press_b(b):
            assert ModelSession.active_on(a) is not ModelSession.active_on(b)
            _generate(b, _ids())
        _untouched(b)
        _generate(a, _ids())
    _untouched(a)
    assert press_a.report.compressed and press_b.report.compressed


def test_unsupported_model_fails_cleanly():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="qwen2_vl"), op.SnapKV(budget=8, window=4)(model):
        pass
    assert ModelSession.active_on(model) is None


def test_a_ragged_cache_only_decodes_inside_a_context_and_rebinds_to_a_new_one():
    model = tiny_model("llama")
    ids = _ids()
    cache = DynamicCache(config=model.config)
    press = op.AdaKV(budget=16, window=4)
    step = {"input_ids": torch.tensor([[7]]), "position_ids": torch.tensor([[40]])}
    with torch.no_grad():
        with press(model):
            model(input_ids=ids, cache=cache, use_cache=True)
        assert isinstance(cache.layers[0], RaggedLayer)
        saved = [
            RaggedLayer.from_packed(
                torch.cat(layer.segments()[0]),
                torch.cat(layer.segments()[1]),
                layer.host_lengths,
                torch.cat(layer.head_positions()),
                batch_size=1,
                num_heads=layer.num_heads,
                logical_length=layer.logical_length,
            )
            for layer in cache.layers
        ]
        with pytest.raises(RuntimeError, match="omnipress context"):
            model(**step, cache=cache)
        with AttentionRecorder()(model):  # any omnipress context can decode it
            got = model(**step, cache=cache).logits
        copy = DynamicCache(config=model.config)
        copy.layers[:] = saved
        with press(model):
            want = model(**step, cache=copy).logits
    assert torch.equal(got, want)
