"""A real S3 server for the object-store tests: moto's standalone server on 127.0.0.1.

One :class:`moto.server.ThreadedMotoServer` per test session, on an ephemeral port, with the
standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) pointing at it, so vpbatch (and every subprocess a
test starts: CLI runs, Dask workers) finds it exactly as it finds a real store. The AWS config
files of the machine are hidden. Each test gets its own bucket.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from vpbatch.store.fs import open_lake

#: Standard variables a developer's shell may hold; hidden from the tests.
_HIDDEN = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3",
           "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "VPBATCH_LAKE", "VPBATCH_CACHE")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    patch = pytest.MonkeyPatch()
    for name in _HIDDEN:
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ENDPOINT_URL", endpoint)
    patch.setenv("AWS_ACCESS_KEY_ID", "vpbatch-test-key")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "vpbatch-test-secret")
    patch.setenv("AWS_REGION", "us-east-1")
    patch.setenv("AWS_CONFIG_FILE", str(nowhere))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    try:
        yield endpoint
    finally:
        patch.undo()
        server.stop()


@pytest.fixture(autouse=True)
def host_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's "host" book-cache folder (never the developer's ~/.cache)."""
    folder = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "vpbatch" / "book"


def make_bucket(s3_server: str) -> str:
    """A new, empty bucket; its name."""
    name = f"vpbatch-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(s3_server: str) -> str:
    """A bucket of this test alone."""
    return make_bucket(s3_server)


@pytest.fixture
def lake_url(bucket: str) -> str:
    """``s3://<bucket>/lake``: a lake on the test's bucket (nothing written yet)."""
    return f"s3://{bucket}/lake"


def keys(lake_url: str, below: str = "") -> list[str]:
    """Every object below the lake (or ``below`` it), as paths relative to the lake."""
    lake = open_lake(lake_url)
    root = lake.url + "/"
    return sorted(o.location[len(root):] for o in lake.find(lake.loc(below) if below
                                                             else lake.url))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess (the test's AWS variables, the repo importable)."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), **extra}
    env.pop("VPBATCH_DEBUG", None)
    return env
