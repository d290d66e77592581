"""Options the official code has: the axis-free image sent to the VLM, old 10-20 channel names on the images."""

from __future__ import annotations

import base64
import json

import numpy as np

from omnipress.eeg.backends.http import OpenAIChatBackend
from omnipress.eeg.embed import SignalFeatureEmbedder, build_index
from omnipress.eeg.montage import old_channel_names, pair_names
from omnipress.eeg.render import MANIFEST, ImageStore, RenderConfig, Renderer, render_windows
from omnipress.eeg.run import RESULTS, RunConfig, read_jsonl, run
from tests.eeg._fixtures import ChatServer, make_windowset


def test_old_names_on_the_vlm_image():
    assert old_channel_names(pair_names()) == [
        "Fp2-F4", "F4-C4", "C4-P4", "P4-O2", "Fp1-F3", "F3-C3", "C3-P3", "P3-O1",
        "Fp2-F8", "F8-T4", "T4-T6", "T6-O2", "Fp1-F7", "F7-T3", "T3-T5", "T5-O1", "Fz-Cz", "Cz-Pz",
    ]  # fmt: skip
    assert old_channel_names(["T7-P7", "EEG T8", "X-Y"]) == ["T3-T5", "EEG T8", "X-Y"]
    ws = make_windowset(patients=1, per_patient=2)
    new = Renderer(RenderConfig(kind="vlm", size=256))
    old = Renderer(RenderConfig(kind="vlm", size=256, old_names=True))
    a, b = new.render_array(ws.data[0], ws.channels, ws.sfreq), old.render_array(ws.data[0], ws.channels, ws.sfreq)
    assert [t.get_text() for t in new._ax.get_yticklabels()] == ws.channels
    assert [t.get_text() for t in old._ax.get_yticklabels()] == old_channel_names(ws.channels)
    differ = np.any(a != b, axis=2)  # (H, W): only the label column changes
    assert differ.any() and not differ[:, a.shape[1] // 3 :].any()


def test_render_manifests_without_the_new_setting_still_match(tmp_path):
    ws = make_windowset(patients=1, per_patient=2)
    config = {"vlm": RenderConfig(kind="vlm", size=64)}
    render_windows(ws, tmp_path, configs=config, progress=False)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    del manifest["configs"]["vlm"]["old_names"]  # written by an earlier version
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert render_windows(ws, tmp_path, configs=config, progress=False).skipped == 2


def test_the_axis_free_image_can_be_sent_to_the_vlm(tmp_path):
    ws = make_windowset(patients=3, per_patient=8, seizure_rows=(2, 5))
    configs = {"vlm": RenderConfig(kind="vlm", size=64), "vision": RenderConfig(kind="vision", size=48)}
    store = ImageStore(ws, tmp_path / "images", configs=configs)
    index = build_index(ws, SignalFeatureEmbedder(), progress=False)
    config = RunConfig(variant="raicl", queries="every", every=4, image_kind="vision")
    with ChatServer() as server, OpenAIChatBackend(server.base_url, "stub", api_key_env=None) as backend:
        run(ws, backend, tmp_path / "run", images=store, index=index, config=config, progress=False)
        rows = {r["window"]: r for r in read_jsonl(tmp_path / "run" / RESULTS)}
        assert sorted(rows) == [0, 4, 8, 12, 16, 20]
        for (_, payload), q in zip(server.requests, sorted(rows)):
            urls = [c["image_url"]["url"] for c in payload["messages"][0]["content"] if c["type"] == "image_url"]
            row = rows[q]
            refs = row["references"]  # nearest seizure first, then the backgrounds; shown in paper order
            expected = [refs[1]["image"], refs[0]["image"], refs[2]["image"], refs[3]["image"], row["image"]]
            assert all(path.startswith("vision/") for path in expected)
            sent = [base64.b64decode(u.split(",", 1)[1]) for u in urls]
            assert sent == [(store.root / path).read_bytes() for path in expected]
    assert (store.root / rows[0]["image"]).read_bytes() == store.path(0, "vision").read_bytes()
