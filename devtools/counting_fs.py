"""Bytes read from the object store, per file: a pyarrow filesystem that counts what passes.

:func:`count_reads` puts a counting wrapper behind the ``file://`` scheme of
:data:`mlbatch.backends.store.FILESYSTEMS`, the registry every read of the package goes through
(the stages' parquet streams, the publishers', the embedded warehouse's): what the package
reads is what the wrapper sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from mlbatch.backends import store


class _CountingFile:
    """A file-like view of a pyarrow file that adds what each read returns to ``counter[path]``."""

    def __init__(self, inner: Any, path: str, counter: Counter[str]):
        self._inner, self._path, self._counter = inner, path, counter

    def read(self, nbytes: int = -1) -> bytes:
        data = self._inner.read() if nbytes is None or nbytes < 0 else self._inner.read(nbytes)
        self._counter[self._path] += len(data)
        return bytes(data)

    def read_buffer(self, nbytes: int | None = None) -> pa.Buffer:
        # pyarrow's PythonFile prefers this to read() when the object has it.
        buf = self._inner.read_buffer(nbytes)
        self._counter[self._path] += buf.size
        return buf

    def read_at(self, nbytes: int, offset: int) -> bytes:
        data = self._inner.read_at(nbytes, offset)
        self._counter[self._path] += len(data)
        return bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CountingHandler(pafs.FileSystemHandler):
    def __init__(self, fs: pafs.FileSystem, counter: Counter[str]):
        self.fs, self.counter = fs, counter

    def get_type_name(self) -> str:
        return "counting"

    def equals(self, other: Any) -> bool:
        return isinstance(other, _CountingHandler) and other.fs.equals(self.fs)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return pa.PythonFile(_CountingFile(self.fs.open_input_stream(path), path, self.counter), mode="r")

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.PythonFile(_CountingFile(self.fs.open_input_file(path), path, self.counter), mode="r")

    def open_output_stream(self, path: str, metadata: dict[str, str] | None = None) -> pa.NativeFile:
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: dict[str, str] | None = None) -> pa.NativeFile:
        return self.fs.open_append_stream(path, metadata=metadata)

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)


@contextmanager
def count_reads(schemes: tuple[str, ...] = ("file",)) -> Iterator[Counter[str]]:
    """Within: every read through the package's store registry for ``schemes``, in bytes per path."""
    counter: Counter[str] = Counter()
    saved = {scheme: store.FILESYSTEMS[scheme] for scheme in schemes}

    def counting(resolve: Any) -> Any:
        def wrapped(parsed: Any, uri: str) -> tuple[pafs.FileSystem, str]:
            fs, path = resolve(parsed, uri)
            return pafs.PyFileSystem(_CountingHandler(fs, counter)), path

        return wrapped

    try:
        for scheme, resolve in saved.items():
            store.FILESYSTEMS[scheme] = counting(resolve)
        yield counter
    finally:
        store.FILESYSTEMS.update(saved)
