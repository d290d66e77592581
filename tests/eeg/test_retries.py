"""Retries like the official client: empty answers asked again, `--reask-unparsable` resumes, safety settings."""

from __future__ import annotations

import base64
import json

import pytest

from omnipress.eeg.backends.http import SAFETY_OFF, OpenAIChatBackend
from omnipress.eeg.cli import main
from omnipress.eeg.embed import SignalFeatureEmbedder, build_index
from omnipress.eeg.prompts import PromptImage, build_prompt
from omnipress.eeg.render import ImageStore, RenderConfig, render_windows
from omnipress.eeg.run import ERRORS, REASKED, RESULTS, RUN_META, RunConfig, read_jsonl, run
from tests.eeg._fixtures import ChatServer, make_windowset

OK = "Rhythm: none.\nFINAL DECISION: NON-SEIZURE"


def _reply(content, finish_reason="stop"):
    body = ChatServer.completion("")
    message = {"role": "assistant"} if content is None else {"role": "assistant", "content": content}
    body["choices"][0]["message"] = message
    body["choices"][0]["finish_reason"] = finish_reason
    return 200, body, {}, 0.0


def _backend(server, **kw):
    return OpenAIChatBackend(server.base_url, "stub", api_key_env=None, wait_empty=0.01, jitter=0.0, **kw)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("retries")
    ws = make_windowset(patients=3, per_patient=10, seizure_rows=(4, 7))
    ws.save(root / "windows")
    render_windows(ws, root / "images", configs={"vlm": RenderConfig(kind="vlm", size=64)}, progress=False)
    build_index(ws, SignalFeatureEmbedder(), progress=False).save(root / "index")
    return ws, root


@pytest.fixture
def prompt(cohort):
    ws, root = cohort
    return build_prompt("base", PromptImage(ImageStore(ws, root / "images").path(0), 0, "test"))


def test_an_empty_answer_is_asked_again(prompt):
    replies = [_reply(""), _reply(None), _reply("  \n"), _reply(OK)]
    with ChatServer(lambda n, p: replies[n]) as server, _backend(server, max_attempts=4) as backend:
        answer = backend.generate(prompt)
        assert answer.ok and answer.text == OK and answer.attempts == 4 and len(server.requests) == 4
    with ChatServer(lambda n, p: _reply("")) as server, _backend(server, max_attempts=3) as backend:
        answer = backend.generate(prompt)  # bounded: every attempt empty -> a failed request
        assert not answer.ok and answer.attempts == 3 and len(server.requests) == 3
        assert answer.error == "empty answer (finish_reason=stop) on 3 attempt(s)"


def test_a_content_filter_block_is_not_asked_again(prompt):
    with ChatServer(lambda n, p: _reply(None, "content_filter")) as server, _backend(server) as backend:
        answer = backend.generate(prompt)
        assert not answer.ok and "content filter" in answer.error and len(server.requests) == 1


def test_empty_answers_go_to_errors_and_are_asked_on_the_next_run(cohort, tmp_path):
    ws, root = cohort
    state = {"empty": True}

    def script(n, payload):
        return _reply("" if state["empty"] and n % 4 == 0 else OK)

    config = RunConfig(variant="base", queries="all", limit=8)
    with ChatServer(script) as server, _backend(server, max_attempts=1) as backend:
        first = run(ws, backend, tmp_path, images=root / "images", config=config, progress=False)
        assert first.errors == 2 and first.answered == 6
        assert all("empty answer" in e["error"] for e in read_jsonl(tmp_path / ERRORS))
        state["empty"] = False
        second = run(ws, backend, tmp_path, images=root / "images", config=config, progress=False)
        assert second.answered == 2 and second.remaining == 0
    assert sorted(r["window"] for r in read_jsonl(tmp_path / RESULTS)) == list(range(8))


def _image_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def test_reask_unparsable_asks_exactly_those_windows_again_without_duplicates(cohort, tmp_path):
    ws, root = cohort
    store = ImageStore(ws, root / "images")
    state = {"garble": True}

    def script(n, payload):
        return _reply("I am not sure." if state["garble"] and n % 3 == 1 else OK)

    config = RunConfig(variant="raicl", queries="all", every=1)
    with ChatServer(script) as server, _backend(server) as backend:
        first = run(ws, backend, tmp_path, images=store, index=_index(root), config=config, progress=False)
        rows = read_jsonl(tmp_path / RESULTS)
        unparsable = sorted(r["window"] for r in rows if r["pred"] == -1)
        assert first.answered == 30 and first.unparsable == len(unparsable) == 10
        state["garble"] = False
        plain = run(ws, backend, tmp_path, images=store, index=_index(root), config=config, progress=False)
        assert plain.answered == 0 and len(server.requests) == 30  # an ordinary resume keeps unparsable answers
        again = run(ws, backend, tmp_path, images=store, index=_index(root), config=config, progress=False,
                    reask_unparsable=True)  # fmt: skip
        assert again.reasked == 10 and again.already_done == 20 and again.answered == 10
        asked = server.requests[30:]
        # the test image is the last image of each request: exactly the unparsable windows were asked again
        urls = {_image_url(store.path(q)): q for q in range(len(ws))}
        last_images = [[c for c in p["messages"][0]["content"] if c["type"] == "image_url"][-1] for _, p in asked]
        assert sorted(urls[c["image_url"]["url"]] for c in last_images) == unparsable
    final = read_jsonl(tmp_path / RESULTS)
    windows = [r["window"] for r in final]
    assert len(windows) == len(set(windows)) == 30 and all(r["pred"] != -1 for r in final)
    assert sorted(r["window"] for r in read_jsonl(tmp_path / REASKED)) == unparsable
    assert "10 unparsable set aside" in str(again)


def _index(root):
    from omnipress.eeg.embed import EmbeddingIndex

    return EmbeddingIndex.load(root / "index")


def test_reask_unparsable_from_the_cli_with_safety_settings(cohort, tmp_path, capsys):
    _, root = cohort
    state = {"garble": True}

    def script(n, payload):
        return _reply("FINAL DECISION: SEIZURE (focal)" if state["garble"] and n < 3 else OK)

    out = tmp_path / "run"
    argv = ["run", "--windows", str(root / "windows"), "--images", str(root / "images"), "--out", str(out),
            "--variant", "base", "--queries", "all", "--limit", "6", "--model", "stub", "--api-key-env", "",
            "--safety-settings", "off", "--safety-field", "extra_body.google.safety_settings", "--backoff", "1",
            "--wait-empty", "0.5", "--quiet"]  # fmt: skip
    with ChatServer(script) as server:
        assert main([*argv, "--base-url", server.base_url]) == 0
        assert sum(r["pred"] == -1 for r in read_jsonl(out / RESULTS)) == 3  # strict rule: not a decision
        state["garble"] = False
        assert main([*argv, "--base-url", server.base_url, "--reask-unparsable"]) == 0
        assert len(server.requests) == 9
        for _, payload in server.requests:
            assert payload["extra_body"]["google"]["safety_settings"] == list(SAFETY_OFF)
    assert "3 unparsable set aside to ask again" in capsys.readouterr().out
    rows = read_jsonl(out / RESULTS)
    assert sorted(r["window"] for r in rows) == list(range(6)) and all(r["pred"] == 0 for r in rows)
    meta = json.loads((out / RUN_META).read_text())
    assert meta["backend"]["safety_settings"] == list(SAFETY_OFF)
    assert meta["backend"]["waits"] == {"429": 15.0, "5xx": 5.0, "empty": 0.5, "backoff": 1.0}


def test_safety_settings_pass_through_and_errors(prompt, tmp_path, capsys):
    custom = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    with ChatServer(lambda n, p: _reply(OK)) as server, _backend(server, safety_settings=custom) as backend:
        assert backend.generate(prompt).ok
        assert server.requests[0][1]["safety_settings"] == custom
    with ChatServer(lambda n, p: _reply(OK)) as server, _backend(server) as backend:
        assert backend.generate(prompt).ok and "safety_settings" not in server.requests[0][1]
    with pytest.raises(ValueError, match="dotted path"):
        OpenAIChatBackend("http://127.0.0.1:1/v1", "m", safety_settings=custom, safety_field="a..b")
    argv = ["run", "--windows", "w", "--images", "i", "--out", str(tmp_path), "--model", "m", "--quiet"]
    assert main([*argv, "--safety-settings", "{not json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--safety-settings: expected 'off', a JSON list" in err[0]


def test_resuming_a_run_recorded_before_the_new_settings(cohort, tmp_path):
    ws, root = cohort
    config = RunConfig(variant="base", queries="all", limit=2)
    with ChatServer(lambda n, p: _reply(OK)) as server, _backend(server) as backend:
        run(ws, backend, tmp_path, images=root / "images", config=config, progress=False)
        meta = json.loads((tmp_path / RUN_META).read_text())
        for key in ("parse", "image_kind"):
            del meta["config"][key]  # as written by an earlier version
        (tmp_path / RUN_META).write_text(json.dumps(meta))
        assert run(ws, backend, tmp_path, images=root / "images", config=config, progress=False).already_done == 2
        with pytest.raises(ValueError, match=r"different settings \(parse\)"):
            run(ws, backend, tmp_path, images=root / "images", config=RunConfig(variant="base", queries="all",
                limit=2, parse="official"), progress=False)  # fmt: skip
