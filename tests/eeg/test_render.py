from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omnipress.eeg.render import (
    ImageStore,
    RenderConfig,
    Renderer,
    channel_colors,
    clip_view,
    fixed_scale,
    image_path,
    pixel_hash,
    render_windows,
    robust_scale,
    stack_offsets,
)
from tests.eeg._fixtures import make_windowset


def _robust_reference(window: np.ndarray, low=1.0, high=99.0, margin=0.95) -> np.ndarray:
    out = np.empty(window.shape)
    for c in range(window.shape[0]):
        x = window[c].astype(np.float64)
        lo, hi = np.percentile(x, low), np.percentile(x, high)
        denom = hi - lo if hi != lo else 1.0
        for t in range(len(x)):
            out[c, t] = min(max((x[t] - lo) / denom - 0.5, -margin / 2), margin / 2)
    return out


def test_robust_scale_matches_brute_force_per_window_per_channel():
    rng = np.random.default_rng(0)
    batch = rng.normal(0, 1, (3, 5, 200)) * rng.uniform(1, 100, (3, 5, 1)) + rng.normal(0, 50, (3, 5, 1))
    batch[1, 2] = 7.0  # a flat channel: denominator 1 -> every value is -0.5 -> clipped to -0.475
    scaled = robust_scale(batch)
    assert scaled.dtype == np.float32 and scaled.shape == batch.shape
    for i in range(3):
        np.testing.assert_allclose(scaled[i], _robust_reference(batch[i]), atol=1e-6)
        np.testing.assert_allclose(robust_scale(batch[i]), scaled[i])  # one window == batch row
    np.testing.assert_allclose(scaled[1, 2], -0.475)
    assert scaled.max() <= 0.475 + 1e-7 and scaled.min() >= -0.475 - 1e-7
    # amplitude is discarded: a 10x louder window gives the same picture
    np.testing.assert_allclose(robust_scale(batch[0] * 10), scaled[0], atol=1e-6)


def test_fixed_scale_keeps_amplitude_and_clips():
    x = np.array([[0.0, 100.0, -100.0, 1000.0, 0.0]])  # median 0
    out = fixed_scale(x, uv_per_spacing=400.0)
    np.testing.assert_allclose(out, [[0.0, 0.25, -0.25, 0.475, 0.0]], atol=1e-7)
    np.testing.assert_allclose(fixed_scale(x + 55.0, uv_per_spacing=400.0), out, atol=1e-6)  # DC offset removed


@pytest.mark.parametrize("bad", [np.zeros(10), np.zeros((2, 1)), np.array([[0.0, np.nan, 1.0]])])
def test_scaling_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        robust_scale(bad)


def test_config_validation():
    with pytest.raises(ValueError, match="kind"):
        RenderConfig(kind="photo")
    with pytest.raises(ValueError, match="scaling"):
        RenderConfig(scaling="zscore")
    assert RenderConfig(kind="vision").pixels == 512 and RenderConfig(kind="vlm").pixels == 1024
    cfg = RenderConfig(kind="vlm", size=300, scaling="fixed")
    assert RenderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown render settings"):
        RenderConfig.from_dict({**cfg.to_dict(), "dpi_scale": 2})


def test_offsets_and_colours():
    np.testing.assert_array_equal(stack_offsets(3), [2.0, 1.0, 0.0])  # first channel on top
    colors = channel_colors(18)
    assert colors.shape == (18, 4)
    assert len({tuple(c) for c in colors.round(4)}) == 18
    import matplotlib

    np.testing.assert_allclose(colors[0], matplotlib.colormaps["tab20"](0))  # tab20 blue first


def test_render_is_deterministic_and_figure_reuse_leaks_nothing():
    ws = make_windowset(patients=1, per_patient=12)
    cfg = RenderConfig(kind="vlm", size=256)
    r = Renderer(cfg)
    first = pixel_hash(r.render(ws.data[11], ws.channels, ws.sfreq))
    other = pixel_hash(r.render(ws.data[2], ws.channels, ws.sfreq))
    again = pixel_hash(r.render(ws.data[11], ws.channels, ws.sfreq))
    fresh = pixel_hash(Renderer(cfg).render(ws.data[11], ws.channels, ws.sfreq))
    assert first == again == fresh
    assert other != first
    img = r.render(ws.data[0], ws.channels, ws.sfreq)
    assert img.size == (256, 256) and img.mode == "RGB"


def test_vision_image_traces_stay_in_their_band_and_reach_the_clip_margins():
    ws = make_windowset(patients=1, per_patient=12)
    size = 360
    cfg = RenderConfig(kind="vision", size=size)
    window = ws.data[11]
    arr = Renderer(cfg).render_array(window, ws.channels, ws.sfreq)  # axes fill the canvas: data y -> pixel row
    n = len(ws.channels)
    colors = (channel_colors(n)[:, :3] * 255).round().astype(int)
    row_of = lambda y: (n - 0.5 - y) / n * size  # noqa: E731  (ylim = [-0.5, n - 0.5])
    lw_px = cfg.line_points * cfg.dpi / 72
    for i in range(n):
        exact = np.all(arr.astype(int) == colors[i], axis=-1)
        # interior of a stroke: exact colour and an exact vertical neighbour (anti-aliased edges of a grey
        # trace over white can hit a lighter grey's exact value on single pixels)
        hit = exact & (np.roll(exact, 1, axis=0) | np.roll(exact, -1, axis=0))
        rows = np.flatnonzero(hit.any(axis=1))
        assert rows.size, f"channel {i} not drawn"
        base = n - 1 - i
        top, bottom = row_of(base + 0.475), row_of(base - 0.475)
        assert rows.min() >= top - lw_px and rows.max() <= bottom + lw_px, (i, rows.min(), rows.max(), top, bottom)
        # robust scaling clips at +-0.475: the trace spans (almost) its whole band
        assert rows.min() <= top + lw_px and rows.max() >= bottom - lw_px


def test_vlm_image_has_labels_and_axis():
    ws = make_windowset(patients=1, per_patient=2)
    vlm = np.asarray(Renderer(RenderConfig(kind="vlm", size=512)).render(ws.data[0], ws.channels, ws.sfreq))
    vision = np.asarray(Renderer(RenderConfig(kind="vision", size=512)).render(ws.data[0], ws.channels, ws.sfreq))
    dark = lambda a: a.max(axis=-1) < 80  # noqa: E731  black text / spines
    assert dark(vlm[:, :40]).sum() > 200  # channel names on the left
    assert dark(vlm[-60:]).sum() > 100  # time axis at the bottom
    assert dark(vision).sum() == 0  # axis-free: no black pixels at all


def test_render_windows_writes_files_skips_done_and_matches_in_process(tmp_path):
    ws = make_windowset(patients=2, per_patient=6)
    configs = {"vision": RenderConfig(kind="vision", size=128), "vlm": RenderConfig(kind="vlm", size=160)}
    res = render_windows(ws, tmp_path, configs=configs, workers=2, chunk_size=3, progress=False)
    assert res.rendered == 12 and res.skipped == 0
    for i in (0, 7):
        for kind, cfg in configs.items():
            path = image_path(tmp_path, kind, ws.patient[i], i)
            with Image.open(path) as img:
                on_disk = pixel_hash(img)
            assert on_disk == pixel_hash(Renderer(cfg).render(ws.data[i], ws.channels, ws.sfreq))
    again = render_windows(ws, tmp_path, configs=configs, workers=1, progress=False)
    assert again.rendered == 0 and again.skipped == 12
    manifest = json.loads((tmp_path / "render.json").read_text())
    assert manifest["configs"]["vlm"]["size"] == 160
    with pytest.raises(ValueError, match="different 'vlm' config"):
        render_windows(ws, tmp_path, configs={"vlm": RenderConfig(kind="vlm", size=200)}, progress=False)


def test_image_store_renders_missing_images_on_demand(tmp_path):
    ws = make_windowset(patients=1, per_patient=4)
    store = ImageStore(ws, tmp_path, configs={"vlm": RenderConfig(kind="vlm", size=128)})
    path = store.path(3)
    assert path.exists() and store.image(3).size == (128, 128)
    assert store.path(3) == path
    with pytest.raises(IndexError):
        store.path(4)


def test_clip_view_is_224_centre_crop():
    img = Image.new("RGB", (512, 400), "white")
    assert clip_view(img).size == (224, 224)
