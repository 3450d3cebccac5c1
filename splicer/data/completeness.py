"""Is a file whole? Format-level completeness checks for upstream files that have no published checksum.

An approximate size is no checksum, and many upstream files (WILDS' Camelyon17 archive, MMEarth, Orion-CRC)
have no digest at all. What can still be proven is that the file is *complete*: the download delivered the
``Content-Length`` the server announced (:mod:`splicer.data.download`), and the file reads to its end by its own
format. :func:`check_complete` does the second part, by file name:

* ``.tar.gz`` / ``.tgz``: the whole gzip stream is decompressed (gzip's CRC-32 and length trailer are checked)
  and the tar index is walked to its end-of-archive marker;
* ``.gz``: the whole gzip stream (CRC-32 and length); an ``*-idx?-ubyte`` file (MNIST, uncompressed): its idx
  header's dimensions times the item size equal the file size;
* ``.zip`` / ``.npz``: the central directory (at the end of the file) and every member's CRC-32;
* ``.h5`` / ``.hdf5``: the end-of-file address HDF5 records in its superblock is not past the file's end;
* ``.json``: parses; ``.csv``: ends with a newline and its last row has the header's field count;
* ``.tif`` / ``.tiff``: every image file directory reads, and every strip or tile lies inside the file.

Anything else gets no format check (the transfer length is then the only evidence), and the returned text says so.
A file that fails raises :class:`IncompleteFileError` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

__all__ = ["IncompleteFileError", "check_complete", "file_format"]

_CHUNK = 1 << 22
_IDX = re.compile(r".*-idx(\d)-ubyte$")
_IDX_ITEM = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # idx type code -> bytes per item
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class IncompleteFileError(ValueError):
    """A file is not whole by its own format (truncated, or its index is damaged)."""

    def __init__(self, path: Path, what: str, problem: str) -> None:
        self.path, self.what, self.problem = Path(path), what, problem
        super().__init__(f"{path}: not a complete {what}: {problem}")


def file_format(name: str) -> str | None:
    """The format :func:`check_complete` reads ``name`` as (``"tar.gz"``, ``"zip"``, ...), or None."""
    lower = name.lower()
    for suffix, fmt in (
        (".tar.gz", "tar.gz"),
        (".tgz", "tar.gz"),
        (".gz", "gzip"),
        (".zip", "zip"),
        (".npz", "zip"),
        (".h5", "hdf5"),
        (".hdf5", "hdf5"),
        (".json", "json"),
        (".csv", "csv"),
        (".tif", "tiff"),
        (".tiff", "tiff"),
    ):
        if lower.endswith(suffix):
            return fmt
    return "idx" if _IDX.fullmatch(lower) else None


def check_complete(path: str | Path, name: str | None = None) -> str:
    """Raise :class:`IncompleteFileError` unless ``path`` reads to its end by the format its ``name`` (default: its
    file name) implies; return a sentence saying what was checked."""
    path = Path(path)
    fmt = file_format(name or path.name)
    if fmt is None:
        return "no format check for this file type"
    return _CHECKS[fmt](path)


# ------------------------------------------------------------------------------------------------------- gzip, tar
def _drain(stream: io.BufferedIOBase) -> int:
    total = 0
    while block := stream.read(_CHUNK):
        total += len(block)
    return total


def _gzip(path: Path) -> str:
    try:
        with gzip.open(path, "rb") as fh:
            n = _drain(fh)
    except (OSError, EOFError, zlib.error) as err:
        raise IncompleteFileError(path, "gzip file", f"{type(err).__name__}: {err}") from err
    return f"whole gzip stream read ({n} bytes uncompressed; CRC-32 and length trailer match)"


def _tar_gz(path: Path) -> str:
    members = 0
    try:
        with gzip.GzipFile(path, "rb") as gz:
            # stream mode reads every member's data in order; a cut-off stream raises EOFError (tarfile's own "r:gz"
            # would treat a truncated header as the end of the archive)
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for _ in tar:
                    members += 1
                    tar.members = []
            _drain(gz)  # the zero blocks after the end-of-archive marker, then gzip's CRC-32 and length
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise IncompleteFileError(path, "tar.gz archive", f"{type(err).__name__}: {err}") from err
    if members == 0:
        raise IncompleteFileError(path, "tar.gz archive", "holds no member")
    return f"whole gzip stream read (CRC-32 and length match) and the tar index walked to its end ({members} members)"


def _idx(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4)
        if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_ITEM:
            raise IncompleteFileError(path, "idx file", f"bad idx magic {head.hex()}")
        dims = fh.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise IncompleteFileError(path, "idx file", "header truncated")
    shape = struct.unpack(f">{head[3]}I", dims)
    expected = 4 + 4 * head[3] + _IDX_ITEM[head[2]] * _prod(shape)
    actual = path.stat().st_size
    if actual != expected:
        raise IncompleteFileError(path, "idx file", f"{actual} bytes, its header's dimensions {shape} need {expected}")
    return f"idx header dimensions {shape} match the file size ({actual} bytes)"


def _prod(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# ------------------------------------------------------------------------------------------------------------ zip
def _zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            n = len(zf.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as err:
        raise IncompleteFileError(path, "zip archive", f"{type(err).__name__}: {err}") from err
    if bad is not None:
        raise IncompleteFileError(path, "zip archive", f"member {bad!r} fails its CRC-32")
    return f"zip central directory read and all {n} members' CRC-32 match"


# ----------------------------------------------------------------------------------------------------------- HDF5
def _hdf5_eof(path: Path) -> tuple[int, int]:
    """(base address, end-of-file address) recorded in an HDF5 file's superblock (versions 0-3)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        base = 0
        while base < size:  # the superblock sits at 0, 512, 1024, 2048, ... (a user block may precede it)
            fh.seek(base)
            if fh.read(8) == _HDF5_SIGNATURE:
                break
            base = 512 if base == 0 else base * 2
        else:
            raise IncompleteFileError(path, "HDF5 file", "no HDF5 superblock signature")
        version = fh.read(1)[0]
        if version in (0, 1):
            fh.read(4)  # free-space, root group, reserved, shared header versions
            offsets = fh.read(1)[0]
            fh.read(1 + 1 + 2 + 2 + 4 + (4 if version == 1 else 0))  # lengths, reserved, K values, flags, [K, reserved]
            addresses = fh.read(4 * offsets)  # base, free-space info, end of file, driver info
            eof_index = 2
        elif version in (2, 3):
            offsets = fh.read(1)[0]
            fh.read(1 + 1)  # size of lengths, consistency flags
            addresses = fh.read(4 * offsets)  # base, superblock extension, end of file, root object header
            eof_index = 2
        else:
            raise IncompleteFileError(path, "HDF5 file", f"unknown superblock version {version}")
    if offsets not in (2, 4, 8) or len(addresses) < 4 * offsets:
        raise IncompleteFileError(path, "HDF5 file", "superblock truncated")
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[offsets]
    base_address = struct.unpack_from(fmt, addresses, 0)[0]
    eof = struct.unpack_from(fmt, addresses, eof_index * offsets)[0]
    return base_address, eof


def _hdf5(path: Path) -> str:
    _, eof = _hdf5_eof(path)  # the end-of-file address counts from byte 0 of the file (user block included)
    size = path.stat().st_size
    if eof > size:
        raise IncompleteFileError(
            path, "HDF5 file", f"its superblock records an end of file at byte {eof}, the file has {size} bytes"
        )
    return f"HDF5 superblock's end-of-file address ({eof}) within the file ({size} bytes)"


# ------------------------------------------------------------------------------------------------------ json, csv
def _json(path: Path) -> str:
    try:
        json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IncompleteFileError(path, "JSON file", str(err)) from err
    return "whole JSON document parsed"


def _csv(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.readline()
        fh.seek(max(0, size - (1 << 16)))
        tail = fh.read()
    if not header:
        raise IncompleteFileError(path, "CSV file", "is empty")
    if not tail.endswith(b"\n"):
        raise IncompleteFileError(path, "CSV file", "does not end with a line break (cut off mid-row)")
    last = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    try:
        fields = len(next(csv.reader([header.decode("utf-8-sig")])))
        last_fields = len(next(csv.reader([last.decode("utf-8")])))
    except (UnicodeDecodeError, csv.Error, StopIteration) as err:
        raise IncompleteFileError(path, "CSV file", f"unreadable header or last row: {err}") from err
    if last_fields != fields:
        raise IncompleteFileError(path, "CSV file", f"its last row has {last_fields} fields, the header {fields}")
    return f"CSV ends with a whole row ({fields} fields, as the header)"


# ----------------------------------------------------------------------------------------------------------- TIFF
class _Errors(logging.Handler):
    """Collects the errors tifffile logs (it logs, rather than raises, a tag it cannot read)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _tiff(path: Path) -> str:
    import tifffile

    size = path.stat().st_size
    pages = 0
    errors = _Errors()
    logger = logging.getLogger("tifffile")
    logger.addHandler(errors)
    try:
        with tifffile.TiffFile(path) as tif:
            todo = list(tif.pages)
            for series in tif.series:
                for level in series.levels:
                    todo.extend(level.pages)
            seen = set()
            for page in todo:
                if page is None or page.offset in seen:
                    continue
                seen.add(page.offset)
                pages += 1
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
                ends += [t.valueoffset + t.valuebytecount for t in page.tags.values()]
                if ends and max(ends) > size:
                    raise IncompleteFileError(
                        path, "TIFF file", f"the IFD at byte {page.offset} points to byte {max(ends)}, past {size}"
                    )
    except IncompleteFileError:
        raise
    except Exception as err:  # any tifffile failure to read an IFD of this file
        raise IncompleteFileError(path, "TIFF file", f"{type(err).__name__}: {err}") from err
    finally:
        logger.removeHandler(errors)
    if errors.messages:
        raise IncompleteFileError(path, "TIFF file", errors.messages[0])
    if pages == 0:
        raise IncompleteFileError(path, "TIFF file", "holds no image")
    return f"every TIFF image file directory read ({pages}), its tags, strips and tiles inside the file"


_CHECKS = {
    "tar.gz": _tar_gz,
    "gzip": _gzip,
    "idx": _idx,
    "zip": _zip,
    "hdf5": _hdf5,
    "json": _json,
    "csv": _csv,
    "tiff": _tiff,
}
