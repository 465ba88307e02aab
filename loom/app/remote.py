"""A completion server as the model: what `--remote URL` builds, for the CLI and the app alike.

The key comes from $LOOM_API_KEY, else the config's [remote] api_key; timeouts, retries and how
many requests go at once from [remote] (see loom/default_config.toml). The server is asked once,
before anything is read or written, whether it answers, accepts the key and serves the model, so
each of those failures is one line and touches no loom.
"""

from __future__ import annotations

import os

from loom.config import Config
from loom.engine.remote import API_KEY_ENV, RemoteBackend


def connect_remote(url: str, config: Config, *, model: str | None = None) -> RemoteBackend:
    """A checked RemoteBackend for `url` (RemoteError, one line, when the server can't be used)."""
    settings = config.remote
    key = os.environ.get(API_KEY_ENV) or settings.api_key or None
    backend = RemoteBackend(
        url,
        key,
        model=model or settings.model or None,
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        concurrency=settings.concurrency,
        retries=settings.retries,
    )
    return backend.connect()
