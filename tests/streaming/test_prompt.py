"""Whole prompts with prefix reuse (`StreamingSession.generate`): equal to one prefill, compressed prefixes reused."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.streaming import StreamingSession
from tests.streaming._reference import frames, model_and_tokenizer


def _content(images, *, first: str = "References:") -> list:
    return [first, images[0], "and", images[1], "Test:", images[2], "Answer yes or no."]


def test_prefix_reuse_equals_one_prefill_of_each_prompt():
    model, tok = model_and_tokenizer("qwen2_vl")
    images = frames(4, size=56)
    reuse, plain = StreamingSession(model, tok), StreamingSession(model, tok)
    prompts = [_content(images), _content([images[0], images[1], images[3]]), _content(images, first="Refs:")]
    expected_reuse = []
    for content in prompts:
        prompt = reuse.prompt(content)
        end = prompt.spans.of("image")[-1].start
        answer = reuse.generate(prompt, prefix_end=end, max_new_tokens=3)
        reference = plain.generate(plain.prompt(content), max_new_tokens=3)
        assert answer.token_ids == reference.token_ids
        torch.testing.assert_close(answer.logits, reference.logits, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            direct = model(**prompt.inputs).logits[0, -1]
        torch.testing.assert_close(answer.logits, direct, rtol=1e-4, atol=1e-4)
        expected_reuse.append(answer.report.reused_tokens)
        assert answer.report.prefilled_tokens == prompt.length - answer.report.reused_tokens
        assert reuse.cache.layers[0].logical_length == end  # the prefix stays cached, the rest was removed
    first_image = reuse.prompt(prompts[2]).spans.of("image")[0].start
    assert expected_reuse[0] == 0 and expected_reuse[1] > 0 and expected_reuse[2] < first_image


def test_compressed_prefix_is_cut_by_column_and_reused():
    model, tok = model_and_tokenizer("qwen2_vl")
    images = frames(4, size=56)
    press = op.SnapKV(budget=6, window=2, scope="image")
    session = StreamingSession(model, tok, methods=[press])
    first = session.prompt(_content(images))
    a = session.generate(first, prefix_end=first.spans.of("image")[-1].start, max_new_tokens=2)
    assert a.report.compressed and press.report.compressed
    before = [(layer.head_positions(), layer.segments()) for layer in session.cache.layers]
    second = session.prompt(_content([images[0], images[3], images[2]]))
    cut = second.spans.of("image")[1].start  # the prompts differ from the second image on
    b = session.generate(second, prefix_end=second.spans.of("image")[-1].start, max_new_tokens=2)
    assert b.report.reused_tokens == cut and b.report.compressed
    for (columns, (keys, _)), layer in zip(before, session.cache.layers):
        for c0, k0, c1, k1 in zip(columns, keys, layer.head_positions(), layer.segments()[0]):
            assert torch.equal(c1[c1 < cut], c0[c0 < cut]) and torch.equal(k1[c1 < cut], k0[c0 < cut])
            assert bool((c1 >= cut).any())  # the new part was prefilled (and compressed) on top


def test_prompt_errors():
    model, tok = model_and_tokenizer("qwen2_vl")
    images = frames(3, size=56)
    session = StreamingSession(model, tok)
    prompt = session.prompt(_content(images))
    image = prompt.spans.of("image")[0]
    with pytest.raises(ValueError, match="cuts a media item"):
        session.generate(prompt, prefix_end=image.start + 1)
    with pytest.raises(ValueError, match="prefix_end must lie in"):
        session.generate(prompt, prefix_end=prompt.length)
    with pytest.raises(TypeError, match="text or PIL images"):
        session.prompt(["a", 3])
    session.generate(prompt, prefix_end=image.start, max_new_tokens=1)
    with pytest.raises(RuntimeError, match="holds a prompt prefix"):
        session.append_frame(images[0])
    pruned = StreamingSession(model, tok, methods=[op.UniformPruner(tokens_per_frame=2)])
    with pytest.raises(ValueError, match="does not prune prompts"):
        pruned.generate(prompt)
    llava, llava_tok = model_and_tokenizer("llava_onevision")
    with pytest.raises(ValueError, match="Qwen-VL image processor only"):
        StreamingSession(llava, llava_tok).prompt(["x", images[0]], max_pixels=10000)
