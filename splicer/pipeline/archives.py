"""The download rule's verification records (``resources/<kind>/.verified/<file>.json``) and archive options."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "VERIFIED",
    "archive_fields",
    "archive_files",
    "archive_of",
    "archive_options",
    "archive_targets",
    "archives_present",
]

VERIFIED = ".verified"
"""Folder (inside ``resources/<kind>/``) of the download rule's outputs: one small JSON per verified archive.

The archives themselves are never Snakemake outputs, so Snakemake never deletes them (it removes a job's old
outputs before rerunning it, e.g. after a code change): rerunning a download only re-verifies the file."""


def archive_targets(config: Mapping, data: str) -> list[str]:
    """Verification records (``resources/<kind>/.verified/<file>.json``) of the raw archives a real dataset is
    built from; none for demo or folder data. :func:`archive_of` gives each record's archive."""
    spec = config["datasets"][data]
    if spec["kind"] == "demo":
        return []
    from splicer.data.sources import archives

    found = archives(spec["kind"], **spec.get("source", {}))
    return [f"resources/{spec['kind']}/{VERIFIED}/{a.name}.json" for a in found]


def archive_of(record: str | Path) -> Path:
    """The archive of a verification record: ``resources/<kind>/.verified/<f>.json`` -> ``resources/<kind>/<f>``."""
    record = Path(record)
    if record.parent.name != VERIFIED or record.suffix != ".json":
        raise ValueError(f"{record} is not a verification record (resources/<kind>/{VERIFIED}/<file>.json)")
    return record.parent.parent / record.name[: -len(".json")]


def _recorded_path(record: str | Path) -> Path:
    """Where the record says its archive is (``path``: in a ``subdirs`` folder, or read in place from
    ``source.path``), else ``resources/<kind>/<file>``."""
    try:
        recorded = json.loads(Path(record).read_text()).get("path")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return Path(recorded) if recorded else archive_of(record)


def archives_present(records: Iterable[str | Path]) -> list[Path]:
    """The archives of ``records`` (files, or folders read in place); an archive deleted since it was verified gets
    its record removed (so the next run fetches or re-verifies it) and a FileNotFoundError that says so."""
    paths, missing = [], []
    for record in records:
        path = _recorded_path(record)
        if not path.exists():
            Path(record).unlink(missing_ok=True)
            missing.append(path)
        paths.append(path)
    if missing:
        where = ", ".join(str(p.resolve()) for p in missing)
        raise FileNotFoundError(
            f"archive(s) verified earlier are gone: {where}. Their verification records were "
            "removed: run again to download them (or, offline, put them back at that path)."
        )
    return paths


def archive_files(records: Iterable[str | Path]) -> dict[str, Path]:
    """``{archive name: where it is}`` for the builders (:func:`archives_present`, keyed by the records' names: an
    archive read in place from ``source.path`` may be a file or folder of another name)."""
    records = list(records)
    return {archive_of(r).name: path for r, path in zip(records, archives_present(records), strict=True)}


def archive_options(config: Mapping, kind: str, file: str) -> dict:
    """The ``source`` options (mirror, checksums, slides, size) under which archive ``file`` of ``kind`` is fetched:
    those of the ``datasets`` entries built from it, which must agree on its mirror and pinned checksum (else
    ValueError naming the entries); empty when no entry uses it (the file is then looked up among all variants)."""
    from splicer.data.sources import archives

    chosen: dict | None = None
    seen: dict[tuple, str] = {}
    for name, spec in config["datasets"].items():
        if spec["kind"] != kind:
            continue
        source = dict(spec.get("source", {}))
        if not any(a.name == file for a in archives(kind, **source)):
            continue
        key = (source.get("mirror"), dict(source.get("checksums") or {}).get(file), source.get("path"))
        seen.setdefault(key, name)
        if len(seen) > 1:
            a, b = seen.values()
            raise ValueError(
                f"datasets entries {a!r} and {b!r} both use {kind} archive {file!r} but with a "
                "different source.mirror, source.checksums or source.path for it; make them agree"
            )
        chosen = chosen if chosen is not None else source
    return chosen or {}


def archive_fields(config: Mapping, kind: str, file: str) -> dict:
    """The :class:`~splicer.data.sources.Archive` the download rule fetches or verifies for ``file`` of ``kind``, as
    plain fields (a rule param): resolved here, so the download job needs neither medmnist nor the builders."""
    from splicer.data.sources import find_archive

    archive = find_archive(kind, file, **archive_options(config, kind, file))
    return {f.name: getattr(archive, f.name) for f in dataclasses.fields(archive)}
