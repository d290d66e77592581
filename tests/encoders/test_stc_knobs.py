"""STC-Cacher's knobs and bad input: clear errors, and each knob really changes what is computed."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.testing import tiny_model

from .towers import build_tower, frame_inputs


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"update_ratio": 0.0}, r"update_ratio must be in \(0, 1\]"),
        ({"update_ratio": 1.5}, r"update_ratio must be in \(0, 1\]"),
        ({"interval": 0}, "interval must be an integer >= 1"),
        ({"interval": 1.5}, "interval must be an integer >= 1"),
        ({"mode": "gate"}, "mode must be one of"),
        ({"metric": "dot"}, "metric must be one of"),
        ({"threshold": 1.5}, r"threshold is a cosine similarity in \[-1, 1\]"),
        ({"mode": "threshold", "metric": "l2"}, "use metric='cosine'"),
    ],
)
def test_bad_knobs(knobs, message):
    with pytest.raises(ValueError, match=message):
        op.STCCacher(**knobs)


def test_models_without_a_vision_tower_are_refused():
    with pytest.raises(ValueError, match="no vision encoder"), op.STCCacher()(tiny_model("llama")):
        pass


def test_bad_pixels_and_a_second_model_are_refused():
    tower, _ = build_tower("siglip")
    other, _ = build_tower("siglip", seed=1)
    cacher = op.STCCacher()
    with cacher(tower):
        with pytest.raises(ValueError, match=r"pixel_values of shape \(frames, channels, height, width\)"):
            tower(torch.zeros(3, 112, 112))
        with pytest.raises(ValueError, match="already active on another model"), cacher(other):
            pass
    # a failed call stored nothing; the stream goes on from where it was
    assert cacher.frames_seen == 0 and cacher.stats.frames == 0


def test_a_new_tower_restarts_the_stream_and_a_resized_frame_is_a_refresh():
    tower, _ = build_tower("siglip")
    other, _ = build_tower("siglip", seed=1)
    (pixels,), _ = frame_inputs("siglip", 2)
    cacher = op.STCCacher(interval=4)
    with torch.no_grad():
        with cacher(tower):
            tower(pixels)
        assert cacher.frames_seen == 2
        with cacher(other):
            tower_out = other(pixels[:1])
        assert cacher.frames_seen == 1 and cacher.stats.per_frame[0].refresh
        torch.testing.assert_close(tower_out.last_hidden_state, other(pixels[:1]).last_hidden_state)
        with cacher(other):  # frame 1 would be selective, but its size differs from the reference frame's
            small = torch.nn.functional.interpolate(pixels[1:], size=(56, 56))
            other(small, interpolate_pos_encoding=True)
    assert [f.refresh for f in cacher.stats.per_frame] == [True, True]
    assert cacher.stats.per_frame[1].tokens == 16


def test_metric_and_ratio_change_the_selection():
    tower, _ = build_tower("siglip")
    (pixels,), _ = frame_inputs("siglip", 2)
    outs = {}
    with torch.no_grad():
        for name, knobs in {
            "cos25": {"update_ratio": 0.25},
            "l2": {"update_ratio": 0.25, "metric": "l2"},
            "cos50": {"update_ratio": 0.5},
        }.items():
            with op.STCCacher(**knobs)(tower):
                outs[name] = tower(pixels).last_hidden_state[1]
    assert not torch.allclose(outs["cos25"], outs["l2"])
    assert not torch.allclose(outs["cos25"], outs["cos50"])
    dense = tower(pixels).last_hidden_state[1]
    # more recomputation, closer to the dense frame
    assert (outs["cos50"] - dense).norm() < (outs["cos25"] - dense).norm()
