"""`omnipress profile routing`: task profiles from calibration manifests of real speech (tiny Whisper)."""

from __future__ import annotations

import json

import omnipress as op
from omnipress.cli import main
from omnipress.testing import data_dir


def test_cli_builds_router_profiles(tmp_path, capsys):
    speech = data_dir() / "speech"
    other = tmp_path / "sounds.jsonl"
    other.write_text(
        "\n".join(json.dumps({"audio": str(speech / f"{n}.wav"), "text": ""}) for n in ("Front_Center", "Rear_Right"))
    )
    out = tmp_path / "router.json"
    args = ["profile", "routing", "--task", f"semantic={speech / 'manifest.jsonl'}", "--task", f"acoustic={other}"]
    args += ["--family", "whisper", "--layer", "1", "--limit", "1", "--bins", "8", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "weighted heads" in capsys.readouterr().out
    profiles = op.RouterProfiles.load(out)
    assert profiles.names == ("semantic", "acoustic") and profiles.probe_layer == 0 and profiles.bins == 8
    assert profiles.calibration["samples"] == {"semantic": 1, "acoustic": 1}
    assert "manifest.jsonl" in profiles.calibration["description"]
    assert main(["profile", "routing", "--task", "semantic", "--out", str(out), "--quiet"]) == 2
    assert main(["profile", "routing", "--task", "a=missing.jsonl", "--out", str(out), "--quiet"]) == 1
    bad = ["profile", "routing", "--task", f"a={other}", "--include", "nothing*", "--family", "whisper"]
    assert main([*bad, "--out", str(out), "--quiet"]) == 1
