"""Object I/O for the jobs: ``file://`` and ``s3://`` URIs through pyarrow filesystems.

A deliberate copy of the URI mapping in ``mlbatch.backends.store`` (the jobs may not import the plugin):
S3 endpoint, region and credentials come from the standard ``AWS_*`` environment variables, so
they never appear on a job's command line or in its logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class JobInputError(ValueError):
    """An input is unusable; the message names the input and what is wrong with it."""


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path) for a ``file://`` or ``s3://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        if endpoint:
            ep = urlparse(endpoint)
            kwargs["endpoint_override"] = ep.netloc or ep.path
            kwargs["scheme"] = ep.scheme or "http"
        # Credentials: pyarrow's default AWS chain reads AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY /
        # _SESSION_TOKEN, then the ECS task role, so nothing is passed here.
        return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}"
    if parsed.scheme in ("file", ""):
        return pafs.LocalFileSystem(), parsed.path if parsed.scheme else uri
    raise JobInputError(f"unsupported URI {uri!r}: expected s3://bucket/key or file:///abs/path")


def join_uri(prefix: str, name: str) -> str:
    return prefix.rstrip("/") + "/" + name.lstrip("/")


def exists(uri: str) -> bool:
    fs, path = filesystem_for(uri)
    is_file: bool = fs.get_file_info(path).type == pafs.FileType.File
    return is_file


def delete(uri: str) -> None:
    """Remove the object at ``uri``; one that is not there is fine."""
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def delete_folder(uri: str) -> None:
    """Remove the folder (S3: every object under the prefix) at ``uri``; none there is fine.
    Not ``delete`` of its last file: on S3 pyarrow then leaves an empty ``folder/`` object."""
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path.rstrip("/")).type == pafs.FileType.Directory:
        fs.delete_dir(path.rstrip("/"))


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem_for(uri)
    try:
        with fs.open_input_stream(path) as f:
            data: bytes = f.read()
            return data
    except (FileNotFoundError, OSError) as exc:
        raise JobInputError(f"cannot read {uri}: {exc}") from exc


def read_json(uri: str) -> Any:
    data = read_bytes(uri)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise JobInputError(f"{uri} is not valid JSON: {exc}") from exc


@contextmanager
def open_output(uri: str) -> Iterator[BinaryIO]:
    """A stream whose object appears at ``uri`` only when the block finishes without error.

    Local: write a temp file, then rename. S3: an upload becomes visible only when it completes,
    so a killed job leaves nothing; on an exception we must close the stream (pyarrow exposes no
    multipart abort), which publishes the partial object, so we delete it straight away.
    """
    fs, path = filesystem_for(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(os.path.dirname(path), recursive=True)
        tmp = f"{path}.tmp-{os.getpid()}"
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
        with suppress(Exception):
            out.close()
            fs.delete_file(path)
        raise
    out.close()


def write_bytes(uri: str, data: bytes) -> str:
    with open_output(uri) as out:
        out.write(data)
    return uri


def write_json(uri: str, obj: Any) -> str:
    return write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n")


# --- Redshift UNLOAD manifest (MANIFEST VERBOSE) ---------------------------------------------


def read_manifest(uri: str) -> dict[str, Any]:
    """Read and check a manifest: every entry has a url and a record_count, and they add up."""
    manifest: dict[str, Any] = read_json(uri)
    try:
        entries = manifest["entries"]
        for e in entries:
            if not isinstance(e["url"], str) or int(e["meta"]["record_count"]) < 0:
                raise ValueError(f"bad entry {e!r}")
        total = int(manifest["meta"]["record_count"])
        for el in manifest.get("schema", {}).get("elements", []):
            if not isinstance(el["name"], str) or not isinstance(el["type"]["base"], str):
                raise ValueError(f"bad schema element {el!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise JobInputError(
            f"{uri}: not a Redshift UNLOAD manifest (need entries[].url, entries[].meta.record_count, "
            f"meta.record_count, schema.elements[].name/type.base): {exc!r}"
        ) from exc
    listed = sum(int(e["meta"]["record_count"]) for e in entries)
    if listed != total:
        raise JobInputError(f"{uri}: entries hold {listed} records but meta.record_count says {total}")
    return manifest


def open_parquet(uri: str) -> pq.ParquetFile:
    """A parquet file opened for streaming with :func:`iter_batches` (or for its footer)."""
    fs, path = filesystem_for(uri)
    try:
        return pq.ParquetFile(fs.open_input_file(path), pre_buffer=True)
    except (FileNotFoundError, OSError, pa.ArrowInvalid) as exc:
        raise JobInputError(f"cannot open parquet file {uri}: {exc}") from exc


def iter_batches(pf: pq.ParquetFile, batch_size: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches, one row group at a time.

    Each row group's column chunks are pre-buffered: they arrive in a few coalesced range
    requests instead of one GET per column chunk. On S3 the requests are what cost (a part of 41
    columns from moto's server: 0.6 s against 4.7-7.4 s column chunk by column chunk). Asking for
    one row group at a time keeps what is held to that group: pre-buffering the whole file (the
    default of ``iter_batches`` over every group) held 6.4 GB at 10M rows. A deliberate twin of
    ``mlbatch.backends.store.iter_parquet`` (the jobs may not import the plugin).
    """
    for group in range(pf.metadata.num_row_groups):
        yield from pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)


def check_entry_count(entry: dict[str, Any], pf: pq.ParquetFile) -> None:
    """The file must hold exactly the rows the manifest says: a short file means a lost part."""
    expected = int(entry["meta"]["record_count"])
    actual = pf.metadata.num_rows
    if actual != expected:
        raise JobInputError(f"{entry['url']}: holds {actual} rows but the manifest's record_count says {expected}")


def read_manifest_table(
    uri: str, entries: Sequence[dict[str, Any]] | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """Read the manifest's parquet parts (all, or the given ``entries``) into one table."""
    if entries is None:
        entries = read_manifest(uri)["entries"]
    tables = []
    for entry in entries:
        pf = open_parquet(entry["url"])
        check_entry_count(entry, pf)
        try:
            tables.append(pf.read(columns=list(columns) if columns is not None else None))
        except (KeyError, pa.ArrowInvalid) as exc:
            raise JobInputError(f"cannot read {entry['url']} (listed in {uri}): {exc}") from exc
    if not tables:
        raise JobInputError(f"{uri}: the manifest lists no files")
    try:
        # Parts of one UNLOAD share a schema; "permissive" only unifies e.g. an all-null part.
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise JobInputError(f"{uri}: the listed parquet files have incompatible schemas: {exc}") from exc
