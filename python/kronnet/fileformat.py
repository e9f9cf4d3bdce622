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
written under a temporary name in the target's directory, flushed to disk
(fsync), then renamed over the target, so a crash leaves any previous file
intact. Otherwise a write behaves as ``open(path, "w")`` would: a new file
gets the mode ``0o666`` less the umask, a replaced file keeps its mode, and
a symbolic link is followed (its target is replaced, the link stays). Every
read is checked, and whatever is wrong with a file — truncated, corrupted,
another kind of file, an unknown format version, inconsistent shapes —
raises :class:`~kronnet.errors.FileFormatError` naming the file and the
problem.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import secrets
import stat
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
#: How deeply ``kronnet.json`` may nest arrays and objects. Real files nest
#: four or five levels (the sampler's generator state is the deepest); the
#: bound keeps a hostile header from exhausting the recursion limit of
#: whatever walks the document later.
MAX_JSON_DEPTH = 32
#: How a zip archive starts: a local file header, or the end record of an
#: empty archive (what ``np.load`` also accepts).
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _meta_array(meta: Dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta, allow_nan=False).encode("utf-8"), dtype=np.uint8)


#: A member written a row block at a time: (its shape, (rows, cols) or
#: (rows,), and the blocks in row order, each (k, cols) or (k, 1)). Its
#: dtype is its first block's, float32 or float64 (float64 without blocks).
Streamed = Tuple[Tuple[int, ...], Iterable[np.ndarray]]
#: The dtypes a streamed member may have (a float32 trainer's P is float32).
STREAMED_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def _write_members(fh: Any, arrays: Dict[str, np.ndarray], streamed: Dict[str, Streamed]) -> None:
    """The archive np.savez writes (uncompressed zip, one ``.npy`` per
    member), with the `streamed` members written as their row blocks arrive,
    so that no more than one block of them is ever in memory."""
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(arr), allow_pickle=False)
        for name, (shape, blocks) in streamed.items():
            # The header needs the dtype before any row: the first block says it.
            queue = iter(blocks)
            first = next(queue, None)
            dtype = np.dtype(np.float64) if first is None else np.asarray(first).dtype
            if dtype not in STREAMED_DTYPES:
                dtype = np.dtype(np.float64)
            queue = itertools.chain([] if first is None else [first], queue)
            with zf.open(name + ".npy", mode="w", force_zip64=True) as out:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
                np.lib.format.write_array_header_1_0(out, {**header, "shape": tuple(shape)})
                rows = 0
                # A vector travels as one-column row blocks.
                cols = shape[1] if len(shape) == 2 else 1
                for block in queue:
                    block = np.ascontiguousarray(block, dtype=dtype)
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


def _target(path: str) -> Tuple[str, Optional[os.stat_result]]:
    """Where a write to `path` lands and the status of the file it replaces
    (None when there is none yet), refusing what ``open(path, "w")`` would
    refuse or what renaming over would damage; errors name `path`."""
    # Writing through a link writes its target, as open() does; renaming
    # over the link itself would turn it into a regular file.
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        # A new file (or a dangling link's target, which open() creates);
        # a missing directory is reported when the temporary file is made.
        return target, None
    except OSError as exc:
        # A cycle of links, a file where a directory should be...
        raise type(exc)(exc.errno, exc.strerror, path) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{os.strerror(errno.EISDIR)} (a kronnet file cannot replace it)", path)
    if not stat.S_ISREG(st.st_mode):
        # Renaming over a device or a pipe would replace it (/dev/null
        # included, when run as root) instead of writing to it.
        raise ArgumentError("path", f"{path} is not a regular file; kronnet saves to regular files only")
    if not os.access(target, os.W_OK):
        # The rename needs only a writable directory; a file its owner made
        # read-only must stay as protected as open(path, "w") leaves it.
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return target, st


def _create_temporary(directory: str, old: Optional[os.stat_result], path: str) -> Tuple[int, str]:
    """A new file in `directory` opened for writing: (descriptor, name).
    Its mode is 0o666 less the umask, or no more than that of `old`, the
    file it will replace, so that it is never readable by more users than
    the file it will become."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    # The kernel applies the umask, as it does for open(path, "w"):
    # reading the umask would mean setting it, which races other threads.
    create = 0o666 if old is None else stat.S_IMODE(old.st_mode) & 0o777
    for _ in range(100):
        tmp = os.path.join(directory, f".kronnet-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, create), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise type(exc)(
                exc.errno, f"{exc.strerror} (creating a temporary file in {directory} to save atomically)", path
            ) from None
    raise FileExistsError(errno.EEXIST, f"no unused temporary file name in {directory}", path)


def _adopt(fd: int, tmp: str, old: os.stat_result) -> None:
    """Gives the new file the mode and, where allowed, the owner of `old`,
    the file it replaces, as writing into that file would have kept them."""
    new = os.fstat(fd)
    if hasattr(os, "fchown") and (old.st_uid, old.st_gid) != (new.st_uid, new.st_gid):
        try:
            # Before the chmod: a chown may clear the set-id bits.
            os.fchown(fd, old.st_uid, old.st_gid)
        except OSError:
            # Only root may give a file away: the writer owns it then.
            pass
    try:
        # The umask may have narrowed the mode it was created with.
        if hasattr(os, "fchmod"):
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
        else:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
    except OSError:
        # Some file systems (FAT, some network shares) have no modes: the
        # file then has what they give, as after open(path, "w").
        pass


def write(
    path: Any,
    kind: str,
    meta: Dict[str, Any],
    arrays: Dict[str, np.ndarray],
    streamed: Optional[Dict[str, Streamed]] = None,
) -> None:
    """Writes one file atomically: temporary file, fsync, rename. `streamed`
    members (float64, 2-D) are written row block by row block as their
    iterables yield them. A symbolic link is written through; errors about
    the destination name `path`, never the temporary file."""
    path = checked_path(path)
    doc = {"format": FORMAT, "version": VERSION, "kind": kind, "kronnet_version": _core.__version__, **meta}
    target, old = _target(path)
    # In the target's directory: a rename is atomic only within one file
    # system, and the link's directory may be on another.
    directory = os.path.dirname(target)
    fd, tmp = _create_temporary(directory, old, path)
    try:
        with os.fdopen(fd, "wb") as fh:
            if old is not None:
                _adopt(fh.fileno(), tmp, old)
            _write_members(fh, {META: _meta_array(doc), **arrays}, streamed or {})
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            # A directory made at `target` since it was checked, say.
            raise type(exc)(exc.errno, exc.strerror, path) from None
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


def _nesting(doc: Any) -> int:
    """How deeply `doc` nests lists and dicts, counted without recursion
    and no further than one level past MAX_JSON_DEPTH."""
    deepest = 0
    todo = [(doc, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            todo.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


class Reader:
    """A kronnet file opened for checked reads of its members."""

    def __init__(self, path: Any) -> None:
        self.path = os.fspath(path)
        # A missing file, a directory or no permission raise as open() does.
        self._file = open(self.path, "rb")
        try:
            # Sniffed before numpy sees it: np.load takes anything else for
            # a pickle and advises allow_pickle=True, the one thing never to
            # do with a file that is not what it claims.
            magic = self._file.read(len(np.lib.format.MAGIC_PREFIX))
            if magic == np.lib.format.MAGIC_PREFIX:
                raise FileFormatError(self.path, "is a single .npy array, not a kronnet file")
            if not magic.startswith(_ZIP_MAGIC):
                what = "the file is empty" if not magic else "not a zip archive"
                raise FileFormatError(self.path, f"is not a kronnet file ({what})")
            self._file.seek(0)
            archive = np.load(self._file, allow_pickle=False)
        except FileFormatError:
            self._file.close()
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a format error
            self._file.close()
            raise FileFormatError(self.path, f"is not a kronnet file ({type(exc).__name__}: {exc})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            self._file.close()
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
        except RecursionError:
            self.close()
            raise FileFormatError(self.path, f"{META} nests arrays or objects too deeply") from None
        except ValueError as exc:
            # Bad UTF-8, bad JSON, or an integer too long to convert.
            self.close()
            raise FileFormatError(self.path, f"{META} is not valid JSON ({exc})") from None
        if _nesting(doc) > MAX_JSON_DEPTH:
            self.close()
            raise FileFormatError(
                self.path, f"{META} nests arrays or objects too deeply (more than {MAX_JSON_DEPTH} levels)"
            )
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
        # The archive reads through this file but does not own it.
        self._file.close()

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
        """Member `name`, checked for dtype (one, or a tuple of those
        allowed) and rank; CRC errors and truncation surface here."""
        if name not in self.names:
            if optional:
                return None
            raise self.fail(f"member {name!r} is missing")
        try:
            arr = self._archive[name]
        except Exception as exc:  # noqa: BLE001 - corruption shows up as many exception types
            raise self.fail(f"member {name!r} cannot be read ({type(exc).__name__}: {exc})") from None
        ranks = (ndim,) if isinstance(ndim, int) else ndim
        allowed = _dtypes(dtype)
        if not isinstance(arr, np.ndarray) or arr.dtype not in allowed or arr.ndim not in ranks:
            got = f"{getattr(arr, 'dtype', type(arr).__name__)} with {getattr(arr, 'ndim', '?')} dims"
            want = " or ".join(f"{k}-D" for k in ranks)
            raise self.fail(f"member {name!r} should be a {want} {_names(allowed)} array, got {got}")
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
        allowed = _dtypes(dtype)
        if got_dtype not in allowed or len(shape) != ndim:
            raise self.fail(f"member {name!r} should be a {ndim}-D {_names(allowed)} array, got {got_dtype}")
        if 0 in shape:
            return np.zeros(shape, dtype=got_dtype, order="F" if fortran else "C")
        return np.memmap(
            self.path, dtype=got_dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
        )


def _dtypes(dtype: Any) -> Tuple[np.dtype, ...]:
    """The dtypes `dtype` allows: itself, or each of a tuple."""
    return tuple(np.dtype(d) for d in dtype) if isinstance(dtype, tuple) else (np.dtype(dtype),)


def _names(dtypes: Tuple[np.dtype, ...]) -> str:
    return " or ".join(str(d) for d in dtypes)


def build(r: Reader, make: Any) -> Any:
    """Runs a constructor on file contents, turning any refusal into a
    FileFormatError that names the file."""
    try:
        return make()
    except (ArgumentError, ArgumentTypeError, KronnetError, ValueError, TypeError) as exc:
        if isinstance(exc, FileFormatError):
            raise
        raise r.fail(f"inconsistent contents: {exc}") from None
