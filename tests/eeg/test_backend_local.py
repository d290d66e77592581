from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnipress.eeg.backends.local import LocalVLMBackend, make_press
from omnipress.eeg.embed import SignalFeatureEmbedder, build_index
from omnipress.eeg.prompts import PromptImage, build_prompt
from omnipress.eeg.render import RenderConfig, render_windows
from omnipress.eeg.run import RESULTS, RunConfig, read_jsonl, run
from omnipress.testing import tiny_model, tiny_processor
from tests.eeg._fixtures import make_windowset

SHORT = "EEG references:\n[[REFERENCES]]\nTest EEG Image:\n[[TEST_IMAGE]]\nAnswer with FINAL DECISION."


@pytest.fixture(scope="module")
def qwen():
    model = tiny_model("qwen2_vl")
    return model, tiny_processor("qwen2_vl", model)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight rendered EEG windows (real renderer output, 112 px) as PNG paths."""
    from omnipress.eeg.render import Renderer

    ws = make_windowset(patients=1, per_patient=16)
    root = tmp_path_factory.mktemp("img")
    renderer = Renderer(RenderConfig(kind="vlm", size=112))
    paths = []
    for i in range(8):
        path = root / f"{i}.png"
        renderer.render(ws.data[2 * i], ws.channels, ws.sfreq).save(path)
        paths.append(path)
    return paths


def _prompt(paths, test, seizure, background, order="patient_first"):
    return build_prompt(
        "raicl",
        PromptImage(paths[test], test, "test"),
        [PromptImage(paths[i], i, "reference", 1) for i in seizure],
        [PromptImage(paths[i], i, "reference", 0) for i in background],
        order=order,
        template=SHORT,
    )


def test_answers_equal_transformers_generate(qwen, images):
    model, tok = qwen
    backend = LocalVLMBackend(model, tok, prefix_reuse=False, max_new_tokens=6)
    prompt = _prompt(images, 0, [1, 2], [3, 4])
    enc = backend.encode(prompt)
    assert len(enc.image_spans) == 5 and enc.prefix_end == enc.image_spans[-1][0]
    with torch.no_grad():
        ref = model.generate(**enc.inputs, max_new_tokens=6, do_sample=False)
    expected = tok.decode(ref[0, enc.length :], skip_special_tokens=True)
    answer = backend.generate(prompt)
    assert answer.ok and answer.text == expected
    assert answer.info["prompt_tokens"] == enc.length and answer.info["reused_tokens"] == 0
    assert answer.info["kv_bytes"] == answer.info["kv_bytes_full"]
    assert backend.describe()["prefix_reuse"] is False


def test_prefix_reuse_gives_the_same_answers_and_skips_shared_tokens(qwen, images):
    model, tok = qwen
    full = LocalVLMBackend(model, tok, prefix_reuse=False, max_new_tokens=4)
    reuse = LocalVLMBackend(model, tok, prefix_reuse=True, max_new_tokens=4)
    queries = [
        (0, [1, 2], [3, 4]),  # first query of the patient
        (5, [1, 2], [3, 4]),  # same references, new test image: the whole prefix is reused
        (6, [2, 7], [3, 4]),  # same backgrounds (shown first), other seizure refs: reuse up to the first change
        (0, [1, 2], [3, 4]),  # back to the first prompt: no state leaks between queries
    ]
    answers = []
    for q in queries:
        a, b = full.generate(_prompt(images, *q)), reuse.generate(_prompt(images, *q))
        assert a.text == b.text
        answers.append(b)
    enc = [reuse.encode(_prompt(images, *q)) for q in queries]
    assert answers[0].info["reused_tokens"] == 0
    assert answers[1].info["reused_tokens"] == enc[1].prefix_end
    # shown order: backgrounds 3, 4, then seizure refs farthest first: [2, 1] before, [7, 2] now -> differ at image 2
    assert answers[2].info["reused_tokens"] == enc[2].image_spans[2][0]
    assert 0 < answers[3].info["reused_tokens"] < enc[3].prefix_end
    assert answers[1].info["prefilled_tokens"] == enc[1].length - enc[1].prefix_end


def test_mixkv_compresses_the_images(qwen, images):
    model, tok = qwen
    press = make_press("mixkv-snapkv", 48)
    backend = LocalVLMBackend(model, tok, press=press, prefix_reuse=False, max_new_tokens=4)
    answer = backend.generate(_prompt(images, 0, [1, 2], [3, 4]))
    assert answer.ok and answer.info["compressed"]
    assert answer.info["kv_bytes"] < answer.info["kv_bytes_full"]
    report = press.report
    assert report.compressed and report.modality_tokens["image"] == 5 * 16
    assert backend.describe()["press"] == "MixKV(SnapKV)"


def _entries(cache, below: int) -> list[tuple]:
    """Per layer and KV head: the stored columns below `below`, with their keys and values."""
    out = []
    for layer in cache.layers:
        keys, values = layer.segments()
        for k, v, c in zip(keys, values, layer.head_positions()):
            inside = c < below
            out.append((c[inside].clone(), k[inside].clone(), v[inside].clone()))
    return out


def test_mixkv_with_prefix_reuse_compresses_the_prefix_once(qwen, images):
    model, tok = qwen
    backend = LocalVLMBackend(model, tok, press=make_press("mixkv-snapkv", 48), prefix_reuse=True, max_new_tokens=4)
    first = backend.generate(_prompt(images, 0, [1, 2], [3, 4]))
    cached = _entries(backend.session.cache, 10**9)
    second = backend.generate(_prompt(images, 5, [1, 2], [3, 4]))
    third = backend.generate(_prompt(images, 6, [2, 7], [3, 4]))
    assert first.info["compressed"] and second.info["compressed"] and third.info["compressed"]
    assert second.info["reused_tokens"] > 0 and first.info["kv_bytes"] == second.info["kv_bytes"]
    # the suffix is appended to the compressed prefix, whose ragged layers then keep spare room for decoding
    assert first.info["kv_bytes_kept"] < first.info["kv_bytes_full"] <= first.info["kv_bytes"] * 2
    # a compressed prefix is cut at the common prefix (by cache column) and reused: the kept entries before the cut
    # are exactly those the first prompt's compression kept; only the rest is prefilled and compressed again
    enc = backend.encode(_prompt(images, 6, [2, 7], [3, 4]))
    cut = enc.image_spans[2][0]
    assert third.info["reused_tokens"] == cut and third.info["prefilled_tokens"] == enc.length - cut
    reused = _entries(backend.session.cache, cut)
    for (c, k, v), (c0, k0, v0) in zip(reused, _entries_below(cached, cut)):
        assert torch.equal(c, c0) and torch.equal(k, k0) and torch.equal(v, v0)
    assert third.info["kv_bytes_kept"] < third.info["kv_bytes_full"]


def _entries_below(entries: list[tuple], below: int) -> list[tuple]:
    return [(c[c < below], k[c < below], v[c < below]) for c, k, v in entries]


def test_keep_everything_press_with_prefix_reuse_equals_no_press(qwen, images):
    model, tok = qwen
    plain = LocalVLMBackend(model, tok, prefix_reuse=True, max_new_tokens=4)
    keep_all = LocalVLMBackend(model, tok, press=make_press("snapkv", 4096), prefix_reuse=True, max_new_tokens=4)
    for q in [(0, [1, 2], [3, 4]), (6, [7, 2], [3, 4])]:
        a, b = plain.generate(_prompt(images, *q)), keep_all.generate(_prompt(images, *q))
        assert a.text == b.text and a.info["reused_tokens"] == b.info["reused_tokens"]
        assert not b.info["compressed"]


def test_run_end_to_end_with_the_local_backend(qwen, tmp_path):
    model, tok = qwen
    ws = make_windowset(patients=3, per_patient=12)
    render_windows(ws, tmp_path / "images", configs={"vlm": RenderConfig(kind="vlm", size=112)}, progress=False)
    index = build_index(ws, SignalFeatureEmbedder(), progress=False)
    backend = LocalVLMBackend(model, tok, prefix_reuse=True, max_new_tokens=8)
    config = RunConfig(variant="raicl", queries="every", every=6, order="patient_first", template=SHORT)
    summary = run(ws, backend, tmp_path / "run", images=tmp_path / "images", index=index, config=config, progress=False)
    assert summary.answered == 6 and summary.errors == 0
    rows = read_jsonl(tmp_path / "run" / RESULTS)
    assert len(rows) == 6 and all(r["pred"] in (-1, 0, 1) for r in rows)
    # a random-weight model does not write decision lines: counted as unparsable, not dropped
    assert sum(r["status"] == "unparsable" for r in rows) == summary.unparsable
    assert any(r["info"]["reused_tokens"] > 0 for r in rows)


def test_errors():
    with pytest.raises(ValueError, match="unknown press"):
        make_press("fastv", 64)
    assert make_press("none", 64) is None
    llava = tiny_model("llava")
    with pytest.raises(ValueError, match="prefix reuse"):
        LocalVLMBackend(llava, tiny_processor("llava", llava).tokenizer)
    text_model = tiny_model("qwen2")
    with pytest.raises(ValueError, match="does not take images"):
        LocalVLMBackend(text_model, tiny_processor("qwen2"))


def test_max_pixels_reduces_visual_tokens(qwen, images, tmp_path):
    model, tok = qwen
    big = tmp_path / "big.png"
    Image.fromarray(np.full((448, 448, 3), 200, np.uint8)).save(big)
    prompt = build_prompt("base", PromptImage(big, 0, "test"), template="[[TEST_IMAGE]] ?")
    n_default = LocalVLMBackend(model, tok, max_new_tokens=1).encode(prompt).length
    n_small = LocalVLMBackend(model, tok, max_new_tokens=1, max_pixels=224 * 224).encode(prompt).length
    assert n_small < n_default


def test_from_pretrained_loads_a_saved_checkpoint(qwen, images, tmp_path):
    model, tok = qwen
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = LocalVLMBackend.from_pretrained(tmp_path, dtype="float32", max_new_tokens=4)
    reference = LocalVLMBackend(model, tok, max_new_tokens=4)
    prompt = _prompt(images, 0, [1, 2], [3, 4])
    assert loaded.generate(prompt).text == reference.generate(prompt).text
    assert loaded.describe()["model"] == str(tmp_path) and loaded.describe()["family"] == "qwen2_vl"
