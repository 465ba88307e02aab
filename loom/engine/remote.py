"""A backend on any OpenAI-compatible /v1/completions server that returns logprobs.

Tested against llama.cpp's own llama-server (parallel slots) and llama-cpp-python's
`python -m llama_cpp.server`; written to also read vLLM (`return_tokens_as_token_ids` gives
"token_id:N" strings). Results have the engine's shape: one Branch per continuation with a
TokenArray holding texts, raw logprobs and top-k alternatives where the server gives them.

Generation sends the N branches as N streamed requests at once (at most `concurrency` open), each
with its own seed derived from (seed, branch index), so a batching server decodes them together
and a run can be repeated on a server that honours seeds. llama-cpp-python's server decodes one
request at a time and ends a running stream when another arrives: it gets one at a time. One
request with n=N is not used: a single seed for N choices is reproducible only on servers that
derive per-choice seeds the same way, and not every server streams n>1 choices. Cancelling
shuts the open streams at once and keeps what arrived; a connection lost mid-stream raises
`GenerationInterrupted` carrying the partial branches. Refused requests are retried with backoff
(HTTP 429 and 5xx, connection resets), a bounded number of times, never once a stream started.

Scoring (`score`) asks /v1/completions for the prompt's own logprobs (`echo` with `logprobs`),
which llama-cpp-python's server and vLLM return; llama-server does not, and `score` says so in
one line instead of returning wrong numbers.

Token ids come from the server when it reports them; otherwise the generated text is tokenized
through the server's /tokenize or /extras/tokenize endpoint, and where no endpoint exists ids are -1
and `Branch.note` says so. The API key (argument, LOOM_API_KEY or the config) goes into request
headers only, never into results, reprs, identities or messages; credentials in the URL are
dropped from everything shown or recorded. Only the standard library is used (http.client).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from loom.engine.errors import GenerationInterrupted, RemoteError
from loom.engine.results import Branch, FinishReason, StepUpdate
from loom.engine.sampling import SamplerSettings, new_seed
from loom.engine.text import stream_texts
from loom.tokens import TokenArray

API_KEY_ENV = "LOOM_API_KEY"
NO_IDS_NOTE = "token ids unavailable: the server reports none and has no tokenize endpoint"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RESETS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
           http.client.RemoteDisconnected)  # fmt: skip


def no_prompt_logprobs(url: str) -> str:
    return (
        f"{url} returns no logprobs for prompt tokens (echo), so it cannot score: labels, "
        "censuses and fork maps need a server that does (llama-cpp-python's server, vLLM) "
        "or a local model"
    )


@dataclass
class _Tok:
    text: str
    logprob: float
    top: list[tuple[int, str, float]]
    id: int = -1


@dataclass
class _Run:
    tokens: list[_Tok] = field(default_factory=list)
    finish: str | None = None
    error: RemoteError | None = None  # the stream broke after it started


@dataclass(frozen=True)
class RemoteModel:
    """A model on a server: its name there, the server (no credentials) and any build or
    fingerprint the server reports. `name` is what a node records as its model."""

    model: str
    server: str
    fingerprint: str = ""
    sha256: str = ""  # the weights are on the server: nothing to hash here

    @property
    def name(self) -> str:
        extra = f", {self.fingerprint}" if self.fingerprint else ""
        return f"{self.model} (remote {self.server}{extra})"


def public_url(url: str) -> tuple[str, str | None]:
    """`url` without credentials, a trailing slash or /v1, and the password it held (if any)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"not a server URL: {_shown_url(parts)} (give http://HOST:PORT)")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise RemoteError(f"not a server URL: {_shown_url(parts)} (bad port)") from None
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", "")), parts.password


def _shown_url(parts: urllib.parse.SplitResult) -> str:
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else netloc + parts.path


class RemoteBackend:
    """Completions from a server at `base_url` (e.g. "http://127.0.0.1:8080")."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        model: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        concurrency: int = 8,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.base_url, url_password = public_url(base_url)
        self._api_key = (
            api_key if api_key is not None else os.environ.get(API_KEY_ENV) or url_password or None
        )
        parts = urllib.parse.urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = parts.path
        self.model = model or None
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.concurrency = max(1, int(concurrency))
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self._lock = threading.RLock()
        self._tokenize_style: str | None = None  # "llama-server" | "extras" | "none"
        self._bos: list[int] | None = None
        self._piece_ids: dict[str, int] = {}
        self._pieces: dict[int, bytes] = {}
        self._fingerprint = ""
        self._n_ctx: int | None = None
        self._served: list[str] | None = None
        self._can_score: bool | None = None

    def __repr__(self) -> str:  # never show the key
        return f"RemoteBackend({self.base_url!r}, model={self.model!r})"

    @property
    def info(self) -> RemoteModel:
        return RemoteModel(self.model or "unnamed model", self.base_url, self._fingerprint)

    @property
    def n_ctx(self) -> int | None:
        return self._n_ctx  # what the server said in connect(), else None

    def connect(self) -> RemoteBackend:
        """Check the server answers, the key is accepted and the model is served; learn the
        model's name, the context and a fingerprint where the server tells them. Returns self."""
        served = self.models()
        if self.model is None:
            if not served:
                raise RemoteError(f"{self.base_url} serves no model (its /v1/models is empty)")
            self.model = served[0]
        elif served and self.model not in served:
            listed = ", ".join(served[:5]) + (", …" if len(served) > 5 else "")
            raise RemoteError(
                f"{self.base_url} does not serve model {self.model!r} (it serves: {listed})"
            )
        self._describe()
        return self

    def _describe(self) -> None:
        """llama-server's /props (context, build); vLLM's max_model_len in /v1/models."""
        try:
            props = self._json("/props", retry=False)
        except RemoteError:
            props = None
        if isinstance(props, dict):
            gen = props.get("default_generation_settings")
            n_ctx = gen.get("n_ctx") if isinstance(gen, dict) else None
            if isinstance(n_ctx, int) and n_ctx > 0:
                self._n_ctx = n_ctx
            build = props.get("build_info")
            if isinstance(build, str) and build:
                self._fingerprint = f"llama.cpp {build}"
        for entry in self._model_entries or []:
            if entry.get("id") == self.model and isinstance(entry.get("max_model_len"), int):
                self._n_ctx = int(entry["max_model_len"])

    def tokens_for(self, text: str) -> TokenArray:
        """Human-written text as tokens without probabilities, tokenized by the server."""
        ids = self.tokenize(text)
        return TokenArray.from_ids(ids, stream_texts([self._piece(i) for i in ids]))

    def _piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._pieces[token] = self.detokenize([token]).encode("utf-8")
        return cached

    # -- HTTP ------------------------------------------------------------------------------------

    def _headers(self, stream: bool = False) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.connect_timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)

    def _request(
        self,
        path: str,
        payload: dict[str, Any] | None,
        *,
        stream: bool = False,
        retry: bool = True,
        opened: Callable[[http.client.HTTPConnection], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """One request, retried with backoff on 429/5xx and connection resets. The caller closes
        the returned connection. `opened` is told every connection (so cancel can shut it)."""
        url = self.base_url + path
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        method = "GET" if body is None else "POST"
        tries = 1 + (self.retries if retry else 0)
        last = ""
        for attempt in range(tries):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                if cancel is not None:
                    if cancel.wait(delay):
                        raise RemoteError(f"{url}: cancelled while waiting to retry ({last})")
                else:
                    time.sleep(delay)
            conn = self._connection()
            try:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
                if opened is not None:
                    opened(conn)
                conn.request(method, self._path + path, body=body, headers=self._headers(stream))
                resp = conn.getresponse()
            except _RESETS as exc:
                conn.close()
                last = f"connection reset ({_reason(exc)})"
                continue
            except TimeoutError:
                conn.close()
                raise RemoteError(f"{url} timed out after {self.timeout:g}s") from None
            except OSError as exc:  # refused, unknown host, TLS failure…
                conn.close()
                raise RemoteError(f"cannot reach {self.base_url}: {_reason(exc)}") from None
            except http.client.HTTPException as exc:
                conn.close()
                raise RemoteError(f"{url} did not answer HTTP ({type(exc).__name__})") from None
            if resp.status < 400:
                return conn, resp
            detail = _error_detail(resp)
            conn.close()
            if resp.status in RETRY_STATUS:
                last = f"HTTP {resp.status}{detail}"
                continue
            hint = ""
            if resp.status in (401, 403):
                hint = f" (check the API key: ${API_KEY_ENV} or [remote] api_key in the config)"
            raise RemoteError(f"{url} answered HTTP {resp.status}{detail}{hint}")
        raise RemoteError(f"{url} failed {tries} time(s), last: {last}")

    def _json(self, path: str, payload: dict[str, Any] | None = None, *, retry: bool = True) -> Any:
        conn, resp = self._request(path, payload, retry=retry)
        try:
            body = resp.read()
        except TimeoutError:
            raise RemoteError(f"{self.base_url}{path} timed out after {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteError(f"{self.base_url}{path}: connection lost ({_reason(exc)})") from None
        finally:
            conn.close()
        try:
            return json.loads(body)
        except ValueError:
            raise RemoteError(f"{self.base_url}{path} did not answer JSON") from None

    def _events(
        self, path: str, resp: http.client.HTTPResponse, done: list[bool] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Server-sent events of a streaming completion, as parsed JSON objects. Ends at [DONE]
        (and sets done[0]) or at the end of the stream; raises RemoteError on an error event or a
        line that is not JSON."""
        done = done if done is not None else [False]
        where = f"{self.base_url}{path}"
        if "event-stream" not in (resp.getheader("Content-Type") or ""):
            try:
                whole = json.loads(resp.read())
            except ValueError:
                raise RemoteError(f"{where} answered neither an event stream nor JSON") from None
            if isinstance(whole, dict) and "error" in whole:
                raise RemoteError(f"{where} error: {_short(whole['error'])}")
            if not isinstance(whole, dict) or not isinstance(whole.get("choices"), list):
                raise RemoteError(f"{where} answered JSON without choices")
            done[0] = True
            yield whole
            return
        while True:
            raw = resp.readline()
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                done[0] = True
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise RemoteError(
                    f"{where} sent a malformed stream (an event that is not JSON)"
                ) from None
            if isinstance(event, dict) and "error" in event:
                raise RemoteError(f"{where} error: {_short(event['error'])}")
            if not isinstance(event, dict) or not isinstance(event.get("choices", []), list):
                raise RemoteError(f"{where} sent a malformed stream (an event without choices)")
            yield event

    # -- description and tokens --------------------------------------------------------------

    _model_entries: list[dict[str, Any]] | None = None

    def models(self) -> list[str]:
        """Model ids the server lists at /v1/models."""
        data = self._json("/v1/models")
        entries = data.get("data", []) if isinstance(data, dict) else []
        self._model_entries = [m for m in entries if isinstance(m, dict)]
        return [str(m.get("id")) for m in self._model_entries]

    def _detect_tokenizer(self) -> str:
        if self._tokenize_style is not None:
            return self._tokenize_style
        for style in ("llama-server", "extras"):
            try:
                self._tokenize_style = style
                self._bos = None
                self._bos = self._raw_tokenize("", retry=False)
                return style
            except RemoteError as exc:
                if "HTTP 401" in str(exc) or "HTTP 403" in str(exc) or "cannot reach" in str(exc):
                    self._tokenize_style = None
                    raise
                continue
        self._tokenize_style = "none"
        return "none"

    def _raw_tokenize(self, text: str, *, retry: bool = True) -> list[int]:
        if self._tokenize_style == "llama-server":
            # llama-server reads "content", vLLM reads "prompt"; each ignores the other's keys
            payload = {"content": text, "prompt": text, "add_special": False}
            payload["add_special_tokens"] = False
            if self.model:
                payload["model"] = self.model
            data = self._json("/tokenize", payload, retry=retry)
        else:
            data = self._json("/extras/tokenize", {"input": text}, retry=retry)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise RemoteError(f"{self.base_url} tokenize answer has no token list")
        ids = [int(t["id"]) if isinstance(t, dict) else int(t) for t in tokens]
        bos = self._bos or []
        # llama_cpp.server always adds BOS: whatever tokenizing "" gives is stripped again
        if bos and ids[: len(bos)] == bos:
            ids = ids[len(bos) :]
        return ids

    @property
    def can_tokenize(self) -> bool:
        with self._lock:
            return self._detect_tokenizer() != "none"

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text` from the server (RemoteError if it has no tokenize endpoint)."""
        with self._lock:
            if self._detect_tokenizer() == "none":
                raise RemoteError(f"{self.base_url} has no tokenize endpoint")
            bos = list(self._bos or [])
        ids = self._raw_tokenize(text)
        return (bos + ids) if add_bos else ids

    def detokenize(self, ids: Sequence[int]) -> str:
        with self._lock:
            style = self._detect_tokenizer()
        tokens = [int(t) for t in ids]
        if style == "llama-server":
            data = self._json("/detokenize", {"tokens": tokens})
            return str(data.get("content", data.get("prompt", "")))
        if style == "extras":
            return str(self._json("/extras/detokenize", {"tokens": tokens}).get("text", ""))
        raise RemoteError(f"{self.base_url} has no detokenize endpoint")

    def _id_of(self, text: str) -> int:
        """The id of a token shown as `text`, if the text tokenizes to exactly one token."""
        if text in self._piece_ids:
            return self._piece_ids[text]
        found = -1
        if text and self._detect_tokenizer() != "none":
            ids = self._raw_tokenize(text)
            found = ids[0] if len(ids) == 1 else -1
        if len(self._piece_ids) < 200_000:
            self._piece_ids[text] = found
        return found

    # -- generation ------------------------------------------------------------------------------

    def generate(
        self,
        prefix_ids: Sequence[int] | None,
        n: int,
        settings: SamplerSettings | None = None,
        *,
        top_logprobs: int = 5,
        forced: Sequence[int] | None = None,
        on_step: Callable[[StepUpdate], None] | None = None,
        cancel: threading.Event | None = None,
        prompt_text: str | None = None,
        fresh: bool = False,  # the server keeps its own cache: nothing to empty from here
        concurrency: int | None = None,
    ) -> list[Branch]:
        """`n` continuations, one streamed request each, up to `concurrency` (default: the
        backend's) at once.

        The prompt is `prompt_text` if given, else `prefix_ids` detokenized by the server; forced
        tokens are appended to the prompt and come back with unknown (NaN) logprobs. Branch i uses
        seed derived from (seed, i) so a run can be repeated on servers that honour seeds. A
        connection lost mid-stream raises GenerationInterrupted with the branches as they stood."""
        s = settings or SamplerSettings()
        if n < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            style = self._detect_tokenizer()
        forced_ids = [int(t) for t in forced or []]
        if prompt_text is None:
            if prefix_ids is None:
                raise ValueError("give prefix_ids or prompt_text")
            prompt_text = self.detokenize(prefix_ids) if prefix_ids else ""
        forced_text = self.detokenize(forced_ids) if forced_ids else ""
        seed = s.seed if s.seed is not None else new_seed()
        cancel = cancel or threading.Event()
        runs = self._run_all(
            prompt_text + forced_text, s, top_logprobs, seed, n, on_step, cancel,
            self._parallel(concurrency or self.concurrency),
        )  # fmt: skip
        branches = [
            self._branch(run, i, seed, s, forced_ids, forced_text, style)
            for i, run in enumerate(runs)
        ]
        errors = [run.error for run in runs if run.error is not None]
        if errors:
            got = sum(1 for b in branches if len(b.tokens) > len(forced_ids))
            raise GenerationInterrupted(
                f"{errors[0]} ({got} of {n} branch(es) had tokens when it stopped)", branches
            )
        return branches

    def _parallel(self, wanted: int) -> int:
        """How many requests may run at once. llama-cpp-python's server (the one with
        /extras/tokenize) decodes one request at a time and, by default, ends a running stream
        when the next request arrives: it is sent one request at a time."""
        with self._lock:
            return 1 if self._detect_tokenizer() == "extras" else max(1, wanted)

    def _run_all(
        self,
        prompt: str,
        s: SamplerSettings,
        k: int,
        seed: int,
        n: int,
        on_step: Callable[[StepUpdate], None] | None,
        cancel: threading.Event,
        concurrency: int,
    ) -> list[_Run]:
        """Every branch's streamed request, `concurrency` at a time. Cancel, or a request that
        fails before its stream starts, shuts every open stream at once."""
        stop = threading.Event()  # cancel, or a failed request: the caller's event is theirs
        streams = _Streams()
        steps = [0]
        guard = threading.Lock()

        def step(new: list[tuple[int, int, str, float]]) -> None:
            if on_step is None:
                return
            with guard:  # the batcher and the UI see one update at a time, as from the engine
                on_step(StepUpdate(steps[0], new))
                steps[0] += 1

        def one(index: int) -> _Run:
            return self._complete(prompt, s, k, seed, index, step, stop, streams)

        workers = max(1, min(n, concurrency))
        with ThreadPoolExecutor(workers, thread_name_prefix="loom-remote") as pool:
            futures: list[Future[_Run]] = [pool.submit(one, i) for i in range(n)]
            pending: set[Future[_Run]] = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.05, return_when=FIRST_EXCEPTION)
                if cancel.is_set() or any(f.exception() is not None for f in done):
                    stop.set()
                    streams.shut_all()
        failures = [exc for f in futures if (exc := f.exception()) is not None]
        if not failures:
            return [f.result() for f in futures]
        first = failures[0]
        runs = [f.result() if f.exception() is None else None for f in futures]
        if not isinstance(first, RemoteError) or not any(r and r.tokens for r in runs):
            raise first
        failed = RemoteError(str(first))
        out = []
        for run in runs:
            if run is None:
                run = _Run(error=failed)
            elif run.error is None and run.finish == "cancelled" and not cancel.is_set():
                run.error = failed  # stopped because another request failed
            out.append(run)
        return out

    def _complete(
        self,
        prompt: str,
        s: SamplerSettings,
        k: int,
        seed: int,
        index: int,
        step: Callable[[list[tuple[int, int, str, float]]], None],
        cancel: threading.Event,
        streams: _Streams,
    ) -> _Run:
        payload: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "min_p": s.min_p,
            "stop": list(s.stop),
            "seed": branch_seed(seed, index),
            "logprobs": k,
            "stream": True,
            "n": 1,
        }
        if self.model:
            payload["model"] = self.model
        run = _Run()
        if cancel.is_set():
            run.finish = "cancelled"
            return run
        path = "/v1/completions"
        try:
            conn, resp = self._request(
                path, payload, stream=True, opened=streams.add, cancel=cancel
            )
        except RemoteError:
            if cancel.is_set():
                run.finish = "cancelled"
                return run
            raise
        done = [False]
        try:
            for event in self._events(path, resp, done):
                fp = event.get("system_fingerprint")
                if isinstance(fp, str) and fp and not self._fingerprint:
                    self._fingerprint = fp
                for choice in event.get("choices") or []:
                    if not isinstance(choice, dict):
                        raise RemoteError(f"{self.base_url}{path} sent a malformed choice")
                    new = _parse_logprobs(choice, k)
                    run.tokens.extend(new)
                    if choice.get("finish_reason"):
                        run.finish = str(choice["finish_reason"])
                    if new:
                        step([(index, t.id, t.text, t.logprob) for t in new])
                if cancel.is_set():
                    run.finish = "cancelled"
                    break
            else:
                if not done[0] and run.finish is None and not cancel.is_set():
                    # the stream ended without [DONE] or a finish reason: the server went away
                    run.error = RemoteError(
                        f"{self.base_url}{path}: the stream ended early (connection lost)"
                    )
        except RemoteError:
            if not run.tokens:
                raise
            run.error = RemoteError(f"{self.base_url}{path}: the stream broke")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if cancel.is_set():
                run.finish = "cancelled"
            else:
                run.error = RemoteError(
                    f"{self.base_url}{path}: connection lost during generation ({_reason(exc)})"
                )
        finally:
            streams.discard(conn)
            conn.close()
        if cancel.is_set() and run.error is None and run.finish is None:
            run.finish = "cancelled"
        return run

    def _branch(
        self,
        run: _Run,
        index: int,
        seed: int,
        s: SamplerSettings,
        forced_ids: list[int],
        forced_text: str,
        style: str,
    ) -> Branch:
        note: str | None = None
        toks = run.tokens
        with self._lock:
            if any(t.id < 0 for t in toks) and toks:
                if style == "none":
                    note = NO_IDS_NOTE
                else:
                    self._resolve_ids(toks)
            k = max((len(t.top) for t in toks), default=0)
            top_ids = np.full((len(toks), k), -1, np.int32)
            top_lps = np.full((len(toks), k), np.nan, np.float32)
            top_texts: dict[int, str] = {}
            for r, t in enumerate(toks):
                for c, (tid, text, lp) in enumerate(t.top[:k]):
                    if tid < 0 and style != "none":
                        tid = self._id_of(text)
                    top_ids[r, c] = tid
                    top_lps[r, c] = lp
                    if tid >= 0:
                        top_texts[tid] = text
        sampled = TokenArray(
            ids=np.asarray([t.id for t in toks], np.int32),
            texts=[t.text for t in toks],
            logprobs=np.asarray([t.logprob for t in toks], np.float32),
            top_ids=top_ids,
            top_logprobs=top_lps,
            top_texts=top_texts,
        )
        head = TokenArray.from_ids(forced_ids, _split_forced(forced_text, len(forced_ids)))
        tokens = TokenArray.concat([head, sampled]) if forced_ids else sampled
        finish: FinishReason
        if run.finish == "cancelled" or run.error is not None:
            finish = "cancelled"
        elif run.finish == "length":
            finish = "length"
        elif run.finish == "stop":
            # llama_cpp.server says "stop" for both EOS and a stop string; the text tells which
            finish = "stop" if s.stop and len(toks) < s.max_tokens else "eos"
        else:
            finish = "length" if len(toks) >= s.max_tokens else "eos"
        if run.error is not None:
            note = f"interrupted after {len(toks)} token(s): the server connection was lost"
        return Branch(
            tokens,
            forced_text + "".join(t.text for t in toks),
            finish,
            seed,
            index,
            len(forced_ids),
            note=note,
        )

    def _resolve_ids(self, toks: list[_Tok]) -> None:
        """Fill missing ids: the whole text in one tokenize call when the count matches the tokens,
        else token by token (a text that is not exactly one token stays -1)."""
        text = "".join(t.text for t in toks)
        try:
            whole = self._raw_tokenize(text)
        except RemoteError:
            whole = []
        if len(whole) == len(toks):
            for t, tid in zip(toks, whole, strict=True):
                if t.id < 0:
                    t.id = tid
            return
        for t in toks:
            if t.id < 0:
                t.id = self._id_of(t.text)

    # -- scoring ---------------------------------------------------------------------------------

    def score(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[npt.NDArray[np.float32]]:
        """Per-token raw logprobs of each continuation after `prefix_ids` (BOS first), from the
        server's logprobs of its prompt (`echo`). One request per continuation, sent together."""
        conts = [[int(t) for t in c] for c in continuations]
        if not conts:
            return []
        if self._can_score is False:
            raise RemoteError(no_prompt_logprobs(self.base_url))
        prefix = [int(t) for t in prefix_ids]
        workers = max(1, min(len(conts), self._parallel(self.concurrency)))
        with ThreadPoolExecutor(workers, thread_name_prefix="loom-score") as pool:
            return list(pool.map(lambda c: self._score_one(prefix, c), conts))

    def read(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]], top_logprobs: int
    ) -> list[TokenArray]:
        """The continuations with the logprobs `score` reads from the server's echo; a completion
        server reports no alternatives or entropy for prompt tokens, so those stay unknown."""
        conts = [[int(t) for t in c] for c in continuations]
        out = []
        for c, logprobs in zip(conts, self.score(prefix_ids, conts), strict=True):
            tokens = TokenArray.from_ids(c, [self.detokenize([t]) for t in c])
            tokens.logprobs = np.asarray(logprobs, np.float32)
            out.append(tokens)
        return out

    def check_scoring(self) -> None:
        """Score two tokens once: RemoteError (one line) if this server cannot score."""
        if self._can_score:
            return
        ids = self.tokenize("The sea")
        if len(ids) >= 2:
            self.score(ids[:1], [ids[1:]])

    def _score_one(self, prefix: list[int], cont: list[int]) -> npt.NDArray[np.float32]:
        if not cont:
            return np.zeros(0, np.float32)
        text = self.detokenize(prefix + cont)
        payload: dict[str, Any] = {
            "prompt": text,
            "max_tokens": 1,  # 0 means "until the context ends" on some servers
            "echo": True,
            "logprobs": 1,
            "temperature": 0.0,
            "stream": False,
        }
        if self.model:
            payload["model"] = self.model
        data = self._json("/v1/completions", payload)
        choices = data.get("choices") if isinstance(data, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        lp = choice.get("logprobs") if isinstance(choice, dict) else None
        values = lp.get("token_logprobs") if isinstance(lp, dict) else None
        if not isinstance(values, list):  # llama-server: `content` holds only sampled tokens
            self._can_score = False
            raise RemoteError(no_prompt_logprobs(self.base_url))
        offsets = lp.get("text_offset") if isinstance(lp, dict) else None
        if isinstance(offsets, list) and len(offsets) == len(values):
            n_prompt = sum(1 for o in offsets if isinstance(o, int) and o < len(text))
        else:
            usage = data.get("usage") if isinstance(data, dict) else None
            made = usage.get("completion_tokens", 1) if isinstance(usage, dict) else 1
            n_prompt = len(values) - int(made)
        if n_prompt < len(cont):
            self._can_score = False
            raise RemoteError(no_prompt_logprobs(self.base_url))
        server_ids = self._raw_tokenize(text)
        if server_ids[-len(cont) :] != cont:
            raise RemoteError(
                f"{self.base_url} tokenizes the scored text differently from the tokens asked "
                "for, so their logprobs cannot be read exactly (score with a local model)"
            )
        self._can_score = True
        picked = values[n_prompt - len(cont) : n_prompt]
        return np.asarray([math.nan if v is None else float(v) for v in picked], dtype=np.float32)


def branch_seed(seed: int, index: int) -> int:
    """The seed sent for branch `index` of a run seeded `seed` (what makes a run repeatable)."""
    return (seed * 1_000_003 + index) % (2**31)


class _Streams:
    """The open streaming connections of a run, to shut at once on cancel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._shut = False

    def add(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.add(conn)
            if self._shut:
                _shut(conn)

    def discard(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(conn)

    def shut_all(self) -> None:
        with self._lock:
            self._shut = True
            for conn in self._open:
                _shut(conn)


def _shut(conn: http.client.HTTPConnection) -> None:
    """Close a connection now, even while another thread is blocked reading it."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _split_forced(text: str, n: int) -> list[str]:
    """Forced tokens' texts when only their joined text is known: all of it on the first token."""
    return [text] + [""] * (n - 1) if n else []


def _token_id(token: str) -> tuple[int, str]:
    """vLLM's return_tokens_as_token_ids gives "token_id:123"."""
    if token.startswith("token_id:"):
        try:
            return int(token[len("token_id:") :]), ""
        except ValueError:
            pass
    return -1, token


def _parse_logprobs(choice: dict[str, Any], k: int) -> list[_Tok]:
    """Tokens of one streamed choice: OpenAI legacy logprobs, or llama-server's `content` list."""
    lp = choice.get("logprobs")
    text = str(choice.get("text") or "")
    if not isinstance(lp, dict):
        return [_Tok(text, math.nan, [])] if text else []
    content = lp.get("content")
    if isinstance(content, list):  # llama-server: entries with ids
        out = []
        for entry in content:
            top = [
                (int(a.get("id", -1)), str(a.get("token", "")), float(a.get("logprob", math.nan)))
                for a in entry.get("top_logprobs") or []
            ]
            out.append(
                _Tok(
                    str(entry.get("token", "")),
                    float(entry.get("logprob", math.nan)),
                    _best(top, k),
                    int(entry.get("id", -1)),
                )
            )
        return out
    tokens = lp.get("tokens") or []
    lps = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or []
    out = []
    for i, tok in enumerate(tokens):
        tid, shown = _token_id(str(tok))
        value = lps[i] if i < len(lps) and lps[i] is not None else math.nan
        alts: list[tuple[int, str, float]] = []
        if i < len(tops) and isinstance(tops[i], dict):
            for alt_text, alt_lp in tops[i].items():
                alt_id, alt_shown = _token_id(str(alt_text))
                alts.append((alt_id, alt_shown, float(alt_lp)))
        if not shown and len(tokens) == 1:
            shown = text  # an id-only token ("token_id:N"): a streamed chunk's text is its text
        out.append(_Tok(shown, float(value), _best(alts, k), tid))
    return out


def _best(alts: list[tuple[int, str, float]], k: int) -> list[tuple[int, str, float]]:
    """The k most likely alternatives, most likely first (servers may add the chosen token)."""
    seen: set[tuple[int, str]] = set()
    out = []
    for alt in sorted(alts, key=lambda a: -a[2]):
        key = (alt[0], alt[1])
        if key not in seen:
            seen.add(key)
            out.append(alt)
    return out[:k]


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def _short(value: object) -> str:
    if isinstance(value, dict):
        value = value.get("message", value)
    return " ".join(str(value).split())[:200]


def _error_detail(resp: http.client.HTTPResponse) -> str:
    try:
        data = json.loads(resp.read(65536).decode("utf-8", errors="replace"))
        if isinstance(data, dict):
            msg = data.get("error") or data.get("detail") or data.get("message")
            if msg:
                return f": {_short(msg)}"
    except (OSError, ValueError, http.client.HTTPException):
        pass
    return ""
