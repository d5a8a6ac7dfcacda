"""AWS at the HTTP wire: one endpoint on 127.0.0.1 that serves the services mlbatch calls.

Services moto serves (S3, STS, IAM, CloudWatch Logs, ...) go to moto's own WSGI application in
this process; services moto cannot run for us (ECS tasks that are real containers, Redshift Data
API statements that really execute) go to doubles written on :class:`JsonService`. The caller
sees one ``endpoint_url``, as with LocalStack: the real boto3, aiobotocore and pyarrow clients,
with their real serialisers, signers, retries and waiters, talk HTTP to it.

Why our own doubles for ECS and the Redshift Data API: moto's ECS records tasks but runs nothing
(a task never stops, no exit code, no logs), and moto's Redshift Data API returns canned results
without executing SQL. The doubles here run the work for real (a container; a statement on the
embedded warehouse) and answer in the service's JSON protocol.

Every request to a :class:`JsonService` is checked against botocore's service model (the
operation exists, the parameters match its input shape); a request that does not is answered
with ``ValidationException`` *and* recorded in :attr:`JsonService.invalid`, which tests assert
empty: a request the real service would reject cannot pass here.

Routing: an AWS request names its service in the SigV4 credential scope
(``Credential=AKID/<date>/<region>/<service>/aws4_request``) and, for JSON protocols, its
operation in ``X-Amz-Target: <prefix>.<Operation>``.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs

from devtools.devservers._base import free_port

log = logging.getLogger(__name__)

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")


class AwsError(Exception):
    """An error answered in the service's JSON error shape (``__type`` + ``message``)."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class JsonService:
    """A service of the ``json`` protocol (ECS, Redshift Data API): subclasses name the botocore
    service (:attr:`service_name`) and implement one method per operation, named in snake case
    (``run_task`` for ``RunTask``), taking the request's parameters and returning the response."""

    service_name: str = ""

    def __init__(self) -> None:
        import botocore.session

        self.model = botocore.session.get_session().get_service_model(self.service_name)
        self.signing_name = self.model.signing_name or self.service_name
        self.requests: list[tuple[str, dict[str, Any]]] = []  # every valid request, in order
        self.invalid: list[tuple[str, str]] = []  # (operation, why): must stay empty in tests
        self._lock = threading.Lock()

    # -- dispatch --------------------------------------------------------------------------------

    def handle(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ParamValidationError
        from botocore.validate import validate_parameters

        if operation not in self.model.operation_names:
            self.invalid.append((operation, "no such operation in botocore's model"))
            raise AwsError("UnknownOperationException", f"{self.service_name} has no operation {operation}")
        try:
            validate_parameters(params, self.model.operation_model(operation).input_shape)
        except ParamValidationError as exc:
            self.invalid.append((operation, str(exc)))
            raise AwsError("ValidationException", str(exc)) from exc
        method = getattr(self, _snake(operation), None)
        if method is None:
            self.invalid.append((operation, "valid, but this double does not implement it"))
            raise AwsError("UnsupportedOperation", f"the {self.service_name} double does not implement {operation}")
        with self._lock:
            self.requests.append((operation, params))
        return method(**params) or {}

    def calls(self, operation: str) -> list[dict[str, Any]]:
        """The parameters of every valid request for ``operation``."""
        with self._lock:
            return [p for op, p in self.requests if op == operation]

    def close(self) -> None:
        """Release what the double holds (containers, threads); called when the endpoint stops."""


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()  # the JSON protocol's timestamps: epoch seconds
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class AwsEndpoint:
    """One threaded HTTP server: :class:`JsonService` doubles by signing name, the rest to moto."""

    def __init__(
        self,
        services: list[JsonService],
        port: int | None = None,
        query_handlers: dict[tuple[str, str], Callable[[dict[str, str]], tuple[int, str]]] | None = None,
    ):
        from moto.server import DomainDispatcherApplication, create_backend_app

        self.services = {s.signing_name: s for s in services}
        # (signing name, Action) of ``query``-protocol operations moto lacks (IAM's policy
        # simulator: devtools.devservers.iam_double) -> handler(form params) -> (status, XML).
        self.query_handlers = dict(query_handlers or {})
        self.port = port or free_port()
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __getitem__(self, signing_name: str) -> JsonService:
        return self.services[signing_name]

    def start(self) -> AwsEndpoint:
        from moto.server import MotoRequestHandler
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per request: noise in test output
                pass

        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"aws-wire:{self.port}", daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for service in self.services.values():
            service.close()

    def __enter__(self) -> AwsEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- WSGI --------------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = self.services.get(scope.group(1)) if scope else None
        if service is None:
            if scope and any(name == scope.group(1) for name, _ in self.query_handlers):
                return self._query(scope.group(1), environ, start_response)
            return self._moto(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target.rsplit(".", 1)[-1]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b"{}"
        try:
            params = json.loads(body or b"{}")
            status, payload = 200, service.handle(operation, params)
        except AwsError as exc:
            status, payload = exc.status, {"__type": exc.code, "message": exc.message}
        except Exception as exc:  # noqa: BLE001 - a bug in a double answers 500, as a service fault would
            log.exception("%s %s failed in the double", service.service_name, operation)
            status, payload = 500, {"__type": "ServerException", "message": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(payload, default=_json_default).encode()
        reason = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}.get(status, "Error")
        start_response(
            f"{status} {reason}",
            [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))],
        )
        return [data]

    def _query(self, signing_name: str, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """A form-encoded query request: ours when its Action has a handler, else moto's."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        handler = self.query_handlers.get((signing_name, params.get("Action", "")))
        if handler is None:
            environ["wsgi.input"] = io.BytesIO(body)  # moto reads the body again
            return self._moto(environ, start_response)
        status, xml = handler(params)
        data = xml.encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))],
        )
        return [data]


def aws_environment(endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment for processes that talk to an :class:`AwsEndpoint` (every client, every service)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - the doubles accept any credentials
        "AWS_DEFAULT_REGION": region,
    }
