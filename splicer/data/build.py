"""Build the datasets of one ``datasets`` config entry into a folder, with a manifest written last.

``manifest.json`` lists the dataset directories the folder holds (``{"datasets": [...], "kind": ...}``); the
pipeline treats it as the marker that the whole folder is complete, so an interrupted build is never used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from splicer.fileio import write_json

__all__ = ["build_data", "write_manifest"]


def write_manifest(folder: str | Path, info: Mapping) -> Path:
    """List the dataset directories of ``folder`` (those with a meta.json) in ``folder/manifest.json``."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if (p / "meta.json").is_file())
    if not names:
        raise ValueError(f"{folder} holds no dataset (no */meta.json) after the build")
    return write_json(folder / "manifest.json", {**info, "datasets": names})


def build_data(spec: Mapping, out_dir: str | Path, archives: list[str | Path] | Mapping[str, Path] = ()) -> Path:
    """Build one ``datasets`` entry: a demo family from its seed, or a real dataset from its archives (paths, or
    ``{archive name: path}`` where an archive is read in place under another name)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = spec["kind"]
    if kind == "demo":
        from splicer.data.demo import make_demo

        make_demo(spec["family"], out, seed=int(spec.get("seed", 0)), **dict(spec.get("params", {})))
        return write_manifest(out, {"kind": "demo", "family": spec["family"], "seed": spec.get("seed", 0)})
    from splicer.data.real import builder, dataset_names
    from splicer.data.real.common import Caps

    if isinstance(archives, Mapping):
        files = {name: Path(p) for name, p in archives.items()}
    else:
        files = {Path(a).name: Path(a) for a in archives}
    caps = Caps.from_spec(spec)
    seed = int(spec.get("seed", 0))
    params = dict(spec.get("params", {}))
    builder(kind)(out, files, params, caps, seed)
    written = sorted(p.name for p in out.iterdir() if (p / "meta.json").is_file())
    if missing := sorted(set(dataset_names(kind, params)) - set(written)):
        raise RuntimeError(f"the {kind} builder did not write dataset(s) {missing} in {out} (wrote {written})")
    info = {"kind": kind, "seed": seed, "params": params, "caps": caps.limits, "archives": sorted(files)}
    return write_manifest(out, info)
