"""Smoke test of `benchmarks/streaming_memory.py` at tiny size: every policy runs, window/retrieval stay flat."""

from __future__ import annotations

import pytest

from tests.benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def sm():
    with benchmark_module("streaming_memory.py") as module:
        yield module


def test_every_policy_runs_and_window_memory_is_flat(sm, tmp_path):
    knobs = {"window": 2, "retrieve": 2, "sample_every": 4, "max_new_tokens": 2, "distinct_frames": 3}
    results = sm.run_memory_benchmark(frames=12, **knobs)
    by = {r["policy"]: r for r in results["policies"]}
    assert set(by) == {"full", "window", "retrieval"}
    assert [s["frames"] for s in by["full"]["samples"]] == [4, 8, 12]
    assert by["full"]["kv_bytes_last"] > by["full"]["kv_bytes_first"]
    for name in ("window", "retrieval"):
        entries = [s["entries_per_head"] for s in by[name]["samples"]]
        assert entries == [entries[0]] * 3 and by[name]["frames_in_cache"] == 3  # 1 sink + 2 recent
    assert by["retrieval"]["offloaded_bytes"] > 0 == by["window"]["offloaded_bytes"]
    assert by["retrieval"]["answer_kv_bytes"] > by["window"]["answer_kv_bytes"]
    table = sm.markdown(results)
    assert table.count("\n| ") == 4 and "retrieval" in table
    out = tmp_path / "r.json"
    assert sm.main(["--frames", "4", "--sample-every", "2", "--policies", "window", "--output", str(out)]) == 0
    assert out.exists()
