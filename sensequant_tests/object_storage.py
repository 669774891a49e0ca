"""Object storage for the tests: fsspec's in-memory filesystem, and S3 served by moto on 127.0.0.1.

`artifact_location` (a fixture, registered in conftest.py) is parametrised over the backends a test
must hold on: a local directory, `memory://` and `s3://` (moto's server, one per test process,
skipped with the reason where moto or s3fs is not installed). Each test gets a fresh, empty location.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_SERVER: dict[str, str] = {}


def s3_endpoint() -> str:
    """Start moto's S3 server once per process and point the AWS environment at it."""
    if "url" not in _SERVER:
        try:
            import s3fs  # noqa: F401
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            pytest.skip(f"S3 tests need moto[server] and s3fs (pip install -e '.[dev]'): {exc}")
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per HTTP request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        _SERVER["url"] = f"http://{host}:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=_SERVER["url"],
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return _SERVER["url"]


def new_bucket() -> str:
    """A fresh bucket on the moto server; returns its name."""
    import boto3

    s3_endpoint()
    name = f"sq-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=_SERVER["url"]).create_bucket(Bucket=name)
    return name


def fresh_location(backend: str, tmp_path: Path) -> str:
    if backend == "local":
        return str(tmp_path / "artifacts")
    if backend == "memory":
        return f"memory://sq-{uuid.uuid4().hex[:12]}/artifacts"
    if backend == "s3":
        return f"s3://{new_bucket()}/artifacts"
    raise ValueError(backend)


@pytest.fixture(params=["local", "memory", "s3"])
def artifact_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield fresh_location(request.param, tmp_path)


@pytest.fixture(params=["memory", "s3"])
def object_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield fresh_location(request.param, tmp_path)
