"""continuation_position_ids equal the positions the model itself uses for the next tokens."""

from __future__ import annotations

import pytest
import torch

from omnipress.adapters import get_adapter
from omnipress.testing import tiny_inputs, tiny_model

MEDIA = {
    "qwen2_vl": dict(video_frames=4),
    "qwen2_5_vl": dict(video_frames=4),
    "qwen3_vl": dict(video_frames=4),
    "qwen2_5_omni": dict(video_frames=2, audio=True),
    "llava": {},
    "llava_onevision": dict(video_frames=2),
    "qwen2_audio": {},
    "qwen3": {},
}


def _record_positions(module):
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw.get("position_ids")), with_kwargs=True)
    return seen, handle


@pytest.mark.parametrize("family", list(MEDIA))
def test_matches_the_positions_generate_passes(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = tiny_inputs(family, model, **MEDIA[family])
    seen, handle = _record_positions(adapter.generation_model)
    with torch.no_grad():
        adapter.generation_model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    handle.remove()
    prompt_length = inputs["input_ids"].shape[1]
    assert len(seen) == 4
    for step, positions in enumerate(seen[1:], start=1):
        expected = adapter.continuation_position_ids(prompt_length + step - 1, 1)
        assert torch.equal(positions, expected), (family, step)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"])
def test_mrope_matches_the_model_after_a_plain_prefill(family):
    """Prefill with a plain forward (no position_ids): the model stores rope_deltas itself; its own decode
    positions for the next tokens are rows 1-3 of ours."""
    model = tiny_model(family)
    adapter = get_adapter(model)
    inputs = tiny_inputs(family, model, **MEDIA[family])
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        assert adapter.rope_deltas().item() < 0  # vision tokens take fewer positions than tokens
        seen, handle = _record_positions(adapter.language_model)
        nxt = out.logits[:, -1:].argmax(-1)
        nxt2 = torch.cat([nxt, nxt], dim=1)
        model(input_ids=nxt2, cache=out.past_key_values, use_cache=True)
        handle.remove()
    ours = adapter.continuation_position_ids(inputs["input_ids"].shape[1], 2)
    assert seen[0].shape == (3, 1, 2)
    assert torch.equal(seen[0], ours[1:])
    # the text row is the uncompressed token index
    assert torch.equal(ours[0, 0], torch.arange(inputs["input_ids"].shape[1], inputs["input_ids"].shape[1] + 2))


def test_rope_deltas_before_prefill_and_batch_expansion():
    model = tiny_model("qwen2_vl")
    adapter = get_adapter(model)
    assert torch.equal(adapter.rope_deltas(3), torch.zeros(3, 1, dtype=torch.long))
    assert torch.equal(adapter.continuation_position_ids(5, 2), torch.tensor([[[5, 6]]] * 4))
    model.model.rope_deltas = torch.tensor([[-10], [-20]])
    pos = adapter.continuation_position_ids(30, 1, batch_size=4)
    assert pos.shape == (4, 4, 1)
    assert pos[1:, :, 0].tolist() == [[20, 20, 10, 10]] * 3  # rows repeated like the model does for beams
    assert pos[0, :, 0].tolist() == [30] * 4
    with pytest.raises(ValueError, match="does not divide 3"):
        adapter.continuation_position_ids(30, 1, batch_size=3)
    with pytest.raises(ValueError, match="num_new >= 1"):
        adapter.continuation_position_ids(30, 0)
