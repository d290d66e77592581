"""Small hand-built WindowSets for the model-side EEG tests (fast, no EDF round trip)."""

from __future__ import annotations

import numpy as np

from omnipress.eeg.montage import pair_names
from omnipress.eeg.windows import WindowSet


def make_windowset(
    patients: int = 4,
    per_patient: int = 24,
    seizure_rows: tuple[int, int] = (10, 16),
    *,
    sfreq: float = 64.0,
    duration: float = 2.0,
    stride: float | None = None,
    seed: int = 0,
) -> WindowSet:
    """``patients`` patients with one recording each; windows ``seizure_rows`` of each hold 3 Hz spike-and-wave.

    Background: 20 µV white noise smoothed into a 1/f-like trace; seizure: 150 µV sharp 3 Hz waves on every
    channel plus the background. Windows follow each other every ``stride`` seconds (default ``duration``).
    """
    rng = np.random.default_rng(seed)
    channels = pair_names()
    n_samples = round(duration * sfreq)
    stride = duration if stride is None else stride
    t = np.arange(n_samples) / sfreq
    data, patient, recording, start, label = [], [], [], [], []
    for p in range(patients):
        for w in range(per_patient):
            noise = rng.normal(0, 20, (len(channels), n_samples))
            x = np.cumsum(noise, axis=1) * 0.3
            x -= x.mean(axis=1, keepdims=True)
            is_sz = seizure_rows[0] <= w < seizure_rows[1]
            if is_sz:
                phase = 2 * np.pi * 3.0 * t + rng.uniform(0, 2 * np.pi)
                spikes = 150 * (np.sin(phase) ** 15 + 0.4 * np.sin(phase - 1.0))
                x += spikes[None, :] * rng.uniform(0.7, 1.3, (len(channels), 1))
            data.append(x)
            patient.append(f"p{p:02d}")
            recording.append(f"p{p:02d}_r0")
            start.append(w * stride)
            label.append(int(is_sz))
    return WindowSet(
        data=np.asarray(data, dtype=np.float32),
        channels=channels,
        sfreq=sfreq,
        patient=np.array(patient),
        recording=np.array(recording),
        start=np.array(start, dtype=np.float64),
        label=np.array(label, dtype=np.int8),
        seizure_fraction=np.array(label, dtype=np.float32),
    )


# --------------------------------------------------------------------------------------------------
# A local HTTP server speaking the OpenAI chat-completions protocol (stands in for vLLM / a hosted API)
# --------------------------------------------------------------------------------------------------
class ChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1 in a background thread.

    ``script(n, payload) -> (status, body, headers, delay_s)`` decides each reply (``n`` counts requests from
    0); the default answers 200 with a short reasoning and a decision derived from a hash of the last image.
    Every request is recorded in ``requests`` as ``(headers, payload)``; ``max_in_flight`` tracks concurrency.
    """

    def __init__(self, script=None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script = script or self.default_script
        self.requests: list[tuple[dict, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                return

            def do_POST(self):
                import json
                import time

                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    n = len(server.requests)
                    server.requests.append((dict(self.headers), payload))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path != "/v1/chat/completions":
                        status, body, headers, delay = 404, {"error": "not found"}, {}, 0.0
                    else:
                        status, body, headers, delay = server.script(n, payload)
                    time.sleep(delay)
                    raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @staticmethod
    def completion(text: str) -> dict:
        return {
            "id": "cmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112},
        }

    @staticmethod
    def default_script(n: int, payload: dict):
        import hashlib

        images = [p["image_url"]["url"] for p in payload["messages"][-1]["content"] if p["type"] == "image_url"]
        digest = hashlib.sha256(images[-1].encode()).digest()[0] if images else n
        decision = "SEIZURE" if digest % 3 == 0 else "NON-SEIZURE"
        if digest % 7 == 0:
            return 200, ChatServer.completion("I cannot tell."), {}, 0.0  # an unparsable answer
        return 200, ChatServer.completion(f"Rhythm: irregular.\nFINAL DECISION: {decision}"), {}, 0.0
