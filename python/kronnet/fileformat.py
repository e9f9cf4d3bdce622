"""kronnet's file container: saved nets and training checkpoints (docs/format.md).

This module knows the container, not what is in it: the model (its
members, ``kronnet.model.format``) and the training checkpoints
(``kronnet.training.checkpoint``) decide which arrays and which JSON fields
they write.

A file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays, each with a
CRC-32) holding one JSON document, ``kronnet.json``, stored as UTF-8 bytes,
and plain float64/int64 arrays. It is read with ``allow_pickle=False``, so a
file can never execute code or build arbitrary objects, and any language
with a zip and an ``.npy`` reader can read it. Writes are atomic: the file is
written under a temporary name in the same directory, flushed to disk
(fsync), then renamed over the target, so a crash leaves any previous file
intact. Every read is checked, and whatever is wrong with a file —
truncated, corrupted, another kind of file, an unknown format version,
inconsistent shapes — raises :class:`~kronnet.errors.FileFormatError`
naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from . import _core
from .errors import ArgumentError, ArgumentTypeError, FileFormatError, KronnetError

#: The format name in ``kronnet.json``.
FORMAT = "kronnet"
#: The format version this kronnet writes. Version 3 added the trained head
#: (a, thresholds, bias, outputs), the linear term and the trainer's loss,
#: rates, ridges and schedule; version 2 pairwise blocks (``block_kinds``);
#: version 1 files (KronData blocks only) are still read.
VERSION = 3
#: The versions this kronnet reads.
READS = (1, 2, 3)
META = "kronnet.json"


def _meta_array(meta: Dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta, allow_nan=False).encode("utf-8"), dtype=np.uint8)


#: A float64 member written a row block at a time: (its shape, (rows, cols)
#: or (rows,), and the blocks in row order, each (k, cols) or (k, 1)).
Streamed = Tuple[Tuple[int, ...], Iterable[np.ndarray]]


def _write_members(fh: Any, arrays: Dict[str, np.ndarray], streamed: Dict[str, Streamed]) -> None:
    """The archive np.savez writes (uncompressed zip, one ``.npy`` per
    member), with the `streamed` members written as their row blocks arrive,
    so that no more than one block of them is ever in memory."""
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(arr), allow_pickle=False)
        for name, (shape, blocks) in streamed.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as out:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)), "fortran_order": False}
                np.lib.format.write_array_header_1_0(out, {**header, "shape": tuple(shape)})
                rows = 0
                # A vector travels as one-column row blocks.
                cols = shape[1] if len(shape) == 2 else 1
                for block in blocks:
                    block = np.ascontiguousarray(block, dtype=np.float64)
                    if block.ndim != 2 or block.shape[1] != cols:
                        raise ValueError(f"{name}: a row block of shape {block.shape} for an array of shape {shape}")
                    out.write(block.data.cast("B"))
                    rows += block.shape[0]
                if rows != shape[0] and cols != 0:
                    raise ValueError(f"{name}: {rows} rows written for an array of shape {shape}")


def checked_path(path: Any) -> str:
    """`path` as a str (any os.PathLike), or ArgumentTypeError."""
    try:
        out = os.fspath(path)
    except TypeError:
        out = None
    if not isinstance(out, str):
        raise ArgumentTypeError("path", f"expected a str or os.PathLike path, got {type(path).__name__}")
    return out


def write(
    path: Any,
    kind: str,
    meta: Dict[str, Any],
    arrays: Dict[str, np.ndarray],
    streamed: Optional[Dict[str, Streamed]] = None,
) -> None:
    """Writes one file atomically: temporary file, fsync, rename. `streamed`
    members (float64, 2-D) are written row block by row block as their
    iterables yield them."""
    path = checked_path(path)
    doc = {"format": FORMAT, "version": VERSION, "kind": kind, "kronnet_version": _core.__version__, **meta}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".kronnet-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_members(fh, {META: _meta_array(doc), **arrays}, streamed or {})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # The rename itself is durable only once the directory is synced.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class Reader:
    """A kronnet file opened for checked reads of its members."""

    def __init__(self, path: Any) -> None:
        self.path = os.fspath(path)
        try:
            archive = np.load(self.path, allow_pickle=False)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a format error
            raise FileFormatError(self.path, f"is not a kronnet file ({type(exc).__name__}: {exc})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise FileFormatError(self.path, "is a single .npy array, not a kronnet file")
        self._archive = archive
        # Reading a member does not always verify its CRC-32 (numpy stops at
        # the array's last byte), so every member is checked up front: a
        # flipped byte anywhere must not load as a silently different number.
        try:
            damaged = archive.zip.testzip() if archive.zip is not None else None
        except Exception as exc:  # noqa: BLE001 - a damaged zip raises many types
            self.close()
            raise FileFormatError(self.path, f"is damaged ({type(exc).__name__}: {exc})") from None
        if damaged is not None:
            self.close()
            raise FileFormatError(self.path, f"member {damaged!r} is corrupted (CRC-32 mismatch)")
        self.names = set(archive.files)
        if META not in self.names:
            self.close()
            raise FileFormatError(self.path, f"is a zip archive without {META}: not a kronnet file")
        raw = self.array(META, np.uint8, 1)
        assert raw is not None
        try:
            doc = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.close()
            raise FileFormatError(self.path, f"{META} is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            self.close()
            raise FileFormatError(self.path, f"{META} does not describe a kronnet file")
        version = doc.get("version")
        if version not in READS or isinstance(version, bool):
            self.close()
            raise FileFormatError(
                self.path,
                f"has format version {version!r}; this kronnet ({_core.__version__}) reads versions "
                f"{', '.join(map(str, READS))}",
            )
        self.meta = doc

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def fail(self, problem: str) -> FileFormatError:
        return FileFormatError(self.path, problem)

    def field(self, doc: Dict[str, Any], key: str, kind: Any, where: str = META) -> Any:
        """doc[key], checked to be of type `kind`."""
        if key not in doc:
            raise self.fail(f"{where} has no {key!r}")
        value = doc[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if not ok:
            raise self.fail(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
        return value

    def array(
        self, name: str, dtype: Any, ndim: Union[int, Tuple[int, ...]], optional: bool = False
    ) -> Optional[np.ndarray]:
        """Member `name`, checked for dtype and rank; CRC errors and
        truncation surface here."""
        if name not in self.names:
            if optional:
                return None
            raise self.fail(f"member {name!r} is missing")
        try:
            arr = self._archive[name]
        except Exception as exc:  # noqa: BLE001 - corruption shows up as many exception types
            raise self.fail(f"member {name!r} cannot be read ({type(exc).__name__}: {exc})") from None
        ranks = (ndim,) if isinstance(ndim, int) else ndim
        if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(dtype) or arr.ndim not in ranks:
            got = f"{getattr(arr, 'dtype', type(arr).__name__)} with {getattr(arr, 'ndim', '?')} dims"
            want = " or ".join(f"{k}-D" for k in ranks)
            raise self.fail(f"member {name!r} should be a {want} {np.dtype(dtype)} array, got {got}")
        return arr

    def mapped(self, name: str, dtype: Any, ndim: int) -> np.ndarray:
        """Member `name` (a required array) mapped read-only from the file
        instead of read: only the parts that are used are read, so a rank of
        a sharded restore touches its own neurons' rows, not the whole
        matrix. The archive's members are stored uncompressed, so a member's
        ``.npy`` data is one byte range of the file; its CRC-32 was checked
        when the file was opened. Any other member is read as by `array`."""
        zf = self._archive.zip
        member = name + ".npy"
        info = zf.getinfo(member) if zf is not None and member in zf.namelist() else None
        header = None
        if info is not None and info.compress_type == zipfile.ZIP_STORED:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(info.header_offset)
                    local = fh.read(30)
                    if len(local) != 30 or local[:4] != b"PK\x03\x04":
                        raise ValueError("no local file header")
                    skip = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
                    fh.seek(info.header_offset + 30 + skip)
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        header = (*np.lib.format.read_array_header_1_0(fh), fh.tell())
                    elif version == (2, 0):
                        header = (*np.lib.format.read_array_header_2_0(fh), fh.tell())
            except Exception as exc:  # noqa: BLE001 - a damaged header raises many types
                raise self.fail(f"member {name!r} cannot be read ({type(exc).__name__}: {exc})") from None
        if header is None:
            arr = self.array(name, dtype, ndim)
            assert arr is not None
            return arr
        shape, fortran, got_dtype, offset = header
        if got_dtype != np.dtype(dtype) or len(shape) != ndim:
            raise self.fail(f"member {name!r} should be a {ndim}-D {np.dtype(dtype)} array, got {got_dtype}")
        if 0 in shape:
            return np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
        return np.memmap(
            self.path, dtype=got_dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
        )


def build(r: Reader, make: Any) -> Any:
    """Runs a constructor on file contents, turning any refusal into a
    FileFormatError that names the file."""
    try:
        return make()
    except (ArgumentError, ArgumentTypeError, KronnetError, ValueError, TypeError) as exc:
        if isinstance(exc, FileFormatError):
            raise
        raise r.fail(f"inconsistent contents: {exc}") from None
