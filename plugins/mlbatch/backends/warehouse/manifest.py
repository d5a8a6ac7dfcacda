"""Redshift's UNLOAD manifest (``MANIFEST VERBOSE``), the one format every reader knows.

Production's UNLOAD writes it; the embedded unload writes the same JSON, so the reader, the
jobs and the gates never ask which side produced the parts. Shape (as Redshift writes it):

    {"entries": [{"url": "s3://b/k/0000_part_00.parquet",
                  "meta": {"content_length": 1234, "record_count": 10}}],
     "schema": {"elements": [{"name": "device_id", "type": {"base": "bigint"}}]},
     "meta": {"content_length": 1234, "record_count": 10},
     "author": {"name": "Amazon Redshift", "version": "1.0.0"}}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The unload's cap on a part's size (UNLOAD ... MAXFILESIZE). The reader fetches a part up to
# this size in one GET, so the statement and the reader share it.
UNLOAD_MAX_FILE_MB = 128


class EntryMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    content_length: int = Field(ge=0)
    record_count: int = Field(ge=0)


class Entry(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    meta: EntryMeta


class ColumnType(BaseModel):
    model_config = ConfigDict(extra="allow")
    base: str


class Column(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    type: ColumnType


class Schema(BaseModel):
    model_config = ConfigDict(extra="allow")
    elements: list[Column]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    entries: list[Entry]
    schema_: Schema = Field(alias="schema")
    meta: EntryMeta
    author: dict[str, str] = Field(default_factory=lambda: {"name": "Amazon Redshift", "version": "1.0.0"})

    @property
    def record_count(self) -> int:
        return self.meta.record_count

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.schema_.elements]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def parse(cls, text: str | bytes, source: str = "manifest") -> Manifest:
        """Parse and check internal consistency; errors name the manifest's URI."""
        try:
            manifest = cls.model_validate_json(text)
        except ValueError as exc:
            raise ValueError(f"{source}: not a Redshift UNLOAD manifest: {exc}") from exc
        total = sum(e.meta.record_count for e in manifest.entries)
        if total != manifest.meta.record_count:
            raise ValueError(
                f"{source}: entries hold {total} records but meta.record_count says {manifest.meta.record_count}"
            )
        return manifest
