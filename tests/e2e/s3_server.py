"""A real S3-protocol server for the artifact tests: moto's standalone server (``moto[server]``), run as a process of
its own, with a bucket made for the tests and the environment that points boto3 at it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engineroom.core.embedded import free_port

#: Seconds the server gets to answer.
START_TIMEOUT_S = 30.0
BUCKET = "engineroom-artifacts"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    pid: int

    @property
    def env(self) -> dict[str, str]:
        """What an engineroom process needs to keep its artifacts here (under ``prefix``)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def artifacts_url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def keys(self, prefix: str) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for item in answer.get("Contents", [])]


@contextmanager
def s3_server(log_path: Path) -> Iterator[S3Server]:
    """``python -m moto.server`` on a free port, with ``BUCKET`` created; stopped (by its pid) afterwards."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    server = S3Server(f"http://127.0.0.1:{port}", process.pid)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"moto server exited: {log_path.read_text(errors='replace')[-2000:]}"
            try:
                httpx.get(f"{server.endpoint_url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "moto server did not answer"
                time.sleep(0.2)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
