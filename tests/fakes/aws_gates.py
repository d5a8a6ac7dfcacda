"""AWS credentials that expire, and an S3 that enforces them: the doubles behind the tests of
refreshing credentials and of the doctor's S3 probe.

* :class:`ShortLivedCredentials`: the ECS container credentials endpoint
  (``AWS_CONTAINER_CREDENTIALS_FULL_URI``) on 127.0.0.1. Every call hands out a NEW key that
  expires ``lifetime_s`` seconds later, as the ECS agent (or EKS Pod Identity) does with
  hour-long keys; botocore and pyarrow's AWS SDK both read it in their default chains.
* :class:`S3Gate`: moto's S3 behind a WSGI wrapper that answers 403 as S3 does for a request
  signed with a key it does not know (``InvalidAccessKeyId``) or whose key has expired
  (``ExpiredToken``), and ``AccessDenied`` for writes under prefixes the test denies.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from devtools.devservers._base import free_port

_KEY_ID = re.compile(r"Credential=([^/]+)/")


class ShortLivedCredentials:
    """A container credentials endpoint whose keys live ``lifetime_s`` seconds each."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self.issued: dict[str, float] = {}  # access key id -> expiry (epoch seconds)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> ShortLivedCredentials:
        creds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps(creds.issue()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def uri(self) -> str:
        assert self._server is not None, "start the endpoint first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v2/credentials/mlbatch-test"

    def issue(self) -> dict[str, str]:
        expires = time.time() + self.lifetime_s
        with self._lock:
            key_id = f"ASIATEST{len(self.issued):08d}"
            self.issued[key_id] = expires
        stamp = datetime.fromtimestamp(expires, UTC)
        return {
            "AccessKeyId": key_id,
            "SecretAccessKey": f"secret-{key_id}",
            "Token": f"token-{key_id}",
            # Second precision, as ECS writes it; rounding down keeps the client's view on the safe side.
            "Expiration": (stamp - timedelta(microseconds=stamp.microsecond)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def expiry(self, key_id: str) -> float | None:
        with self._lock:
            return self.issued.get(key_id)


class S3Gate:
    """moto's S3 (in this process) behind a key check and per-prefix write denials."""

    def __init__(
        self,
        credentials: ShortLivedCredentials | None = None,
        static_keys: Iterable[str] = (),
        deny_writes_under: Iterable[str] = (),
    ) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app

        self.credentials = credentials
        self.static_keys = set(static_keys)
        self.deny_writes_under = list(deny_writes_under)  # "bucket/key-prefix"
        self.rejected: list[tuple[str, str, str]] = []  # (code, method, path)
        self.accepted_keys: set[str] = set()
        self._moto = DomainDispatcherApplication(create_backend_app)
        self.port = free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> S3Gate:
        from moto.server import MotoRequestHandler
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=QuietHandler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()

    def _refusal(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        found = _KEY_ID.search(environ.get("HTTP_AUTHORIZATION", ""))
        key_id = found.group(1) if found else ""
        method, path = environ["REQUEST_METHOD"], unquote(environ.get("PATH_INFO", "")).lstrip("/")
        if key_id not in self.static_keys:
            expiry = self.credentials.expiry(key_id) if self.credentials else None
            if expiry is None:
                return "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
            if time.time() >= expiry:
                return "ExpiredToken", "The provided token has expired."
        if method in ("PUT", "POST", "DELETE") and any(path.startswith(p) for p in self.deny_writes_under):
            return "AccessDenied", "Access Denied"
        self.accepted_keys.add(key_id)
        return None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        refusal = self._refusal(environ)
        if refusal is None:
            return self._moto(environ, start_response)
        code, message = refusal
        self.rejected.append((code, environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>0000000000000000</RequestId></Error>"
        ).encode()
        start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]
