"""Where cached rows go: one preallocated tensor per column (memory) or bounded shard buffers (disk).

Both sinks hand the caching loop *slots*: views ``[rows, ...]`` into
preallocated buffers that the forward hooks fill in place, so no row is copied
twice and nothing is allocated per batch. The disk sink owns two buffers of a
fixed capacity: while the caching loop fills one, a background thread writes
the other as a shard (temp file, fsync, rename) and then updates the manifest,
so activation memory is bounded by the two buffers whatever the data size.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probekit.activations import disk

log = logging.getLogger(__name__)

#: column name -> (per-row shape, dtype)
Columns = dict[str, tuple[list[int], torch.dtype]]


def row_bytes(columns: Columns) -> int:
    """Bytes one row takes across all columns."""
    total = 0
    for shape, dtype in columns.values():
        n = 1
        for s in shape:
            n *= s
        total += n * torch.empty((), dtype=dtype).element_size()
    return total


def _alloc(columns: Columns, rows: int) -> dict[str, Tensor]:
    return {k: torch.empty((rows, *shape), dtype=dtype) for k, (shape, dtype) in columns.items()}


class MemorySink:
    """Every row in memory: one tensor per column, allocated once at its final size."""

    def __init__(self, columns: Columns, total_rows: int):
        self.data = _alloc(columns, total_rows)
        self.rows = 0

    def slot(self, rows: int, first_example: int) -> dict[str, Tensor]:
        return {k: v[self.rows : self.rows + rows] for k, v in self.data.items()}

    def commit(self, rows: int, end_example: int) -> None:
        self.rows += rows

    def close(self) -> dict[str, Tensor]:
        assert self.rows == next(iter(self.data.values())).shape[0], "memory sink not filled"
        return self.data

    def abort(self) -> None:
        pass


class ShardSink:
    """Rows into bounded buffers, each written out as one shard of an on-disk store.

    Args:
        root: the store directory (its manifest already written).
        manifest: the manifest dict; the writer thread appends shard entries
            and rewrites it after each shard.
        columns: what every row holds.
        capacity: rows per buffer (= the largest shard).
        first_example: the example the first buffer starts at (after resume).
        background: write shards on a background thread (two buffers) or
            inline (one buffer).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], columns: Columns, capacity: int,
                 first_example: int, *, background: bool = True):
        self.root = root
        self.manifest = manifest
        self.capacity = capacity
        self.background = background
        self._free: queue.Queue = queue.Queue()
        for _ in range(2 if background else 1):
            self._free.put(_alloc(columns, capacity))
        self._todo: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="probekit-shard-writer", daemon=True)
            self._thread.start()
        self._buf = self._free.get()
        self._rows = 0
        self._first = self._end = first_example

    # -- the caching loop's side ---------------------------------------------
    def slot(self, rows: int, first_example: int) -> dict[str, Tensor]:
        """Views for the next ``rows`` rows, flushing the current buffer first if they do not fit."""
        assert rows <= self.capacity, "batch larger than a shard buffer"
        if self._rows + rows > self.capacity:
            self._flush(end_example=first_example)
        return {k: v[self._rows : self._rows + rows] for k, v in self._buf.items()}

    def commit(self, rows: int, end_example: int) -> None:
        self._rows += rows
        self._end = end_example

    def close(self) -> None:
        """Write the last buffer, wait for the writer, mark the store complete."""
        if self._rows:
            self._flush(end_example=self._end)
        self._stop()
        self._raise_if_failed()
        self.manifest["complete"] = True
        disk.write_manifest(self.root, self.manifest)

    def abort(self) -> None:
        """Stop after the shards already handed to the writer (the caching loop failed)."""
        self._stop()

    def _flush(self, end_example: int) -> None:
        item = (self._buf, self._rows, self._first, end_example)
        if self.background:
            self._raise_if_failed()
            self._todo.put(item)
            self._buf = self._take_free()
        else:
            self._write(*item)
        self._rows, self._first = 0, end_example

    def _take_free(self) -> dict[str, Tensor]:
        while True:
            try:
                return self._free.get(timeout=0.2)
            except queue.Empty:
                self._raise_if_failed()

    def _stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the writer's side ---------------------------------------------------
    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            try:
                if self._error is None:  # after a failure, write nothing more
                    self._write(*item)
            except BaseException as e:  # handed to the caching loop
                self._error = e
            finally:
                self._free.put(item[0])

    def _write(self, buf: dict[str, Tensor], rows: int, first: int, end: int) -> None:
        shards = self.manifest["shards"]
        entry = disk.write_shard(self.root, len(shards), {k: v[:rows] for k, v in buf.items()})
        entry["examples"] = [first, end]
        shards.append(entry)
        disk.write_manifest(self.root, self.manifest)
        log.debug("wrote %s (%d rows, examples %d-%d)", entry["file"], rows, first, end)
