"""[remote] in the config: defaults, values, refusals; the key is never in the config's repr."""

from __future__ import annotations

import pytest

from loom.config import ConfigError, parse_config
from loom.engine.errors import RemoteError
from loom.engine.remote import RemoteBackend, public_url


def test_remote_defaults_and_values() -> None:
    remote = parse_config({}).remote
    assert (remote.timeout, remote.connect_timeout, remote.concurrency, remote.retries) == (
        120.0, 10.0, 8, 3,
    )  # fmt: skip
    config = parse_config({"remote": {"api_key": "sk-secret", "model": "m", "timeout": 5,
                                      "concurrency": 2, "retries": 0}})  # fmt: skip
    assert (config.remote.model, config.remote.timeout, config.remote.concurrency) == ("m", 5, 2)
    assert "sk-secret" not in repr(config)


@pytest.mark.parametrize(
    "table, needle",
    [({"timeout": 0}, "timeout"), ({"concurrency": 0}, "concurrency"),
     ({"retries": 11}, "retries"), ({"timeout": "soon"}, "remote.timeout")],
)  # fmt: skip
def test_bad_remote_values_are_refused(table: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config({"remote": table})


def test_urls_lose_their_credentials_and_v1() -> None:
    assert public_url("http://u:sk-1@host:8000/v1/") == ("http://host:8000", "sk-1")
    assert public_url("https://host/proxy/v1") == ("https://host/proxy", None)
    rb = RemoteBackend("http://u:sk-2@127.0.0.1:9/v1")
    assert rb.base_url == "http://127.0.0.1:9" and "sk-2" not in repr(rb) + rb.info.name
    with pytest.raises(RemoteError, match="not a server URL: ftp://host") as err:
        public_url("ftp://user:sk-3@host")
    assert "sk-3" not in str(err.value)
