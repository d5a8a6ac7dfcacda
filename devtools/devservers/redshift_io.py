"""UNLOAD and COPY as the Redshift Data API double runs them: DuckDB on one side, S3 on the other.

S3 is reached through a boto3 client at an explicit endpoint (the :class:`AwsEndpoint` that
serves the double, or any S3 API), never through this process's moto backend directly: the
objects are where every other client (pyarrow's reader, the workers) looks for them.

``UNLOAD ... FORMAT AS PARQUET`` writes ``<prefix>SSSS_part_NN.parquet`` (``PARALLEL ON``: one
series per slice, batches dealt round-robin, so even a modest result makes several parts;
a part is closed at ``MAXFILESIZE``) or ``<prefix>NNN.parquet`` (``PARALLEL OFF``), then the
manifest last, in Redshift's ``MANIFEST VERBOSE`` format. ``COPY ... FORMAT AS PARQUET`` loads
every object under a prefix (or those a manifest lists), columns matched by position.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from devtools.devservers.redshift_sql import Copy, Grants, RedshiftSqlError, Unload

SLICES = 4  # a small cluster's slice count: parts per UNLOAD with PARALLEL ON
BATCH_ROWS = 8_192  # rows dealt to a slice at a time (20k rows -> 3 parts)

_BASE_TYPES = {
    pa.bool_(): "boolean",
    pa.int16(): "smallint",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.float32(): "real",
    pa.float64(): "double precision",
    pa.string(): "character varying",
    pa.large_string(): "character varying",
    pa.date32(): "date",
}


class Cancelled(Exception):
    """CancelStatement reached the statement (it stops before its next effect)."""


def s3_client(endpoint: str | None, region: str) -> Any:
    """boto3's S3 client at ``endpoint`` (else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``)."""
    import boto3
    from botocore.config import Config

    url = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        raise RedshiftSqlError(
            "the Redshift Data API double has no S3 endpoint: pass RedshiftDataDouble(..., s3_endpoint=...)"
        )
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the test endpoints accept any credentials
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _manifest_type(arrow_type: pa.DataType) -> dict[str, Any]:
    if arrow_type in _BASE_TYPES:
        return {"base": _BASE_TYPES[arrow_type]}
    if pa.types.is_decimal(arrow_type):
        return {"base": "numeric", "precision": arrow_type.precision, "scale": arrow_type.scale}
    if pa.types.is_timestamp(arrow_type):
        return {"base": "timestamp with time zone" if arrow_type.tz else "timestamp without time zone"}
    raise RedshiftSqlError(f"UNLOAD to PARQUET: no Redshift type for column type {arrow_type}")


class _Slice:
    """One slice's parts: batches gathered, written as one part per ``max_bytes`` (uncompressed)."""

    def __init__(self, s3: Any, bucket: str, key_prefix: str, number: int, parallel: bool, max_bytes: int):
        self.s3, self.bucket, self.key_prefix = s3, bucket, key_prefix
        self.number, self.parallel, self.max_bytes = number, parallel, max_bytes
        self.batches: list[pa.RecordBatch] = []
        self.parts: list[dict[str, Any]] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        if sum(b.nbytes for b in self.batches) >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.batches:
            return
        n = len(self.parts)
        name = f"{self.number:04d}_part_{n:02d}.parquet" if self.parallel else f"{n:03d}.parquet"
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_batches(self.batches), sink, compression="snappy")
        body = sink.getvalue()
        self.s3.put_object(Bucket=self.bucket, Key=self.key_prefix + name, Body=body)
        rows = sum(b.num_rows for b in self.batches)
        url = f"s3://{self.bucket}/{self.key_prefix}{name}"
        self.parts.append({"url": url, "meta": {"content_length": len(body), "record_count": rows}})
        self.batches = []


def unload(u: Unload, sql: str, cursor: Any, s3: Any, cancel: threading.Event) -> int:
    """Run the UNLOAD of ``sql`` (its query, translated to DuckDB); the number of rows unloaded."""
    if not u.parquet:
        raise RedshiftSqlError("this double unloads FORMAT AS PARQUET only")
    bucket, key_prefix = _split(u.s3_prefix)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key_prefix, MaxKeys=1)
    if listed.get("KeyCount") and not u.allow_overwrite:
        raise RedshiftSqlError(
            "Specified unload destination on S3 is not empty. Consider using a different bucket / prefix, "
            "manually removing the target files in S3, or using the ALLOWOVERWRITE option."
        )
    reader = cursor.sql(sql).to_arrow_reader(BATCH_ROWS)
    # Redshift folds unquoted identifiers to lower case; its parquet columns follow.
    schema = pa.schema([f.with_name(f.name.lower()) for f in reader.schema])
    slices = [
        _Slice(s3, bucket, key_prefix, n, u.parallel, u.max_file_bytes) for n in range(SLICES if u.parallel else 1)
    ]
    for n, batch in enumerate(reader):
        if cancel.is_set():
            raise Cancelled
        if batch.num_rows:
            slices[n % len(slices)].add(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
    for s in slices:
        s.flush()
    entries = [p for s in slices for p in s.parts]
    rows = sum(e["meta"]["record_count"] for e in entries)
    if u.manifest:
        manifest: dict[str, Any] = {"entries": entries}
        if u.verbose:
            manifest["schema"] = {"elements": [{"name": f.name, "type": _manifest_type(f.type)} for f in schema]}
            manifest["meta"] = {
                "content_length": sum(e["meta"]["content_length"] for e in entries),
                "record_count": rows,
            }
            manifest["author"] = {"name": "Amazon Redshift", "version": "1.0.0"}
        s3.put_object(Bucket=bucket, Key=key_prefix + "manifest", Body=json.dumps(manifest, indent=2).encode())
    return rows


def _copy_sources(c: Copy, s3: Any) -> list[str]:
    """The S3 URIs a COPY loads: those its manifest lists, or every object under its prefix."""
    bucket, key = _split(c.source)
    if c.manifest:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            raise RedshiftSqlError(
                f"S3ServiceException:The specified key does not exist.,Status 404 (manifest {c.source})"
            ) from None
        entries = json.loads(body).get("entries", [])
        missing = [e["url"] for e in entries if c.parquet and "content_length" not in e.get("meta", {})]
        if missing:
            raise RedshiftSqlError(f"COPY from Parquet with a manifest needs meta.content_length for {missing[0]}")
        return [e["url"] for e in entries]
    uris = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        uris += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
    if not uris:
        raise RedshiftSqlError(f"S3ServiceException:The specified S3 prefix '{key}' does not exist")
    return uris


def copy(c: Copy, cursor: Any, s3: Any, user: str, grants: Grants) -> int:
    """Run the COPY; the number of rows loaded."""
    if not c.parquet:
        raise RedshiftSqlError("this double copies FORMAT AS PARQUET only")
    grants.check(user, "INSERT", c.schema, c.table)
    found = cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position",
        [c.schema, c.table],
    ).fetchall()
    if not found:
        raise RedshiftSqlError(f'relation "{c.schema}.{c.table}" does not exist')
    target = list(c.columns) if c.columns else [r[0] for r in found]
    with tempfile.TemporaryDirectory(prefix="redshift-copy-") as tmp:
        paths = []
        for n, uri in enumerate(_copy_sources(c, s3)):
            bucket, key = _split(uri)
            path = Path(tmp) / f"{n:05d}.parquet"
            s3.download_file(bucket, key, str(path))
            width = len(pq.read_schema(path))
            if width != len(target):
                raise RedshiftSqlError(
                    f"Spectrum Scan Error: File '{uri}' has an incompatible Parquet schema: {width} columns, "
                    f"{c.schema}.{c.table} expects {len(target)} (COPY matches Parquet columns by position)"
                )
            paths.append(str(path))
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        columns = ", ".join('"' + name.replace('"', '""') + '"' for name in target)
        try:
            cursor.execute(f'INSERT INTO "{c.schema}"."{c.table}" ({columns}) SELECT * FROM read_parquet([{files}])')
        except duckdb.ConstraintException as exc:  # a NULL or an over-long string: Redshift's load error
            raise RedshiftSqlError(
                f"Load into table '{c.table}' failed. Check 'sys_load_error_detail' system table for details. "
                f"(the double: {exc})"
            ) from exc
        return int(cursor.fetchone()[0])
