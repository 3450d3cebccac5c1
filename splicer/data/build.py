"""Build the datasets of one ``datasets`` config entry into a folder, with a manifest written last.

``manifest.json`` lists the dataset directories the folder holds (``{"datasets": [...], "kind": ...}``) and
records each array's size and sampled checksum (``arrays``, :func:`splicer.data.format.array_record`); the
pipeline treats it as the marker that the whole folder is complete, so an interrupted build is never used, and
every job that loads a dataset checks its arrays against that record (a file truncated or changed after the
build fails naming the rule to rerun).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from splicer.data.format import MANIFEST, array_records
from splicer.fileio import write_json

__all__ = ["build_data", "check_declared_layout", "write_manifest"]


def write_manifest(folder: str | Path, info: Mapping) -> Path:
    """List the dataset directories of ``folder`` (those with a meta.json) in ``folder/manifest.json``."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if (p / "meta.json").is_file())
    if not names:
        raise ValueError(f"{folder} holds no dataset (no */meta.json) after the build")
    return write_json(folder / MANIFEST, {**info, "datasets": names, "arrays": array_records(folder, names)})


def check_declared_layout(spec: Mapping, folder: str | Path) -> None:
    """What a build wrote against what its kind declared before it (``Kind.layout``, which the config checks
    trusted): channel names, mask names and image size of every dataset. A difference is a bug in the
    declaration, reported naming both, so a config that passed the checks cannot silently train on other data."""
    import numpy as np

    from splicer.registry import KINDS, resolve

    kind = KINDS[spec["kind"]]
    if not kind.layout:
        return
    folder = Path(folder)
    for name, declared in resolve(kind.layout)(spec).items():
        meta = json.loads((folder / name / "meta.json").read_text())
        shape = np.load(folder / name / "images.npy", mmap_mode="r").shape
        wrote = {"channels": tuple(meta["channel_names"]), "masks": tuple(meta["mask_names"]), "size": shape[2:]}
        if diff := [
            f"{key} {list(wrote[key])} (declared {list(value)})"
            for key, value in (("channels", declared.channels), ("masks", declared.masks), ("size", declared.size))
            if value is not None and tuple(value) != tuple(wrote[key])
        ]:
            raise RuntimeError(
                f"{folder / name}: the {spec['kind']!r} build wrote {'; '.join(diff)}: the layout {kind.layout} "
                "declares for the config checks is wrong (a bug: please report it)"
            )


def build_data(spec: Mapping, out_dir: str | Path, archives: list[str | Path] | Mapping[str, Path] = ()) -> Path:
    """Build one ``datasets`` entry: a demo family from its seed, or a real dataset from its archives (paths, or
    ``{archive name: path}`` where an archive is read in place under another name)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until the build writes it again
    kind = spec["kind"]
    if kind == "demo":
        from splicer.data.demo import make_demo

        make_demo(spec["family"], out, seed=int(spec.get("seed", 0)), **dict(spec.get("params", {})))
        check_declared_layout(spec, out)
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
    check_declared_layout(spec, out)
    info = {"kind": kind, "seed": seed, "params": params, "caps": caps.limits, "archives": sorted(files)}
    return write_manifest(out, info)
