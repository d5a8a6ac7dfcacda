"""The object store: S3 in production, a local directory in the embedded stack.

Both sides are a pyarrow filesystem under a root URI, so every reader and writer above this
module (unload, reader, jobs, publish, export) uses one code path. Keys are the bucket's key
layout (``unload/<model>/...``, ``models/<model>/<version>/...``) on both sides.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import posixpath
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import ParseResult, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlbatch.errors import StageFailed

_LOCAL = pafs.LocalFileSystem()


class StoreError(StageFailed, RuntimeError):
    """An object could not be read or written; the message names the URI."""


# S3 filesystems are built once per (endpoint, region, credentials): building one costs a
# client set-up and its connection pool, and a reader opens a file per manifest entry.
_S3_CACHE: dict[tuple[str, ...], pafs.S3FileSystem] = {}
_S3_LOCK = threading.Lock()
# How long a connection's settings are reused before the connection is read again (a changed
# connection, rotated static keys). Credentials that expire are never frozen here: see _S3Settings.
CREDENTIALS_TTL_S = 600


@dataclass(frozen=True)
class _S3Settings:
    """Where S3 is and which credentials sign for it.

    ``credentials`` holds keys only when they were given as keys (the connection's login and
    password, or ``AWS_ACCESS_KEY_ID`` outside Airflow). Otherwise it is None and every client
    walks the default chain itself (env, web identity/IRSA, ECS task role, instance role), whose
    credentials refresh before they expire: pyarrow's AWS SDK re-fetches them, botocore's
    ``RefreshableCredentials`` too. Copying such credentials out as keys would freeze them and a
    stream longer than their lifetime (about an hour) would fail half-way.
    """

    region: str
    endpoint: str | None
    credentials: tuple[str, str, str | None] | None = field(default=None, repr=False)
    # The Airflow connection boto3 clients come from (its session refreshes what it assumes).
    conn_id: str | None = None

    def cache_key(self) -> tuple[str, ...]:
        # A digest, not the secret itself, so the key is safe to show in a debugger or a log.
        digest = hashlib.sha256(repr(self.credentials).encode()).hexdigest()
        return (self.region, self.endpoint or "", digest, self.conn_id or "")


def aws_conn_id() -> str | None:
    """The Airflow AWS connection the object store uses, or None outside Airflow.

    ``MLBATCH_AWS_CONN_ID`` names it explicitly; inside an Airflow task (``AIRFLOW_CTX_DAG_ID``
    is set by the task runner) it defaults to ``aws_default``. Elsewhere (CLI, tests,
    benchmarks) the standard AWS environment chain applies.
    """
    explicit = os.environ.get("MLBATCH_AWS_CONN_ID")
    if explicit:
        return explicit
    return "aws_default" if os.environ.get("AIRFLOW_CTX_DAG_ID") else None


@functools.lru_cache(maxsize=8)
def _connection_settings(conn_id: str, _epoch: int) -> _S3Settings:
    """Region, endpoint and credentials of an Airflow AWS connection (``_epoch`` re-reads the
    connection every ``CREDENTIALS_TTL_S``). S3Hook masks the secret in task logs."""
    # The amazon provider and boto3 (1-2 s to import): only an s3:// store loads them.
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=conn_id)
    cfg = hook.conn_config
    region = cfg.region_name or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = cfg.get_service_endpoint_url("s3") or _env_endpoint()
    if not (cfg.aws_access_key_id or cfg.role_arn or cfg.profile_name):
        # No keys in the connection: the worker's own role (IRSA, ECS task role, instance
        # profile). Each client walks the default chain and refreshes; nothing is copied out.
        return _S3Settings(region, endpoint, None, conn_id)
    if cfg.aws_access_key_id and not cfg.role_arn:
        static = (cfg.aws_access_key_id, cfg.aws_secret_access_key or "", cfg.aws_session_token)
        return _S3Settings(region, endpoint, static, conn_id)
    # role_arn or a profile: only the hook's botocore session knows how to assume and refresh
    # them. pyarrow gets a snapshot, re-read every CREDENTIALS_TTL_S; an assumed role lasts an
    # hour at least, but one stream open longer than what is left of it fails (docs/deploy.md
    # recommends a connection without keys on AWS).
    creds = hook.get_credentials()
    return _S3Settings(region, endpoint, (creds.access_key, creds.secret_key, creds.token), conn_id)


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _s3_settings() -> _S3Settings:
    conn_id = aws_conn_id()
    if conn_id:
        return _connection_settings(conn_id, int(time.time() // CREDENTIALS_TTL_S))
    env_keys = None
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        # Part of the cache key only: a changed key pair (a test server, a rotated secret)
        # must not reuse a filesystem built for the old one.
        env_keys = (
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ.get("AWS_SESSION_TOKEN"),
        )
    return _S3Settings(os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), _env_endpoint(), env_keys)


def s3_filesystem() -> pafs.S3FileSystem:
    """The process's S3 filesystem for the current settings, built on first use.

    Without keys, pyarrow's AWS SDK walks the default chain itself and refreshes what it finds
    (web identity, ECS container credentials, instance metadata): an open stream keeps reading
    after the credentials it started with have expired.
    """
    settings = _s3_settings()
    key = settings.cache_key()
    with _S3_LOCK:
        fs = _S3_CACHE.get(key)
        if fs is None:
            kwargs: dict[str, Any] = {"region": settings.region}
            if settings.endpoint:
                ep = urlparse(settings.endpoint)
                kwargs["endpoint_override"] = ep.netloc or ep.path
                kwargs["scheme"] = ep.scheme or "http"
            if settings.credentials is not None:
                access, secret, token = settings.credentials
                kwargs.update(access_key=access, secret_key=secret, session_token=token)
            fs = _S3_CACHE[key] = pafs.S3FileSystem(**kwargs)
        return fs


_BOTO_CACHE: dict[tuple[str, ...], Any] = {}


def s3_client() -> Any:
    """A boto3 S3 client with the same settings as :func:`s3_filesystem`, built on first use.

    Whole-object GETs go through it: botocore receives a body with about half the CPU of
    pyarrow's AWS SDK read (57 MB: 0.05 vs 0.10 CPU-s here), and the reader fetches whole parts.
    Inside Airflow it is the connection's own client (S3Hook): its session's credentials refresh,
    whether they come from the default chain or from an assumed role.
    """
    settings = _s3_settings()
    key = settings.cache_key()
    with _S3_LOCK:
        client = _BOTO_CACHE.get(key)
        if client is None:
            client = _BOTO_CACHE[key] = _new_s3_client(settings)
        return client


def _new_s3_client(settings: _S3Settings) -> Any:
    if settings.conn_id:
        # The amazon provider and boto3 (1-2 s to import): only an s3:// store loads them.
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=settings.conn_id).get_conn()
    # The amazon provider and boto3 (1-2 s to import): only an s3:// store loads them.
    import boto3

    kwargs: dict[str, Any] = {"region_name": settings.region, "endpoint_url": settings.endpoint}
    if settings.credentials is not None:
        access, secret, token = settings.credentials
        kwargs.update(aws_access_key_id=access, aws_secret_access_key=secret, aws_session_token=token)
    # A session of its own: without keys it resolves the default chain into RefreshableCredentials.
    return boto3.session.Session().client("s3", **kwargs)


def read_object(uri: str, size: int) -> pa.Buffer:
    """The whole object at ``uri`` (``size`` bytes, as its metadata says) in one GET."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        fs, path = filesystem_for(uri)
        with fs.open_input_file(path) as f:
            data = f.read_buffer(size)
    else:
        # The amazon provider and boto3 (1-2 s to import): only an s3:// store loads them.
        from botocore.exceptions import ClientError

        try:
            body = s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
            data = pa.py_buffer(body.read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{uri} does not exist") from None
            raise OSError(f"cannot read {uri}: {exc}") from exc
    if data.size != size:
        raise OSError(f"{uri}: read {data.size} bytes, its metadata says {size} (changed while read?)")
    return data


def _s3(parsed: ParseResult, _uri: str) -> tuple[pafs.FileSystem, str]:
    return s3_filesystem(), f"{parsed.netloc}{parsed.path}"


def _local(parsed: ParseResult, uri: str) -> tuple[pafs.FileSystem, str]:
    return _LOCAL, parsed.path if parsed.scheme else uri


# URI scheme -> (filesystem, path) of a URI: the object store's backends. "" is a bare local path
# (what a job hands back for a local object); roots are always file:// or s3://.
FILESYSTEMS: dict[str, Callable[[ParseResult, str], tuple[pafs.FileSystem, str]]] = {
    "file": _local,
    "s3": _s3,
    "": _local,
}


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path) for a ``file://`` or ``s3://`` URI.

    S3 credentials come from the Airflow AWS connection inside Airflow (see :func:`aws_conn_id`)
    and from the standard AWS chain elsewhere (``AWS_ENDPOINT_URL`` points at a test server),
    never from arguments, so they stay out of logs and job command lines.
    """
    parsed = urlparse(uri)
    resolve = FILESYSTEMS.get(parsed.scheme)
    if resolve is None:
        raise StoreError(
            f"unsupported object URI {uri!r}: expected s3://bucket/key or file:///path "
            f"(scheme {parsed.scheme!r} is not one of {', '.join(s for s in FILESYSTEMS if s)})"
        )
    return resolve(parsed, uri)


def iter_parquet(
    uris: list[str], columns: list[str] | None = None, batch_rows: int = 65_536, what: str = "parquet file"
) -> Iterator[pa.RecordBatch]:
    """The parquet files at ``uris`` as record batches, one file after another, never a whole
    file in memory; an unreadable file raises :class:`StoreError` naming ``what`` and its URI."""
    for uri in uris:
        fs, path = filesystem_for(uri)
        try:
            with fs.open_input_file(path) as f:
                yield from row_group_batches(pq.ParquetFile(f, pre_buffer=True), batch_rows, columns)
        except OSError as exc:
            raise StoreError(f"cannot read {what} {uri}: {exc}") from exc


def row_group_batches(
    pf: pq.ParquetFile, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """A file opened with ``pre_buffer=True`` as record batches, one row group at a time.

    Each row group's column chunks arrive in a few coalesced range requests instead of one GET
    per column chunk: on S3 the requests are what cost (41 columns from moto's server: 0.6 s
    against 4.7-7.4 s chunk by chunk). One group at a time keeps what is held to that group:
    pre-buffering every group at once (pyarrow's default) held 6.4 GB at 10M rows.
    ``jobs.io.iter_batches`` is its deliberate twin (the jobs may not import the plugin).
    """
    for group in range(pf.metadata.num_row_groups):
        yield from pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)


@dataclass(frozen=True)
class ObjectStore:
    """Keys under one root URI (``s3://bucket/prefix`` or ``file:///abs/dir``)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", self.root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return self.root.startswith("file://")

    def prepare(self, setting: str = "MLBATCH_OBJECT_STORE") -> None:
        """Check the root's scheme names a backend (``setting`` names where it came from) and
        create a local root's folder; an S3 bucket is the deployment's to create."""
        scheme = urlparse(self.root).scheme
        if scheme not in FILESYSTEMS or not scheme:
            raise StoreError(
                f"{setting}={self.root!r}: expected s3://bucket/prefix or file:///abs/dir "
                f"(scheme {scheme!r} is not one of {', '.join(s for s in FILESYSTEMS if s)})"
            )
        if self.is_local:
            os.makedirs(self.root.removeprefix("file://"), exist_ok=True)

    def uri(self, key: str) -> str:
        return f"{self.root}/{key.lstrip('/')}"

    def key(self, uri: str) -> str:
        """The key of a URI inside this store (the inverse of :meth:`uri`)."""
        if not uri.startswith(self.root + "/"):
            raise StoreError(f"{uri} is outside the object store {self.root}")
        return uri[len(self.root) + 1 :]

    def _fs(self, key: str) -> tuple[pafs.FileSystem, str]:
        return filesystem_for(self.uri(key))

    def exists(self, key: str) -> bool:
        fs, path = self._fs(key)
        found: bool = fs.get_file_info(path).type != pafs.FileType.NotFound
        return found

    @contextlib.contextmanager
    def open_output(self, key: str) -> Iterator[Any]:
        """A stream whose object appears only when the block ends without error.

        Local: write a unique temp file, then rename (threads of one process may write the same
        key at once). S3: the upload completes on close; on error it is closed and deleted (pyarrow
        has no multipart abort). ``jobs/io.py`` has the same writer: jobs may not import mlbatch.
        """
        fs, path = self._fs(key)
        if self.is_local:
            fs.create_dir(posixpath.dirname(path), recursive=True)
            tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                with fs.open_output_stream(tmp) as out:
                    yield out
                fs.move(tmp, path)
            finally:
                if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    fs.delete_file(tmp)
            return
        out = fs.open_output_stream(path)
        try:
            yield out
        except BaseException:
            with contextlib.suppress(Exception):
                out.close()
                fs.delete_file(path)
            raise
        out.close()

    def put_bytes(self, key: str, data: bytes) -> str:
        with self.open_output(key) as out:
            out.write(data)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        fs, path = self._fs(key)
        try:
            with fs.open_input_stream(path) as f:
                data: bytes = f.read()
                return data
        except (FileNotFoundError, OSError) as exc:
            raise StoreError(f"cannot read {self.uri(key)}: {exc}") from exc

    def put_json(self, key: str, obj: Any) -> str:
        return self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def list(self, prefix: str) -> list[str]:
        """Keys of the files under a prefix, sorted."""
        fs, path = self._fs(prefix)
        selector = pafs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True)
        base = self._fs("")[1].rstrip("/")
        return sorted(
            info.path[len(base) + 1 :] for info in fs.get_file_info(selector) if info.type == pafs.FileType.File
        )

    def delete_prefix(self, prefix: str) -> None:
        fs, path = self._fs(prefix)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)
