"""moto's S3 server on 127.0.0.1, and the environment that points boto3 and pyarrow at it."""

from __future__ import annotations

import atexit
from dataclasses import dataclass

from devtools.devservers._base import free_port


@dataclass
class MotoS3:
    """moto's S3 server on a free loopback port; ``endpoint`` goes in ``AWS_ENDPOINT_URL``."""

    port: int
    server: object

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]


def start_moto_s3() -> MotoS3:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    moto = MotoS3(port, server)
    atexit.register(moto.stop)
    return moto


def s3_environment(endpoint: str) -> dict[str, str]:
    """Environment for code (ours, pyarrow, boto3, jobs) that talks to a test S3 server."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - moto accepts any credentials
        "AWS_DEFAULT_REGION": "us-east-1",
    }
