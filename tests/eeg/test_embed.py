from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnipress.eeg.embed import (
    CLIPImageEmbedder,
    EmbeddingIndex,
    SignalFeatureEmbedder,
    build_index,
    l2_normalize,
    make_embedder,
    windows_fingerprint,
)
from omnipress.eeg.features import FEATURE_NAMES, signal_features
from omnipress.eeg.render import ImageStore, RenderConfig, Renderer
from tests.eeg._fixtures import make_windowset


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random-weight CLIPModel saved like a hub checkpoint (no preprocessor config: defaults apply)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).eval().save_pretrained(path)
    return path


def test_l2_normalize():
    x = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])
    with pytest.raises(ValueError):
        l2_normalize(np.zeros(3))


def test_feature_embedder_is_zscored_unit_and_reloadable():
    ws = make_windowset(patients=3, per_patient=20)
    emb = SignalFeatureEmbedder()
    vec = emb.embed(ws)
    assert vec.shape == (len(ws), len(FEATURE_NAMES)) and vec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    raw = signal_features(ws.data, ws.sfreq).astype(np.float64)
    std = raw.std(axis=0)
    z = (raw - raw.mean(axis=0)) / np.where(std > 0, std, 1.0)
    np.testing.assert_allclose(vec, z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)
    # the saved config rebuilds an embedder with the same statistics (a subset embeds identically)
    again = make_embedder(emb.config())
    np.testing.assert_allclose(again.embed(ws, [3, 15]), vec[[3, 15]], atol=1e-6)
    # seizure windows resemble each other more than they resemble background
    sz, bg = ws.label == 1, ws.label == 0
    sims = vec @ vec.T
    assert sims[np.ix_(sz, sz)].mean() > sims[np.ix_(sz, bg)].mean() + 0.3


def test_clip_embedder_matches_manual_preprocessing(tiny_clip_dir):
    from transformers import CLIPModel

    ws = make_windowset(patients=1, per_patient=3)
    emb = CLIPImageEmbedder(tiny_clip_dir, batch_size=2)
    vec = emb.embed(ws)
    assert vec.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    # brute force: vision image -> bicubic resize of the short side to 64 -> centre crop 64 -> CLIP mean/std
    img = Renderer(RenderConfig(kind="vision")).render(ws.data[1], ws.channels, ws.sfreq)
    small = np.asarray(img.resize((64, 64), Image.BICUBIC), dtype=np.float64) / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = torch.tensor(((small - mean) / std).transpose(2, 0, 1)[None], dtype=torch.float32)
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    with torch.no_grad():
        feats = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)[0].numpy()
    np.testing.assert_allclose(vec[1], feats / np.linalg.norm(feats), atol=2e-3)
    assert make_embedder(f"clip:{tiny_clip_dir}").name == f"clip:{tiny_clip_dir}"


def test_clip_embedder_reads_rendered_files_like_in_memory(tiny_clip_dir, tmp_path):
    ws = make_windowset(patients=1, per_patient=3)
    emb = CLIPImageEmbedder(tiny_clip_dir)
    from_files = emb.embed(ws, images=ImageStore(ws, tmp_path))
    assert (tmp_path / "vision").exists()
    np.testing.assert_allclose(from_files, emb.embed(ws), atol=1e-6)


def test_index_roundtrip_and_mismatch_detection(tmp_path):
    ws = make_windowset(patients=2, per_patient=10)
    index = build_index(ws, SignalFeatureEmbedder(), progress=False)
    index.save(tmp_path)
    loaded = EmbeddingIndex.load(tmp_path)
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    assert loaded.patient.tolist() == ws.patient.tolist() and loaded.duration == ws.duration
    assert loaded.fingerprint == windows_fingerprint(ws)
    loaded.check_matches(ws)
    flipped = ws.subset(np.arange(len(ws)))
    flipped.label[0] = 1 - flipped.label[0]
    with pytest.raises(ValueError, match="does not match"):
        loaded.check_matches(flipped)
    with pytest.raises(FileNotFoundError):
        EmbeddingIndex.load(tmp_path / "nowhere")


def test_make_embedder_rejects_unknown_specs():
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("resnet")
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder({"type": "sift"})


def test_clip_embedder_on_the_labelled_vlm_images(tiny_clip_dir, tmp_path, capsys):
    from omnipress.eeg.cli import main
    from omnipress.eeg.embed import EmbeddingIndex

    ws = make_windowset(patients=1, per_patient=3)
    emb = CLIPImageEmbedder(tiny_clip_dir, image_kind="vlm", render_config=RenderConfig(kind="vlm", size=96))
    vectors = emb.embed(ws)
    renderer = Renderer(RenderConfig(kind="vlm", size=96))
    manual = emb.embed_images([renderer.render(ws.data[i], ws.channels, ws.sfreq) for i in range(3)])
    np.testing.assert_allclose(vectors, manual, atol=1e-6)
    vision = CLIPImageEmbedder(tiny_clip_dir, render_config=RenderConfig(kind="vision", size=96)).embed(ws)
    assert not np.allclose(vectors, vision, atol=1e-3)  # the axes and labels change what CLIP sees
    reloaded = make_embedder(emb.config())
    assert reloaded.image_kind == "vlm" and reloaded.render_config.size == 96
    with pytest.raises(ValueError, match="render config draws 'vision'"):
        CLIPImageEmbedder(tiny_clip_dir, image_kind="vlm", render_config=RenderConfig(kind="vision"))
    with pytest.raises(ValueError, match="reads the signal"):
        make_embedder("features", image_kind="vlm")
    # through the CLI, reading images rendered on disk
    ws.save(tmp_path / "w")
    store = ImageStore(ws, tmp_path / "img", configs={"vlm": RenderConfig(kind="vlm", size=96)})
    argv = ["index", "--windows", str(tmp_path / "w"), "--out", str(tmp_path / "i"), "--images", str(store.root)]
    assert main([*argv, "--embedder", f"clip:{tiny_clip_dir}", "--image-kind", "vlm", "--quiet"]) == 0
    index = EmbeddingIndex.load(tmp_path / "i")
    assert index.embedder["render"]["kind"] == "vlm"
    np.testing.assert_allclose(index.vectors, vectors, atol=1e-5)
    capsys.readouterr()
    assert main([*argv, "--embedder", "features", "--image-kind", "vlm", "--overwrite", "--quiet"]) == 1
    assert "--image-kind applies to image embedders" in capsys.readouterr().err
