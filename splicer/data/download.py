"""Fetch upstream archives: resumable, retried, checksum-verified, atomically placed; with an offline mode.

:func:`fetch` puts one :class:`~splicer.data.sources.Archive` at ``dest_dir/archive.name``:

* an existing file is verified and returned: its published checksum (and exact size), or, where upstream publishes
  no digest, its completeness (:mod:`splicer.data.completeness`: it reads to its end by its own format; an
  approximate upstream size is never checked); a mismatch moves it aside to ``<name>.corrupt`` (never read again)
  and raises :class:`ChecksumError`. The file is looked for at ``dest_dir/<name>``, then in the archive's
  ``subdirs`` (``dest_dir/data_100k_v001/<name>`` for MMEarth), and used where it is;
* an archive with ``local`` set (``source.path``: an extracted upstream file or folder) is verified in place (the
  digests that apply to it, else completeness; a folder's ``contents``) and never downloaded or copied;
* offline (``offline=True`` or ``SPLICER_OFFLINE=1``) a missing file raises :class:`MissingArchiveError`, which says
  what to fetch, from where, and the full path to put it at;
* otherwise it downloads to ``<name>.part``, resuming an existing ``.part`` with ``Range: bytes=<size>-`` (a server
  answering 200 instead of 206 restarts it from zero), retrying network errors and short reads with exponential
  backoff, verifies the finished file and only then ``os.replace``-s it into place. A download that fails
  verification is deleted and fetched once more from scratch before :class:`ChecksumError` is raised. A transfer
  shorter than its ``Content-Length`` is retried (resumed), never accepted.

CLI: ``python -m splicer.data.download KIND DEST [--offline] [--slides ...] [--size N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from splicer.data import sources
from splicer.data.completeness import IncompleteFileError, check_complete
from splicer.data.sources import Archive
from splicer.fileio import write_json

__all__ = [
    "OFFLINE_ENV",
    "ChecksumError",
    "DownloadError",
    "MissingArchiveError",
    "fetch",
    "fetch_all",
    "fetch_verified",
    "file_digest",
    "is_offline",
    "main",
    "verify",
]

log = logging.getLogger(__name__)

OFFLINE_ENV = "SPLICER_OFFLINE"
USER_AGENT = "splicer-download/0.1 (+https://github.com; python-urllib)"
_MAX_BACKOFF = 60.0
_PROGRESS_EVERY_S = 10.0
# Network failures worth retrying (HTTP status errors are sorted separately: only 408/429/5xx are retried).
_TRANSIENT = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException, ssl.SSLError)


class DownloadError(RuntimeError):
    """A download failed for good (HTTP error, or retries exhausted)."""


class _ShortRead(DownloadError):
    """The connection ended before the announced number of bytes arrived (retried)."""


class ChecksumError(ValueError):
    """A file's digest (or size) is not the published one."""

    def __init__(self, path: Path, algo: str, expected: str, actual: str, detail: str = "") -> None:
        self.path, self.algo, self.expected, self.actual = Path(path), algo, expected, actual
        super().__init__(f"{algo} mismatch for {self.path}: expected {expected}, got {actual}{detail}")


class MissingArchiveError(FileNotFoundError):
    """Offline mode and the archive is not on disk; the message says what to fetch and where to put it."""

    def __init__(self, archive: Archive, path: Path, message: str | None = None) -> None:
        self.archive, self.path = archive, Path(path)
        if message is not None:
            super().__init__(message)
            return
        partial = self.path.with_name(self.path.name + ".part")
        lines = [
            f"archive {archive.name!r} is missing and downloads are off (offline=True or {OFFLINE_ENV}=1).",
            f"  what:       {archive.note or archive.name}",
            f"  fetch from: {archive.url}",
            f"  put it at:  {self.path.resolve()}",
            *(f"  or at:      {(self.path.parent / sub / archive.name).resolve()}" for sub in archive.subdirs),
            f"  expected:   {archive.describe_checksum()}",
        ]
        if partial.exists():
            lines.append(f"  (a partial download {partial} exists; rerun online to resume it)")
        super().__init__("\n".join(lines))


def is_offline(offline: bool = False) -> bool:
    """True if ``offline`` or the environment variable ``SPLICER_OFFLINE`` is set to a true value."""
    return offline or os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _digests(path: Path, algos: Iterable[str], chunk: int = 1 << 20) -> dict[str, str]:
    hashes = {a: hashlib.new(a, usedforsecurity=False) for a in algos}
    if hashes:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                for h in hashes.values():
                    h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def file_digest(path: str | os.PathLike[str], algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in ``chunk``-byte blocks (``algo``: any :mod:`hashlib` name, e.g. md5)."""
    return _digests(Path(path), [algo], chunk)[algo]


def verify(archive: Archive, path: str | os.PathLike[str], chunk: int = 1 << 20) -> list[str]:
    """Raise :class:`ChecksumError` unless ``path`` has the archive's published (exact) size and digests, or, where
    none is published, unless it is complete by its format; a folder (``source.path``) must hold its ``contents``.
    Returns what was verified, one sentence per check."""
    path = Path(path)
    if path.is_dir():
        return _verify_folder(archive, path, chunk)
    checks = []
    if archive.size is not None:
        if (actual := path.stat().st_size) != archive.size:
            raise ChecksumError(path, "size", f"{archive.size} bytes", f"{actual} bytes")
        checks.append(f"size {archive.size} bytes")
    expected = archive.checksums
    for algo, digest in _digests(path, expected, chunk).items():
        if digest != expected[algo]:
            raise ChecksumError(path, algo, expected[algo], digest)
        checks.append(f"{algo} {digest}")
    if not expected:  # no published digest: the file must at least be whole
        log.info("%s: no published checksum; checking that it is complete", path)
        try:
            name = archive.name if path.name in (archive.name, f"{archive.name}.part") else path.name  # in place
            checks.append(f"no published checksum; complete: {check_complete(path, name)}")
        except IncompleteFileError as err:
            raise ChecksumError(path, "completeness", f"a complete {err.what}", err.problem) from None
    return checks


def _verify_folder(archive: Archive, folder: Path, chunk: int) -> list[str]:
    """An extracted upstream folder standing in for ``archive``: each of its ``contents`` present, with the published
    digest where there is one, else complete by its format."""
    checks = []
    for rel, digest in archive.contents:
        item = folder / rel
        if not item.exists():
            raise ChecksumError(item, "contents", f"{rel} inside {folder}", "missing")
        if item.is_dir():
            checks.append(f"{rel}/ present")
            continue
        if digest is not None:
            algo, _, value = digest.partition(":")
            if (actual := _digests(item, [algo], chunk)[algo]) != value:
                raise ChecksumError(item, algo, value, actual)
            checks.append(f"{rel}: {algo} {value}")
        else:
            try:
                checks.append(f"{rel}: complete: {check_complete(item)}")
            except IncompleteFileError as err:
                raise ChecksumError(item, "completeness", f"a complete {err.what}", err.problem) from None
    return checks or [f"folder {folder} present"]


def _backoff_sleep(failures: int, backoff: float) -> None:
    delay = min(backoff * 2 ** (failures - 1), _MAX_BACKOFF)
    if delay > 0:
        time.sleep(delay)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) of a ``Content-Range: bytes a-b/total`` (or ``bytes */total``) header."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _transfer(url: str, part: Path, *, timeout: float, chunk: int, size: int | None) -> tuple[bool, int, int | None]:
    """One GET into ``part`` (appending from its size with a Range request); returns (resumed, bytes written, total
    length the server announced: Content-Length, or Content-Range's total when resuming; None if it gave none).

    Raises :class:`_ShortRead` when fewer bytes arrive than announced, and network/HTTP errors as raised.
    """
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        log.warning("%s is larger than the expected %d bytes; restarting from zero", part, size)
        part.unlink()
        have = 0
    if size is not None and have == size > 0:
        return False, 0, size  # already complete
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left past `have`: complete, or a stale .part
            _, total = _content_range(err.headers.get("Content-Range"))
            err.close()
            if total == have:
                return False, 0, total
            log.warning("server refused to resume %s at byte %d; restarting from zero", part.name, have)
            part.unlink()
            raise _ShortRead(f"range {have}- not satisfiable for {url}") from None
        raise
    with response:
        status = response.status
        if have and status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                log.warning("server resumed %s at byte %s instead of %d; restarting from zero", part.name, start, have)
                part.unlink()
                raise _ShortRead(f"bad Content-Range from {url}")
            mode, resumed = "ab", True
            log.info("resuming %s at byte %d", part.name, have)
        elif status == 200:
            if have:
                log.info("server ignored the Range request for %s (200); restarting from zero", part.name)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode, resumed, have = "wb", False, 0
        else:
            raise DownloadError(f"unexpected HTTP status {status} for {url}")
        written, last_log = 0, time.monotonic()
        with open(part, mode) as f:
            while block := response.read(chunk):
                f.write(block)
                written += len(block)
                if time.monotonic() - last_log >= _PROGRESS_EVERY_S:
                    last_log = time.monotonic()
                    done = have + written
                    pct = f" ({100 * done / total:.1f}%)" if total else ""
                    log.info("%s: %d / %s bytes%s", part.name, done, total or "?", pct)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and have + written < total:
        raise _ShortRead(f"connection closed after {have + written} of {total} bytes of {url}")
    return resumed, written, total


def _download(
    url: str, part: Path, *, retries: int, timeout: float, chunk: int, size: int | None, backoff: float
) -> int | None:
    """Fill ``part`` from ``url``, resuming and retrying transient failures (``retries`` times after the first);
    returns the total length the server announced (None if it announced none)."""
    errors: list[str] = []
    while True:
        try:
            return _transfer(url, part, timeout=timeout, chunk=chunk, size=size)[2]
        except urllib.error.HTTPError as err:
            if err.code not in (408, 429) and err.code < 500:  # cannot change on retry: not retried
                earlier = "".join(f"\n  attempt {i}: {e}" for i, e in enumerate(errors, 1))
                raise DownloadError(
                    f"HTTP {err.code} {err.reason} for {url}"
                    + (f" (after {len(errors)} failed attempt(s):{earlier})" if errors else "")
                ) from err
            error: Exception = err
        except (_ShortRead, *_TRANSIENT) as err:
            error = err
        errors.append(f"{type(error).__name__}: {error}")
        if len(errors) > retries:
            attempts = "".join(f"\n  attempt {i}: {e}" for i, e in enumerate(errors, 1))
            raise DownloadError(f"giving up on {url} after {len(errors)} attempts:{attempts}") from error
        log.warning("download of %s failed (%s); retry %d/%d", url, error, len(errors), retries)
        _backoff_sleep(len(errors), backoff)


def fetch(
    archive: Archive,
    dest_dir: str | os.PathLike[str],
    offline: bool = False,
    retries: int = 3,
    timeout: float = 60,
    chunk: int = 1 << 20,
    *,
    backoff: float = 1.0,
    details: dict | None = None,
) -> Path:
    """Ensure ``dest_dir/archive.name`` (or the archive's ``local`` file or folder, or a copy in one of its
    ``subdirs``) exists and is verified; download it unless offline. Returns its path. ``details``, if given, is
    filled with what was verified (``checks``) and, after a download, the announced length (``transfer``)."""
    details = details if details is not None else {}
    dest = Path(dest_dir)
    if archive.local is not None:
        return _verify_in_place(archive, Path(archive.local), chunk, details)
    path = dest / archive.name
    existing = next((p for p in (path, *(dest / s / archive.name for s in archive.subdirs)) if p.exists()), None)
    if existing is not None:
        try:
            details["checks"] = verify(archive, existing, chunk)
        except ChecksumError as err:
            bad = existing.with_name(existing.name + ".corrupt")
            os.replace(existing, bad)
            raise ChecksumError(existing, err.algo, err.expected, err.actual, f"; moved it aside to {bad}") from None
        details["transfer"] = "placed by hand (no transfer length to compare)" if existing != path else "in place"
        log.info("%s present and verified (%s)", existing, "; ".join(details["checks"]))
        return existing
    if is_offline(offline):
        raise MissingArchiveError(archive, path)

    dest.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    first = ""
    for attempt in (1, 2):
        log.info("downloading %s -> %s", archive.url, path)
        total = _download(
            archive.url, part, retries=retries, timeout=timeout, chunk=chunk, size=archive.size, backoff=backoff
        )
        got = part.stat().st_size
        details["transfer"] = (
            f"{got} bytes, as announced by the server" if total == got else f"{got} bytes (no length announced)"
        )
        try:
            details["checks"] = verify(archive, part, chunk)
        except ChecksumError as err:
            part.unlink(missing_ok=True)
            if attempt == 2:
                detail = f" (downloaded twice; the first download got {first})"
                raise ChecksumError(path, err.algo, err.expected, err.actual, detail) from err
            first = err.actual
            log.warning("%s; deleted it, downloading again from scratch", err)
            continue
        os.replace(part, path)
        log.info("saved %s (%d bytes, %s)", path, path.stat().st_size, "; ".join(details["checks"]))
        return path
    raise AssertionError("unreachable")


def _verify_in_place(archive: Archive, local: Path, chunk: int, details: dict) -> Path:
    """Verify an extracted upstream file or folder (``source.path``) where it is; nothing is moved or copied."""
    if not local.exists():
        raise MissingArchiveError(
            archive,
            local,
            f"{local} (source.path, standing in for {archive.name!r}) does not exist; "
            f"fix source.path or remove it to download {archive.url}",
        )
    try:
        details["checks"] = verify(archive, local, chunk)
    except ChecksumError as err:  # never moved aside: it is the user's own copy
        raise ChecksumError(err.path, err.algo, err.expected, err.actual, " (read in place from source.path)") from None
    details["transfer"] = "read in place from source.path (nothing downloaded or copied)"
    log.info("%s verified in place (%s)", local, "; ".join(details["checks"]))
    return local


def fetch_verified(archive: Archive, dest_dir: str | os.PathLike[str], record: str | os.PathLike[str], **kw) -> Path:
    """:func:`fetch` ``archive`` into ``dest_dir``, then write ``record``: a JSON of where it is (``path``, which
    the build reads) and what was verified (checksums, or completeness where none is published) -- the pipeline's
    sign that the archive is complete. Returns the archive's path."""
    details: dict = {}
    path = fetch(archive, dest_dir, details=details, **kw)
    info = {
        "name": archive.name,
        "url": archive.url,
        "path": str(path),
        "size": path.stat().st_size if path.is_file() else None,
        **archive.checksums,
        "verified": "; ".join(details.get("checks", [])) or archive.describe_checksum(),
        "transfer": details.get("transfer"),
    }
    write_json(record, info)
    return path


def fetch_all(archives: Iterable[Archive], dest_dir: str | os.PathLike[str], **kw) -> list[Path]:
    """:func:`fetch` every archive; tries them all, then raises (all missing ones at once when offline)."""
    paths, errors = [], []
    for archive in archives:
        try:
            paths.append(fetch(archive, dest_dir, **kw))
        except (ChecksumError, MissingArchiveError, DownloadError) as err:
            if not isinstance(err, MissingArchiveError):  # missing ones are reported together below
                log.error("%s", err)
            errors.append(err)
    if errors:
        missing = [e for e in errors if isinstance(e, MissingArchiveError)]
        if len(errors) > 1 and len(missing) == len(errors):
            text = f"{len(missing)} archives are missing:\n\n" + "\n\n".join(str(e) for e in missing)
            raise MissingArchiveError(missing[0].archive, missing[0].path, text)
        raise errors[0]
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: fetch (or, offline, verify) every archive of a dataset kind into DEST."""
    parser = argparse.ArgumentParser(prog="python -m splicer.data.download", description=main.__doc__)
    from splicer.registry import KINDS

    kinds = [k for k, entry in KINDS.items() if entry.archives]
    parser.add_argument("kind", help=f"dataset kind: {', '.join(kinds)}")
    parser.add_argument("dest", type=Path, help="directory the archives are stored in")
    parser.add_argument("--offline", action="store_true", help=f"never download (also: {OFFLINE_ENV}=1)")
    parser.add_argument("--slides", nargs="+", help="orion_crc: slide folders, e.g. CRC01 CRC02")
    parser.add_argument("--files", nargs="+", help=f"orion_crc: file types ({', '.join(sources.ORION_FILES)})")
    parser.add_argument("--size", type=int, help="MedMNIST image size (28, 64, 128, 224)")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--list", action="store_true", help="only list the archives (name, url, checksum)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    options = {k: getattr(args, k) for k in ("slides", "files", "size") if getattr(args, k) is not None}
    try:
        todo = sources.archives(args.kind, **options)
        if args.list:
            for a in todo:
                print(f"{a.name}\t{a.url}\t{a.describe_checksum()}")
            return 0
        paths = fetch_all(todo, args.dest, offline=args.offline, retries=args.retries, timeout=args.timeout)
    except (ValueError, ImportError, OSError, DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
