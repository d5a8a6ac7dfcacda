"""The object store: S3 in production, a local directory in the embedded stack.

Both sides are a pyarrow filesystem under a root URI, so every reader and writer above this
module (unload, reader, jobs, publish, export) uses one code path. Keys are the bucket's key
layout (``unload/<model>/...``, ``models/<model>/<version>/...``) on both sides.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs


class StoreError(RuntimeError):
    """An object could not be read or written; the message names the URI."""


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path) for a ``file://`` or ``s3://`` URI.

    S3 credentials and endpoint come from the environment (``AWS_*``, including
    ``AWS_ENDPOINT_URL`` for a test server), never from arguments, so they stay out of logs
    and job command lines.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        if endpoint:
            ep = urlparse(endpoint)
            kwargs["endpoint_override"] = ep.netloc or ep.path
            kwargs["scheme"] = ep.scheme or "http"
        return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}"
    if parsed.scheme in ("file", ""):
        return pafs.LocalFileSystem(), parsed.path if parsed.scheme else uri
    raise StoreError(f"unsupported object URI {uri!r}: expected s3://bucket/key or file:///path")


@dataclass(frozen=True)
class ObjectStore:
    """Keys under one root URI (``s3://bucket/prefix`` or ``file:///abs/dir``)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", self.root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return self.root.startswith("file://")

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
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def put_bytes(self, key: str, data: bytes) -> str:
        fs, path = self._fs(key)
        if self.is_local:
            fs.create_dir(posixpath.dirname(path), recursive=True)
            # Write then rename: a reader never sees half a file, as with an S3 PUT.
            tmp = f"{path}.tmp-{os.getpid()}"
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, path)
        else:
            with fs.open_output_stream(path) as out:
                out.write(data)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        fs, path = self._fs(key)
        try:
            with fs.open_input_stream(path) as f:
                return f.read()
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
