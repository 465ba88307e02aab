"""A backend on any OpenAI-compatible /v1/completions server that returns logprobs.

Tested against llama-cpp-python's `python -m llama_cpp.server`; written to also read llama.cpp's
llama-server (per-token `content` entries with ids) and vLLM (`return_tokens_as_token_ids` gives
"token_id:N" strings). Results have the engine's shape: one Branch per continuation with a
TokenArray holding texts, raw logprobs and top-k alternatives where the server gives them.

Token ids come from the server when it reports them; otherwise the generated text is tokenized
through the server's /tokenize or /extras/tokenize endpoint, and where no endpoint exists ids are -1
and `Branch.note` says so. The API key (argument or LOOM_API_KEY) goes into request headers only,
never into results or reprs. Only the standard library is used (urllib, with timeouts).
"""

from __future__ import annotations

import json
import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from loom.engine.errors import RemoteError
from loom.engine.results import Branch, FinishReason, StepUpdate
from loom.engine.sampling import SamplerSettings, new_seed
from loom.engine.text import stream_texts
from loom.tokens import TokenArray

API_KEY_ENV = "LOOM_API_KEY"
NO_IDS_NOTE = "token ids unavailable: the server reports none and has no tokenize endpoint"


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


@dataclass(frozen=True)
class RemoteModel:
    name: str
    sha256: str = ""  # the weights are on the server: nothing to hash here


class RemoteBackend:
    """Completions from a server at `base_url` (e.g. "http://127.0.0.1:8080")."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        model: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.model = model
        self.timeout = timeout
        self._lock = threading.Lock()
        self._tokenize_style: str | None = None  # "llama-server" | "extras" | "none"
        self._bos: list[int] | None = None
        self._piece_ids: dict[str, int] = {}
        self._pieces: dict[int, bytes] = {}

    def __repr__(self) -> str:  # never show the key
        return f"RemoteBackend({self.base_url!r}, model={self.model!r})"

    @property
    def info(self) -> RemoteModel:
        return RemoteModel(self.model or f"remote model at {self.base_url}")

    @property
    def n_ctx(self) -> int | None:
        return None  # the server keeps its context to itself

    def tokens_for(self, text: str) -> TokenArray:
        """Human-written text as tokens without probabilities, tokenized by the server."""
        ids = self.tokenize(text)
        return TokenArray.from_ids(ids, stream_texts([self._piece(i) for i in ids]))

    def _piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._pieces[token] = self.detokenize([token]).encode("utf-8")
        return cached

    def score(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[npt.NDArray[np.float32]]:
        raise RemoteError(
            f"{self.base_url}: scoring on a remote server is not supported here yet; "
            "label with a local model"
        )

    # -- HTTP ------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _open(self, path: str, payload: dict[str, Any] | None) -> Any:
        url = self.base_url + path
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(
            url, data=data, headers=self._headers(), method="GET" if data is None else "POST"
        )
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            raise RemoteError(f"{url} answered HTTP {exc.code}{detail}") from None
        except urllib.error.URLError as exc:
            raise RemoteError(f"cannot reach {self.base_url}: {_reason(exc.reason)}") from None
        except TimeoutError:
            raise RemoteError(f"{url} timed out after {self.timeout:g}s") from None
        except OSError as exc:
            raise RemoteError(f"cannot reach {self.base_url}: {_reason(exc)}") from None

    def _json(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        resp = self._open(path, payload)
        try:
            with resp:
                body = resp.read()
        except TimeoutError:
            raise RemoteError(f"{self.base_url}{path} timed out after {self.timeout:g}s") from None
        try:
            return json.loads(body)
        except ValueError:
            raise RemoteError(f"{self.base_url}{path} did not answer JSON") from None

    def _stream(self, path: str, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Server-sent events of a streaming completion, as parsed JSON objects."""
        resp = self._open(path, payload)
        with resp:
            try:
                for raw in resp:
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and "error" in event:
                        raise RemoteError(f"{self.base_url}{path} error: {_short(event['error'])}")
                    if isinstance(event, dict):
                        yield event
            except TimeoutError:
                raise RemoteError(
                    f"{self.base_url}{path} timed out after {self.timeout:g}s"
                ) from None

    # -- description and tokens --------------------------------------------------------------

    def models(self) -> list[str]:
        """Model ids the server lists at /v1/models."""
        data = self._json("/v1/models")
        return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]

    def _detect_tokenizer(self) -> str:
        if self._tokenize_style is not None:
            return self._tokenize_style
        for style in ("llama-server", "extras"):
            try:
                self._tokenize_style = style
                self._bos = None
                self._bos = self._raw_tokenize("")
                return style
            except RemoteError:
                continue
        self._tokenize_style = "none"
        return "none"

    def _raw_tokenize(self, text: str) -> list[int]:
        if self._tokenize_style == "llama-server":
            # llama-server reads "content", vLLM reads "prompt"; each ignores the other's keys
            payload = {"content": text, "prompt": text, "add_special": False}
            payload["add_special_tokens"] = False
            data = self._json("/tokenize", payload)
        else:
            data = self._json("/extras/tokenize", {"input": text})
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
            ids = self._raw_tokenize(text)
            return (list(self._bos or []) + ids) if add_bos else ids

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
    ) -> list[Branch]:
        """`n` continuations, one streamed request each (servers differ in whether they honour `n`).

        The prompt is `prompt_text` if given, else `prefix_ids` detokenized by the server; forced
        tokens are appended to the prompt and come back with unknown (NaN) logprobs. Branch i uses
        seed derived from (seed, i) so a run can be repeated on servers that honour seeds."""
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
        branches: list[Branch] = []
        for i in range(n):
            run = self._complete(
                prompt_text + forced_text, s, top_logprobs, seed, i, on_step, cancel
            )
            with self._lock:
                branches.append(self._branch(run, i, seed, s, forced_ids, forced_text, style))
        return branches

    def _complete(
        self,
        prompt: str,
        s: SamplerSettings,
        k: int,
        seed: int,
        index: int,
        on_step: Callable[[StepUpdate], None] | None,
        cancel: threading.Event | None,
    ) -> _Run:
        payload: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "min_p": s.min_p,
            "stop": list(s.stop),
            "seed": (seed * 1_000_003 + index) % (2**31),
            "logprobs": k,
            "stream": True,
            "n": 1,
        }
        if self.model:
            payload["model"] = self.model
        run = _Run()
        step = 0
        if cancel is not None and cancel.is_set():
            run.finish = "cancelled"
            return run
        for event in self._stream("/v1/completions", payload):
            for choice in event.get("choices") or []:
                new = _parse_logprobs(choice, k)
                run.tokens.extend(new)
                if choice.get("finish_reason"):
                    run.finish = str(choice["finish_reason"])
                if new and on_step is not None:
                    on_step(StepUpdate(step, [(index, t.id, t.text, t.logprob) for t in new]))
                    step += 1
            if cancel is not None and cancel.is_set():
                run.finish = "cancelled"
                break
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
        if run.finish == "cancelled":
            finish = "cancelled"
        elif run.finish == "length":
            finish = "length"
        elif run.finish == "stop":
            # llama_cpp.server says "stop" for both EOS and a stop string; the text tells which
            finish = "stop" if s.stop and len(toks) < s.max_tokens else "eos"
        else:
            finish = "length" if len(toks) >= s.max_tokens else "eos"
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


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", errors="replace")
        data = json.loads(body)
        if isinstance(data, dict):
            msg = data.get("error") or data.get("detail") or data.get("message")
            if msg:
                return f": {_short(msg)}"
    except (OSError, ValueError):
        pass
    return ""
