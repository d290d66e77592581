"""OpenAI-compatible chat-completions backend (vLLM, SGLang, Ollama, llama.cpp server, hosted APIs).

Works with any server speaking ``POST {base_url}/chat/completions`` with image parts given as
``data:`` URLs, e.g. vLLM/SGLang (``http://host:8000/v1``), Ollama (``http://localhost:11434/v1``) or Gemini's
OpenAI-compatible endpoint (``https://generativelanguage.googleapis.com/v1beta/openai``).

Retry policy (RAICL's released code retries 429 and 500/503 up to 3 attempts): HTTP 429 waits for the
``Retry-After`` header if the server sends one, else ``wait_429 * backoff**(attempt-1)``; HTTP 500/502/503/504,
timeouts and connection errors wait ``wait_5xx * backoff**(attempt-1)``; every wait is capped at ``max_wait``
and gets up to ``jitter`` relative random extra. An empty answer (HTTP 200 with no text, or only whitespace) is
asked again after ``wait_empty`` seconds, as the official client does, within the same ``max_attempts``; if every
attempt is empty the request fails (``errors.jsonl``: asked again on the next run). An answer blocked by the
provider's content filter (``finish_reason="content_filter"``) is not asked again, as the official client does not
retry safety blocks. HTTP 401/403/404 raise `BackendFatalError` (no request
can succeed); other 4xx answers are recorded as errors without retry. A connection that fails (refused, unknown
host) before the server has answered once also raises `BackendFatalError` at once: no server is there, so retrying
every query would only waste time. Once it has answered, a failed connection is a transient error like a 5xx.

The API key is read from the environment variable named by ``api_key_env`` when the backend is created.
It is only ever placed in the ``Authorization`` header: it is not part of ``repr``, :meth:`describe`, logs
or error messages (any occurrence in a server's error body is masked).

Provider safety settings (the official client turns Gemini's four harm filters off) are passed through as they are:
``safety_settings`` is put into the request body at ``safety_field``, a dotted path (``"safety_settings"`` for
proxies such as LiteLLM that forward it to Gemini). Whether an OpenAI-compatible endpoint accepts the field is up to
the provider; one that rejects it answers HTTP 400, which is recorded as an error for every query.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

from omnipress.eeg.backends.base import Answer, Backend, BackendFatalError
from omnipress.eeg.prompts import Prompt, PromptImage
from omnipress.extras import require

RETRY_STATUS = frozenset({500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})
#: Gemini's four adjustable harm categories, each set to BLOCK_NONE (what the official RAICL client sends).
SAFETY_OFF: tuple[dict[str, str], ...] = tuple(
    {"category": f"HARM_CATEGORY_{c}", "threshold": "BLOCK_NONE"}
    for c in ("HARASSMENT", "HATE_SPEECH", "SEXUALLY_EXPLICIT", "DANGEROUS_CONTENT")
)


class OpenAIChatBackend(Backend):
    """Send prompts to an OpenAI-compatible ``/chat/completions`` endpoint.

    Parameters
    ----------
    base_url : str
        API root, e.g. ``"http://127.0.0.1:8000/v1"``.
    model : str
        Model name the server expects.
    api_key_env : str or None
        Environment variable holding the API key (``None``: send no key, fine for local servers).
    require_api_key : bool
        Raise if the variable is unset or empty (hosted APIs).
    concurrency : int
        Requests in flight at once in :meth:`map` (RAICL used 1).
    timeout : float
        Seconds per request (connect + read).
    max_attempts : int
        Requests per prompt, first one included.
    wait_429, wait_5xx, backoff, max_wait, jitter : float
        Retry waits (module docstring).
    wait_empty : float
        Seconds before asking again after an empty answer (2 s in the official client).
    temperature, max_tokens : float, int
        Sampling settings (RAICL: 0.0 and 2048).
    image_format : {"png", "jpeg"}
        Encoding of the images sent (PNG keeps thin traces exact; JPEG is smaller).
    jpeg_quality : int
        JPEG quality when ``image_format="jpeg"``.
    system_prompt : str, optional
        Optional system message.
    extra_body : dict, optional
        Extra JSON fields merged into every request (e.g. ``{"top_k": 1}`` or provider options).
    headers : dict, optional
        Extra HTTP headers (not for the key: use ``api_key_env``).
    safety_settings : list of dict, optional
        Provider safety settings passed through unchanged (e.g. :data:`SAFETY_OFF`).
    safety_field : str
        Dotted path in the request body where ``safety_settings`` go (module docstring).
    """

    name = "http"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        require_api_key: bool = False,
        concurrency: int = 1,
        timeout: float = 180.0,
        max_attempts: int = 3,
        wait_429: float = 15.0,
        wait_5xx: float = 5.0,
        backoff: float = 2.0,
        max_wait: float = 120.0,
        jitter: float = 0.1,
        wait_empty: float = 2.0,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        image_format: Literal["png", "jpeg"] = "png",
        jpeg_quality: int = 90,
        system_prompt: str | None = None,
        extra_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        safety_settings: list[dict[str, Any]] | None = None,
        safety_field: str = "safety_settings",
    ) -> None:
        httpx = require("httpx", extra="eeg", purpose="the OpenAI-compatible HTTP backend")

        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model name is empty")
        if concurrency < 1 or max_attempts < 1:
            raise ValueError(f"concurrency and max_attempts must be >= 1, got {concurrency}, {max_attempts}")
        if timeout <= 0 or min(wait_429, wait_5xx, wait_empty, max_wait, jitter) < 0 or backoff < 1:
            raise ValueError("timeout must be > 0, waits and jitter >= 0 and backoff >= 1")
        if image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        if headers and any(k.lower() == "authorization" for k in headers):
            raise ValueError("pass the API key through api_key_env, not headers")
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        if require_api_key and not key:
            raise BackendFatalError(f"environment variable {api_key_env} is not set (needed for the API key)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_attempts = int(max_attempts)
        self.wait_429, self.wait_5xx, self.backoff = float(wait_429), float(wait_5xx), float(backoff)
        self.max_wait, self.jitter = float(max_wait), float(jitter)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.image_format, self.jpeg_quality = image_format, int(jpeg_quality)
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self.wait_empty = float(wait_empty)
        self.safety_settings = None if safety_settings is None else [dict(x) for x in safety_settings]
        self.safety_field = safety_field
        if self.safety_settings is not None:
            _set_path(self.extra_body, safety_field, self.safety_settings)
        self.__key = key
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if key:
            all_headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout), headers=all_headers)
        self._httpx = httpx
        self._images: OrderedDict[tuple, str] = OrderedDict()
        self._images_lock = threading.Lock()
        self._answered = False  # set by the first HTTP response of any status: a server is there

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r}, concurrency={self.concurrency})"

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "url": self.url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "image_format": self.image_format,
            "concurrency": self.concurrency,
            "max_attempts": self.max_attempts,
            "waits": {"429": self.wait_429, "5xx": self.wait_5xx, "empty": self.wait_empty, "backoff": self.backoff},
            "safety_settings": self.safety_settings,
            "safety_field": self.safety_field if self.safety_settings is not None else None,
        }

    # -- request building --------------------------------------------------------------------------
    def messages(self, prompt: Prompt) -> list[dict[str, Any]]:
        """OpenAI chat messages for ``prompt``: one user message with interleaved text and image parts."""
        content: list[dict[str, Any]] = []
        for part in prompt.parts:
            if isinstance(part, PromptImage):
                content.append({"type": "image_url", "image_url": {"url": self._data_url(part.path)}})
            else:
                content.append({"type": "text", "text": part})
        messages = [{"role": "user", "content": content}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _data_url(self, path: Path) -> str:
        stat = Path(path).stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._images_lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        if self.image_format == "png" and str(path).lower().endswith(".png"):
            raw, mime = Path(path).read_bytes(), "image/png"
        else:
            from PIL import Image

            buf = io.BytesIO()
            with Image.open(path) as img:
                if self.image_format == "png":
                    img.save(buf, format="PNG")
                else:
                    img.convert("RGB").save(buf, format="JPEG", quality=self.jpeg_quality)
            raw, mime = buf.getvalue(), f"image/{self.image_format}"
        url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
        with self._images_lock:
            self._images[key] = url
            while len(self._images) > 64:  # references repeat across queries; keep a small cache
                self._images.popitem(last=False)
        return url

    # -- sending -----------------------------------------------------------------------------------
    def generate(self, prompt: Prompt) -> Answer:
        payload = {
            "model": self.model,
            "messages": self.messages(prompt),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        start = time.perf_counter()
        error = None
        for attempt in range(1, self.max_attempts + 1):
            wait_s = None
            try:
                response = self._client.post(self.url, json=payload)
            except self._httpx.TimeoutException as exc:
                error = f"timeout after {self.timeout:g} s ({type(exc).__name__})"
                wait_s = self._wait(self.wait_5xx, attempt)
            except self._httpx.TransportError as exc:
                if isinstance(exc, self._httpx.ConnectError) and not self._answered:
                    raise BackendFatalError(
                        self._mask(f"cannot connect to {self.url} ({exc}); is the server running at that address?")
                    ) from exc
                error = self._mask(f"connection error: {type(exc).__name__}: {exc}")
                wait_s = self._wait(self.wait_5xx, attempt)
            else:
                self._answered = True
                status = response.status_code
                if status == 200:
                    answer = self._answer(response, start, attempt)
                    if answer.error is not None or answer.text.strip():
                        return answer
                    reason = answer.info.get("finish_reason")
                    if reason == "content_filter":  # a safety block: asking again would only spend quota
                        answer.text, answer.error = None, "answer blocked by the provider's content filter"
                        return answer
                    error = f"empty answer (finish_reason={reason}) on {attempt} attempt(s)"
                    if attempt < self.max_attempts:
                        time.sleep(self.wait_empty)
                    continue
                error = self._mask(f"HTTP {status}: {response.text[:300]}")
                if status in FATAL_STATUS:
                    raise BackendFatalError(f"{self.url} answered {error}; check the URL, model name and API key")
                if status == 429:
                    wait_s = self._retry_after(response) or self._wait(self.wait_429, attempt)
                elif status in RETRY_STATUS:
                    wait_s = self._wait(self.wait_5xx, attempt)
                else:
                    break  # other 4xx: the request itself is wrong, retrying will not help
            if attempt < self.max_attempts and wait_s is not None:
                time.sleep(wait_s)
        return Answer(text=None, error=error, latency_s=time.perf_counter() - start, attempts=attempt)

    def _answer(self, response, start: float, attempt: int) -> Answer:
        latency = time.perf_counter() - start
        try:
            body = response.json()
            choice = body["choices"][0]
            content = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return Answer(
                text=None,
                error=self._mask(f"malformed response ({type(exc).__name__}): {response.text[:300]}"),
                latency_s=latency,
                attempts=attempt,
            )
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        usage = {k: v for k, v in (body.get("usage") or {}).items() if isinstance(v, (int, float))}
        info = {"finish_reason": choice.get("finish_reason")}
        return Answer(
            text="" if content is None else str(content), latency_s=latency, attempts=attempt, usage=usage, info=info
        )

    def _wait(self, base: float, attempt: int) -> float:
        wait_s = min(self.max_wait, base * self.backoff ** (attempt - 1))
        return wait_s * (1.0 + self.jitter * random.random())

    def _retry_after(self, response) -> float | None:
        value = response.headers.get("retry-after")
        try:
            return None if value is None else min(self.max_wait, max(0.0, float(value)))
        except ValueError:
            return None  # an HTTP date: fall back to our own backoff

    def _mask(self, text: str) -> str:
        return text.replace(self.__key, "***") if self.__key else text

    def map(self, jobs: Iterable[tuple[Hashable, Prompt]]) -> Iterator[tuple[Hashable, Answer]]:
        """Answer jobs with up to ``concurrency`` requests in flight; yields answers as they complete."""
        if self.concurrency == 1:
            yield from super().map(jobs)
            return
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="omnipress-http") as pool:
            pending: dict[Future, Hashable] = {}
            jobs_iter = iter(jobs)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < self.concurrency:
                    try:
                        key, prompt = next(jobs_iter)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[pool.submit(self.generate, prompt)] = key
                if not pending:
                    break
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    key = pending.pop(fut)
                    try:
                        answer = fut.result()
                    except BackendFatalError:
                        for other in pending:
                            other.cancel()
                        raise
                    yield key, answer

    def close(self) -> None:
        self._client.close()


def _set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """``body["a"]["b"] = value`` for ``path="a.b"``, creating the dicts on the way."""
    keys = path.split(".")
    if not all(keys):
        raise ValueError(f"safety_field must be a dotted path like 'safety_settings' or 'a.b', got {path!r}")
    node = body
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"safety_field {path!r} runs into a non-object value at {key!r}")
        node = child
    node[keys[-1]] = value


__all__ = ["SAFETY_OFF", "OpenAIChatBackend"]
