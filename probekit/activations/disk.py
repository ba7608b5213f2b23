"""The on-disk layout of an activation store: a manifest and safetensors shards.

A store directory holds

- ``manifest.json``: format and version, the model (source, fingerprint,
  shape), the data (task or user data, ``n``, seed, split, positions, a hash
  of the tokens), the hooks with their per-row shapes and dtypes, the labels,
  and one entry per complete shard: file name, rows, the examples it covers
  and the sha256 of the file;
- ``shard-00000.safetensors`` …: every hook's activations for a run of rows,
  with the row index (``example_id``, ``position``, ``token``) and the labels
  of those rows (``label.<name>``, ``label_mask.<name>``).

Every file is written to a temporary name, fsynced and renamed into place; the
manifest is rewritten the same way after each shard, so a killed writer leaves
complete shards, possibly a stray temporary file, and a manifest that lists
only complete shards. Opening a store verifies every shard (checksum,
safetensors' own ``safe_open``, columns against the manifest) without loading
it; reads then copy only the requested rows. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from probekit.errors import ProbekitError

log = logging.getLogger(__name__)

FORMAT = "probekit-activations"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"
INDEX_COLUMNS = ("example_id", "position", "token")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def is_store_file(name: str) -> bool:
    """Whether ``name`` is a file this module writes (so it may delete it on overwrite/resume)."""
    base = name[: -len(TMP_SUFFIX)] if name.endswith(TMP_SUFFIX) else name
    return base == MANIFEST or (base.startswith("shard-") and base.endswith(".safetensors"))


def versions() -> dict[str, str]:
    """Versions of the packages that shape the stored values."""
    out = {}
    for pkg in ("probekit", "torch", "transformer-lens", "safetensors"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``root/manifest.json`` (temp file, fsync, rename, fsync dir)."""
    tmp = root / (MANIFEST + TMP_SUFFIX)
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)
    _fsync_dir(root)


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a store directory; a clear error for anything that is not one."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise ProbekitError(f"no activation store at {root}: not a directory")
    if not path.is_file():
        raise ProbekitError(f"no activation store at {root}: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProbekitError(f"{path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ProbekitError(f"{path} is not a probekit activation store manifest (format != {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ProbekitError(
            f"{path} has store format version {manifest.get('format_version')!r}; this probekit reads {FORMAT_VERSION}"
        )
    return manifest


def write_shard(root: Path, index: int, tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Write one shard (temp name, fsync, rename) and return its manifest entry.

    Args:
        root: the store directory.
        index: the shard number.
        tensors: column name -> ``[rows, ...]`` contiguous CPU tensors.
    """
    name = shard_name(index)
    tmp = root / (name + TMP_SUFFIX)
    digest = write_safetensors(tmp, tensors, metadata={"format": FORMAT})
    os.replace(tmp, root / name)
    _fsync_dir(root)
    return {"file": name, "rows": int(next(iter(tensors.values())).shape[0]), "sha256": digest}


def write_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` as a safetensors file, fsync it, and return its sha256.

    The format (an 8-byte little-endian header length, a JSON header of
    dtypes, shapes and byte offsets padded to 8 bytes, then the raw
    little-endian data) is written here rather than by ``safetensors.torch.save_file``
    so that the checksum is computed from the buffers as they are written (one
    pass over the data, no re-read), and so that the GIL is released during the
    writes: the caching loop keeps running while a shard is written. Readers
    use safetensors' own ``safe_open``.
    """
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    views, offset = [], 0
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
        header[key] = {"dtype": _ST_CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + raw.numel()]}
        views.append(raw.numpy())
        offset += raw.numel()
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # data starts 8-byte aligned, as safetensors writes it
    prefix = len(head).to_bytes(8, "little") + head
    h = hashlib.sha256(prefix)
    with open(path, "wb") as f:
        f.write(prefix)
        for v in views:
            f.write(memoryview(v))
            h.update(memoryview(v))
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


# safetensors' dtype codes
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
_ST_CODES = {v: k for k, v in _ST_DTYPES.items()}

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool)}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_of(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ProbekitError(f"unsupported dtype {name!r} in store manifest (valid: {', '.join(_DTYPES)})")
    return _DTYPES[name]


class ShardReader:
    """Verified, lazy read access to the shards of a store.

    Opening checks each shard (present, sha256 as in the manifest, a valid
    safetensors file per ``safe_open``, the columns, shapes and dtypes the
    manifest describes) and keeps only the byte offsets of its columns. Reads
    copy exactly the requested rows from the files with positioned reads, so
    iterating over a store larger than memory keeps the process's memory flat:
    nothing is mapped into it (a memory map would be, with the kernel's
    read-ahead pulling whole shards in on the first touch).

    Args:
        root: the store directory.
        manifest: its parsed manifest.
        verify: check each shard's sha256 against the manifest (reads every byte once).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], *, verify: bool = True):
        self.root = root
        self.entries = list(manifest.get("shards", []))
        self.columns = expected_columns(manifest)
        self.offsets = [0]
        for e in self.entries:
            self.offsets.append(self.offsets[-1] + int(e["rows"]))
        #: per shard: column -> absolute byte offset of its first row
        self._starts = [self._open(e, verify) for e in self.entries]
        #: per shard: (inode, size, mtime) when opened, so that a replaced file is noticed
        self._stats = [_identity(self.root / e["file"]) for e in self.entries]

    def _open(self, entry: dict[str, Any], verify: bool) -> dict[str, int]:
        name = entry["file"]
        path = self.root / name
        where = f"shard {name} of the store at {self.root}"
        if not path.is_file():
            raise ProbekitError(f"{where} is missing")
        if verify and sha256_file(path) != entry["sha256"]:
            raise ProbekitError(f"{where} is corrupt or was replaced: its sha256 does not match the manifest")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:  # validates the format
                keys = set(handle.keys())
            header, data_start = _header(path)
        except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as e:
            raise ProbekitError(f"{where} is unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if keys != set(self.columns):
            raise ProbekitError(f"{where} does not match the manifest: columns {sorted(keys ^ set(self.columns))} differ")
        rows, starts = int(entry["rows"]), {}
        for key, (shape, dtype) in self.columns.items():
            info = header[key]
            got_shape, got_dtype = list(info["shape"]), _ST_DTYPES.get(info["dtype"])
            if got_shape != [rows, *shape] or got_dtype != dtype:
                raise ProbekitError(
                    f"{where} does not match the manifest: column {key!r} is {info['dtype']}{got_shape}, "
                    f"expected {dtype_name(dtype)}{[rows, *shape]}"
                )
            starts[key] = data_start + int(info["data_offsets"][0])
        return starts

    @property
    def rows(self) -> int:
        return self.offsets[-1]

    def column(self, key: str) -> Tensor:
        """All rows of one column, from every shard."""
        return self.slice(key, 0, self.rows)

    def slice(self, key: str, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of one column, read from the shards that hold them into one new tensor."""
        shape, dtype = self.columns[key]
        start, stop = max(start, 0), min(stop, self.rows)
        n = max(stop - start, 0)
        row_nbytes = torch.empty((1, *shape), dtype=dtype).nbytes
        raw = torch.empty(n * row_nbytes, dtype=torch.uint8)
        buf = memoryview(raw.numpy())
        filled = 0
        for i, starts in enumerate(self._starts):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            if hi <= start or lo >= stop:
                continue
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            size = (b - a) * row_nbytes
            path = self.root / self.entries[i]["file"]
            if _identity(path) != self._stats[i]:
                raise ProbekitError(f"shard {path.name} of the store at {self.root} changed since the store was "
                                    "opened; open it again")
            _read_into(path, starts[key] + a * row_nbytes, buf[filled : filled + size])
            filled += size
        return raw.view(dtype).reshape(n, *shape)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header and the byte offset its data starts at."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return header, 8 + n


def _read_into(path: Path, offset: int, out: memoryview) -> None:
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        done = 0
        while done < len(out):
            got = f.readinto(out[done:])
            if not got:
                raise ProbekitError(f"{path} ended early: the file was truncated after the store was opened")
            done += got




def expected_columns(manifest: dict[str, Any]) -> dict[str, tuple[list[int], torch.dtype]]:
    """Column name -> (per-row shape, dtype) that every shard of this manifest holds."""
    cols: dict[str, tuple[list[int], torch.dtype]] = {c: ([], torch.int64) for c in INDEX_COLUMNS}
    for hook in manifest["hooks"]:
        cols[f"act.{hook}"] = (list(manifest["shapes"][hook]), dtype_of(manifest["dtypes"][hook]))
    for name, spec in manifest.get("labels", {}).items():
        cols[f"label.{name}"] = ([], dtype_of(spec["dtype"]))
        cols[f"label_mask.{name}"] = ([], torch.bool)
    return cols


class ShardedActs(Mapping):
    """``hook name -> [rows, ...]`` over a store's shards, loaded on access.

    Indexing a hook reads that hook's rows from every shard into one tensor;
    :meth:`slice` reads a row range only.
    """

    def __init__(self, reader: ShardReader, hooks: list[str]):
        self._reader = reader
        self._hooks = list(hooks)

    def __getitem__(self, hook: str) -> Tensor:
        if hook not in self._hooks:
            raise KeyError(hook)
        return self._reader.column(f"act.{hook}")

    def slice(self, hook: str, start: int, stop: int) -> Tensor:
        if hook not in self._hooks:
            raise KeyError(hook)
        return self._reader.slice(f"act.{hook}", start, stop)

    def __iter__(self) -> Iterator[str]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)

    def __contains__(self, hook: object) -> bool:
        return hook in self._hooks

    def __repr__(self) -> str:
        return f"ShardedActs({self._hooks}, rows={self._reader.rows}, shards={len(self._reader.entries)})"
