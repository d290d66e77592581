from __future__ import annotations

import base64
import io
import re
import socket
import time

import numpy as np
import pytest
from PIL import Image

from omnipress.eeg.backends.base import BackendFatalError
from omnipress.eeg.backends.http import OpenAIChatBackend
from omnipress.eeg.prompts import PromptImage, build_prompt
from tests.eeg._fixtures import ChatServer

KEY = "sk-test-SECRET-0123456789"


@pytest.fixture
def prompt(tmp_path):
    def image(i: int) -> PromptImage:
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 24, 3), 40 * i, dtype=np.uint8)).save(path)
        return PromptImage(path, i, "test" if i == 0 else "reference", None if i == 0 else int(i < 3))

    return build_prompt("raicl", image(0), [image(1), image(2)], [image(3), image(4)])


def _backend(server: ChatServer, **kw) -> OpenAIChatBackend:
    defaults = {"wait_429": 0.05, "wait_5xx": 0.05, "jitter": 0.0, "timeout": 5.0, "api_key_env": "TEST_VLM_KEY"}
    return OpenAIChatBackend(server.base_url, "tiny-vlm", **{**defaults, **kw})


def test_request_format_images_and_key_handling(prompt, monkeypatch):
    monkeypatch.setenv("TEST_VLM_KEY", KEY)
    with ChatServer() as server, _backend(server, max_tokens=64) as backend:
        answer = backend.generate(prompt)
        assert answer.ok and answer.attempts == 1 and "FINAL DECISION" in answer.text
        assert answer.usage == {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}
        assert answer.info["finish_reason"] == "stop"
        headers, payload = server.requests[0]
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert payload["model"] == "tiny-vlm" and payload["temperature"] == 0.0 and payload["max_tokens"] == 64
        content = payload["messages"][0]["content"]
        kinds = [c["type"] for c in content]
        assert kinds == ["text", "image_url"] * 5 + ["text"]
        # the last image is the test image, sent losslessly as a PNG data URL
        url = content[-2]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(Image.open(prompt.images[-1].path)))
        assert content[0]["text"] == prompt.parts[0]
        # the key never shows up in what we print or record
        assert KEY not in repr(backend) and KEY not in str(backend.describe())


def test_jpeg_encoding(prompt):
    with ChatServer() as server, _backend(server, image_format="jpeg", api_key_env=None) as backend:
        assert backend.generate(prompt).ok
        headers, payload = server.requests[0]
        assert "Authorization" not in headers
        assert payload["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_429_is_retried_honouring_retry_after(prompt):
    def script(n, payload):
        if n == 0:
            return 429, {"error": "rate limited"}, {"Retry-After": "0.4"}, 0.0
        return 200, ChatServer.completion("FINAL DECISION: SEIZURE"), {}, 0.0

    with ChatServer(script) as server, _backend(server) as backend:
        start = time.perf_counter()
        answer = backend.generate(prompt)
        assert answer.ok and answer.attempts == 2 and answer.text.endswith("SEIZURE")
        assert time.perf_counter() - start >= 0.4


def test_500_and_503_are_retried_with_backoff(prompt):
    def script(n, payload):
        if n < 2:
            return (500, 503)[n], {"error": "overloaded"}, {}, 0.0
        return 200, ChatServer.completion("FINAL DECISION: NON-SEIZURE"), {}, 0.0

    with ChatServer(script) as server, _backend(server, wait_5xx=0.1, backoff=2.0) as backend:
        start = time.perf_counter()
        answer = backend.generate(prompt)
        assert answer.ok and answer.attempts == 3
        assert time.perf_counter() - start >= 0.1 + 0.2  # waits 0.1 then 0.2 s
        assert len(server.requests) == 3


def test_persistent_errors_give_up_after_max_attempts(prompt):
    with ChatServer(lambda n, p: (500, {"error": "down"}, {}, 0.0)) as server, _backend(server) as backend:
        answer = backend.generate(prompt)
        assert not answer.ok and answer.attempts == 3 and "HTTP 500" in answer.error
        assert len(server.requests) == 3


def test_timeouts_are_retried_then_reported(prompt):
    def slow_then_fast(n, payload):
        return 200, ChatServer.completion("FINAL DECISION: SEIZURE"), {}, (1.0 if n == 0 else 0.0)

    with ChatServer(slow_then_fast) as server, _backend(server, timeout=0.3) as backend:
        answer = backend.generate(prompt)
        assert answer.ok and answer.attempts == 2
    hanging = ChatServer(lambda n, p: (200, ChatServer.completion("x"), {}, 1.0))
    with hanging as server, _backend(server, timeout=0.2, max_attempts=2) as backend:
        answer = backend.generate(prompt)
        assert not answer.ok and answer.attempts == 2 and "timeout" in answer.error


def test_client_errors(prompt, monkeypatch):
    monkeypatch.setenv("TEST_VLM_KEY", KEY)

    def unauthorized(n, payload):
        return 401, {"error": f"invalid key {KEY}"}, {}, 0.0

    with ChatServer(unauthorized) as server, _backend(server) as backend:
        with pytest.raises(BackendFatalError) as info:
            backend.generate(prompt)
        assert KEY not in str(info.value) and "***" in str(info.value)
        assert len(server.requests) == 1
    with ChatServer(lambda n, p: (400, {"error": "image too large"}, {}, 0.0)) as server, _backend(server) as backend:
        answer = backend.generate(prompt)
        assert not answer.ok and answer.attempts == 1 and "HTTP 400" in answer.error
    with ChatServer(lambda n, p: (200, {"choices": []}, {}, 0.0)) as server, _backend(server) as backend:
        answer = backend.generate(prompt)
        assert not answer.ok and "malformed" in answer.error


def test_missing_required_key_and_bad_settings(monkeypatch):
    monkeypatch.delenv("TEST_VLM_KEY", raising=False)
    with pytest.raises(BackendFatalError, match="TEST_VLM_KEY"):
        OpenAIChatBackend("http://127.0.0.1:1/v1", "m", api_key_env="TEST_VLM_KEY", require_api_key=True)
    with pytest.raises(ValueError, match="base_url"):
        OpenAIChatBackend("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="api_key_env"):
        OpenAIChatBackend("http://127.0.0.1:1/v1", "m", headers={"Authorization": "Bearer x"})


def closed_port() -> int:
    """A local port nothing listens on: bound, then closed (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_connection_before_any_answer_stops_at_once(prompt):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    for concurrency in (1, 3):  # the default backoff would wait 5 + 10 s per query
        with OpenAIChatBackend(url, "m", concurrency=concurrency, api_key_env=None) as backend:
            start = time.perf_counter()
            with pytest.raises(BackendFatalError, match=rf"cannot connect to {re.escape(url)}/chat/completions"):
                list(backend.map((i, prompt) for i in range(30)))
            assert time.perf_counter() - start < 2.0


def test_a_refused_connection_after_the_server_answered_keeps_the_backoff(prompt):
    with ChatServer() as server:
        backend = _backend(server, wait_5xx=0.1, backoff=2.0)
        assert backend.generate(prompt).ok
    with backend:  # the server has gone away mid-run (its port is closed): a transient failure
        start = time.perf_counter()
        answer = backend.generate(prompt)
        assert not answer.ok and answer.attempts == 3 and "connection error" in answer.error
        assert time.perf_counter() - start >= 0.1 + 0.2  # waits 0.1 then 0.2 s, as after a 5xx


def test_map_runs_requests_concurrently_and_yields_every_answer(prompt):
    def slow(n, payload):
        return 200, ChatServer.completion(f"FINAL DECISION: SEIZURE #{n}"), {}, 0.3

    with ChatServer(slow) as server, _backend(server, concurrency=3) as backend:
        start = time.perf_counter()
        results = dict(backend.map((i, prompt) for i in range(6)))
        elapsed = time.perf_counter() - start
        assert sorted(results) == list(range(6)) and all(a.ok for a in results.values())
        assert server.max_in_flight == 3
        assert elapsed < 6 * 0.3 * 0.8  # about 2 rounds of 0.3 s instead of 6
