"""Named pipes that ``LOAD DATA LOCAL INFILE`` reads while writer threads still produce them.

Each writer runs in a thread and fills a named pipe; PyMySQL streams the pipe to the server as
it fills, so producing the TSV (reading shards, sorting, formatting) overlaps the load instead
of preceding it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

from sqlalchemy.exc import DBAPIError

from mlbatch.backends.appdb.mysql_load import LoadSource
from mlbatch.backends.appdb.publisher import PublishError

F_SETPIPE_SZ = 1031  # Linux fcntl: a pipe's buffer size
Writer = Callable[[BinaryIO], None]


@contextmanager
def piped_sources(
    writers: Sequence[Writer], key_ranges: Sequence[tuple[Any, Any]] | None = None
) -> Iterator[tuple[list[LoadSource], Callable[[], None]]]:
    """One LoadSource per writer, each a named pipe its writer fills in a thread.

    ``key_ranges`` (``(key_from, key_to)`` per writer) say which keys each pipe holds, so that
    the publish can load them in parallel sessions. Yields the sources and ``finish``, which
    waits for every writer and re-raises the first error: call it before anything goes live (a
    callable log row is the place). A writer error surfaces as itself, not as the short load it
    caused.
    """
    ranges = list(key_ranges) if key_ranges is not None else [(None, None)] * len(writers)
    if len(ranges) != len(writers):
        raise ValueError(f"piped_sources: {len(writers)} writers but {len(ranges)} key ranges")
    with tempfile.TemporaryDirectory(prefix="mlbatch-pipe-") as tmp:
        pipes = _Pipes(tmp, writers)
        try:
            yield (
                [LoadSource(path=f, key_from=lo, key_to=hi) for f, (lo, hi) in zip(pipes.fifos, ranges, strict=True)],
                pipes.finish,
            )
        except (DBAPIError, PublishError) as exc:
            # Only a failed or short load: an interruption (a timeout's exception) stays itself,
            # even though the writers it stopped failed too.
            if pipes.failure:
                raise pipes.failure[0] from exc
            raise
        finally:
            pipes.close()


class _Pipes:
    """The fifos under ``folder`` and the threads writing them."""

    def __init__(self, folder: str, writers: Sequence[Writer]):
        self.failure: list[BaseException] = []
        self.stop = threading.Event()
        self.fifos = [os.path.join(folder, f"day-{i}.tsv") for i in range(len(writers))]
        self.threads = []
        for fifo, write in zip(self.fifos, writers, strict=True):
            os.mkfifo(fifo, 0o600)
            self.threads.append(
                threading.Thread(target=self._fill, args=(fifo, write), name="mlbatch-tsv-writer", daemon=True)
            )
        for thread in self.threads:
            thread.start()

    def _fill(self, fifo: str, write: Writer) -> None:
        try:
            with open(fifo, "wb") as out:  # blocks until LOAD DATA opens the pipe
                if self.stop.is_set():
                    return
                with suppress(OSError):  # 1 MiB instead of 64 KiB: fewer wake-ups
                    fcntl.fcntl(out.fileno(), F_SETPIPE_SZ, 1 << 20)
                write(out)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by finish()
            self.failure.append(exc)

    def finish(self) -> None:
        for thread in self.threads:
            thread.join()
        if self.failure:
            raise self.failure[0]

    def close(self) -> None:
        self.stop.set()
        for fifo, thread in zip(self.fifos, self.threads, strict=True):
            if thread.is_alive():  # the load never opened (or stopped reading) this pipe
                with suppress(OSError):
                    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
                thread.join(timeout=30)
