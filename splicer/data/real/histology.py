"""H&E histology builders: NCT-CRC-HE-100K + CRC-VAL-HE-7K (``nct_crc``) and Camelyon17-WILDS (``camelyon17``).

Both write the dataset names, channel names and split names of the demo ``histology`` family
(:func:`splicer.data.demo.make_histology`), so the ``nct`` experiment of ``config/paper.yaml`` runs unchanged.
Images are ``(3, size, size)`` uint8 RGB; no masks are written here (the nuclei masks come from the ``segment``
stage, e.g. HoVer-Net or its classical stand-in).

``nct_crc`` -- Kather et al. 2019, Zenodo record 1214456, two zips read member by member (never extracted):

* ``NCT-CRC-HE-100K.zip``: ``NCT-CRC-HE-100K/<CLASS>/<CLASS>-<ID>.tif``, 100,000 tiles of 224x224 px RGB at
  0.5 um/px (Macenko-normalised), 9 tissue classes ADI BACK DEB LYM MUC MUS NORM STR TUM;
* ``CRC-VAL-HE-7K.zip``: ``CRC-VAL-HE-7K/<CLASS>/<CLASS>-<ID>.tif``, 7,180 tiles of 50 other patients.

(Layout and class order as kaiko-ai/eva ``src/eva/vision/data/datasets/classification/crc.py``, which extracts
both zips into one root and reads ``<root>/NCT-CRC-HE-100K`` and ``<root>/CRC-VAL-HE-7K`` as ``.tif`` image
folders.) Datasets:

* ``pretrain``: every NCT-CRC-HE-100K tile, one split ``train``, labelled with its class (as the demo);
* ``eval``: the standard NCT protocol (Kather et al. 2019; eva; TriDeNT): the probe trains on NCT-CRC-HE-100K and
  is tested on the held-out patients of CRC-VAL-HE-7K. ``train``/``val`` are a class-stratified split of
  NCT-CRC-HE-100K (``val_fraction`` to val, used only to choose the probe's regularisation), ``test`` is all of
  CRC-VAL-HE-7K. ``eval/train`` therefore repeats the pretraining tiles (another ~13 GiB at 224 px; cap it with
  ``caps: {eval/train: N}``); each shared tile is decoded once and written to both datasets.

``camelyon17`` -- Camelyon17-WILDS v1.0 (Koh et al. 2021; Bandi et al. 2018), one ``archive.tar.gz`` holding
``metadata.csv`` and ``patches/patient_{PPP}_node_{N}/patch_patient_{PPP}_node_{N}_x_{X}_y_{Y}.png`` (96x96 px,
saved from OpenSlide as RGBA; alpha is dropped as WILDS does with ``convert('RGB')``). ``metadata.csv`` has an
unnamed index column then ``patient`` (zero-padded, 3 digits), ``node``, ``x_coord``, ``y_coord``, ``tumor``,
``slide``, ``center``, ``split`` (0 train / 1 in-distribution val); see p-lambda/wilds
``wilds/datasets/camelyon17_dataset.py`` and ``dataset_preprocessing/camelyon17/``. The archive may hold these at
its top level (WILDS extracts it into ``camelyon17_v1.0/``) or under one folder; ``metadata.csv`` fixes the root.
Dataset ``camelyon`` (the demo's ``shift``: train hospitals -> a held-out hospital), WILDS official split:

* ``train``: hospitals other than ``test_center`` (2) and ``val_center`` (1), i.e. 0, 3, 4, rows with split 0;
* ``val``: ``val="id"`` (default, as the demo: same hospitals as train) the rows of those hospitals with split 1
  (WILDS ``id_val``); ``val="ood"`` the ``val_center`` hospital (WILDS OOD ``val``);
* ``test``: every patch of ``test_center`` (WILDS ``test``).

A tar.gz has no random access: one streaming pass finds ``metadata.csv``, the rows are chosen (caps applied)
before any patch is decoded, and the rest of the pass decodes only the chosen patches; only when patches precede
``metadata.csv`` in the archive does a second pass fetch the ones that were skipped.

Every bad input raises :class:`~splicer.data.real.common.BuildError` naming ``<archive>:<member>`` (or the
archive): an unreadable or mis-shaped tile, a class folder not among the nine, a missing ``metadata.csv`` column
or bad value, a patch listed in ``metadata.csv`` but absent from the archive.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from splicer.data.format import DatasetWriter
from splicer.data.real.common import SPLITS, BuildError, Caps, check_params, require, three_way_split

__all__ = [
    "CAMELYON_CLASSES",
    "CAMELYON_DEFAULTS",
    "NCT_CLASSES",
    "NCT_CLASS_NAMES",
    "NCT_DEFAULTS",
    "build_camelyon17",
    "build_nct_crc",
]

log = logging.getLogger(__name__)

CHANNELS = ["R", "G", "B"]
RESAMPLE = Image.Resampling.BILINEAR  # PIL's bilinear filter widens its support when shrinking (antialiased)

# ================================================================================================ NCT-CRC-HE
NCT_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
"""Class folders of both zips, in the order of eva's ``class_to_idx`` (alphabetical)."""
NCT_CLASS_NAMES = {
    "ADI": "adipose",
    "BACK": "background",
    "DEB": "debris",
    "LYM": "lymphocytes",
    "MUC": "mucus",
    "MUS": "smooth muscle",
    "NORM": "normal colon mucosa",
    "STR": "cancer-associated stroma",
    "TUM": "colorectal adenocarcinoma epithelium",
}
NCT_TRAIN, NCT_TEST = "NCT-CRC-HE-100K.zip", "CRC-VAL-HE-7K.zip"
NCT_DEFAULTS: dict[str, Any] = {
    "size": 224,  # output tile side in px; tiles are resized with PIL (bilinear, antialiased) when != tile_size
    "tile_size": 224,  # side every stored tile must have (Kather 2019: 224x224 px at 0.5 um/px); others: error
    "val_fraction": 0.1,  # share of NCT-CRC-HE-100K (stratified by class) held out as eval/val for probe selection
}

# ================================================================================================ Camelyon17
CAMELYON_CLASSES = ["normal", "tumour"]
"""As the demo's ``shift`` dataset; label = WILDS ``tumor`` (tumour tissue in the central 32x32 px)."""
CAMELYON_ARCHIVE = "camelyon17_v1.0_archive.tar.gz"
CAMELYON_COLUMNS = ("patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split")
CAMELYON_CENTERS = 5
CAMELYON_DEFAULTS: dict[str, Any] = {
    "size": 96,  # output patch side in px; patches are resized with PIL (bilinear, antialiased) when != patch_size
    "patch_size": 96,  # side every stored patch must have (WILDS: 96x96 px); others: error
    "val": "id",  # "id": train hospitals' metadata split 1 (WILDS id_val); "ood": hospital val_center (WILDS val)
    "test_center": 2,  # held-out test hospital (WILDS official: 2)
    "val_center": 1,  # WILDS OOD validation hospital: never in train; the val split only when val="ood"
}

_JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")


# ================================================================================================== shared
def _positive_int(kind: str, params: Mapping[str, Any], key: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"datasets entry of kind {kind!r}: params.{key} must be a positive integer, got {value!r}")
    return int(value)


def _is_junk(name: str) -> bool:
    base = posixpath.basename(name.rstrip("/"))
    return name.startswith("__MACOSX/") or "/__MACOSX/" in name or base.startswith("._") or base in _JUNK


def _decode(data: bytes, where: str, what: str, native: int, size: int) -> np.ndarray:
    """An encoded RGB(A) image -> (3, size, size) uint8; a BuildError naming ``where`` for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only: mode and size are checked first
            mode, (w, h) = img.mode, img.size
            if mode not in ("RGB", "RGBA"):
                raise BuildError(where, f"is a {mode!r} image; expected 8-bit RGB {what}")
            if (w, h) != (native, native):
                raise BuildError(
                    where,
                    f"is {w}x{h} px; expected {native}x{native} px (params "
                    f"{'tile_size' if what == 'TIFF' else 'patch_size'})",
                )
            img.load()
            rgb = img.convert("RGB") if mode == "RGBA" else img  # drops alpha (as WILDS' convert('RGB'))
            if native != size:
                rgb = rgb.resize((size, size), RESAMPLE)
            arr = np.asarray(rgb, dtype=np.uint8)
    except BuildError:
        raise
    except Exception as err:  # any decoder failure of this one member
        raise BuildError(where, f"cannot be decoded as {what}: {type(err).__name__}: {err}") from err
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _progress(done: int, total: int, what: str) -> None:
    if done == total or done % 10_000 == 0:
        log.info("%s: %d / %d decoded", what, done, total)


# ================================================================================================ NCT-CRC-HE
def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise BuildError(path, f"is not a readable zip archive: {err}") from err


def _scan_zip(zf: zipfile.ZipFile, path: Path, top: str) -> tuple[list[zipfile.ZipInfo], np.ndarray]:
    """The tiles ``<top>/<CLASS>/<name>.tif`` of a zip, sorted by (class, name), and their class indices."""
    tiles: list[tuple[int, str, zipfile.ZipInfo]] = []
    for info in zf.infolist():
        name = info.filename
        if info.is_dir() or _is_junk(name):
            continue
        where = f"{path}:{name}"
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != top:
            raise BuildError(where, f"unexpected member; expected {top}/<CLASS>/<tile>.tif")
        if parts[1] not in NCT_CLASSES:
            raise BuildError(where, f"class folder {parts[1]!r} is not one of the 9 classes {NCT_CLASSES}")
        if not parts[2].lower().endswith((".tif", ".tiff")):
            raise BuildError(where, "is not a .tif tile")
        tiles.append((NCT_CLASSES.index(parts[1]), name, info))
    tiles.sort(key=lambda t: (t[0], t[1]))
    labels = np.array([t[0] for t in tiles], np.int64)
    if missing := [c for i, c in enumerate(NCT_CLASSES) if not (labels == i).any()]:
        raise BuildError(path, f"holds no tiles of class(es) {missing} under {top}/ ({len(tiles)} tiles found)")
    return [t[2] for t in tiles], labels


def _read_tile(zf: zipfile.ZipFile, path: Path, info: zipfile.ZipInfo, native: int, size: int) -> np.ndarray:
    where = f"{path}:{info.filename}"
    try:
        data = zf.read(info)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        raise BuildError(where, f"cannot be read from the archive: {err}") from err
    return _decode(data, where, "TIFF", native, size)


def _nct_meta(name: str, split_names: list[str], info: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "channel_names": CHANNELS,
        "class_names": NCT_CLASSES,
        "split_names": split_names,
        "mask_names": [],
        "info": info,
    }


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    return {c: int((labels == i).sum()) for i, c in enumerate(NCT_CLASSES)}


def build_nct_crc(out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int) -> dict[str, Path]:
    """Datasets ``pretrain`` (NCT-CRC-HE-100K, split train) and ``eval`` (train/val from NCT-CRC-HE-100K, test =
    CRC-VAL-HE-7K) of 9 tissue classes, (3, size, size) uint8 (see the module docstring)."""
    kind = "nct_crc"
    p = check_params(kind, params, NCT_DEFAULTS)
    size, native = _positive_int(kind, p, "size"), _positive_int(kind, p, "tile_size")
    val_fraction = float(p["val_fraction"])
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"datasets entry of kind {kind!r}: params.val_fraction must lie in (0, 1), got {val_fraction}")
    train_path, test_path = require(files, NCT_TRAIN, kind), require(files, NCT_TEST, kind)
    out = Path(out)

    with _open_zip(train_path) as zf_train, _open_zip(test_path) as zf_test:
        train_tiles, train_labels = _scan_zip(zf_train, train_path, "NCT-CRC-HE-100K")
        test_tiles, test_labels = _scan_zip(zf_test, test_path, "CRC-VAL-HE-7K")
        n_train, n_test = len(train_tiles), len(test_tiles)

        # rows chosen (caps) before anything is decoded
        pre_rows = caps.apply(np.arange(n_train), "pretrain", "train", seed)
        codes = three_way_split(n_train, (1.0 - val_fraction, val_fraction, 0.0), seed, f"{kind}/eval", train_labels)
        eval_blocks = [
            caps.apply(np.flatnonzero(codes == 0), "eval", "train", seed),
            caps.apply(np.flatnonzero(codes == 1), "eval", "val", seed),
            caps.apply(np.arange(n_test), "eval", "test", seed),
        ]
        if eval_blocks[1].size == 0:
            raise ValueError(
                f"datasets entry of kind {kind!r}: params.val_fraction={val_fraction} leaves no "
                f"NCT-CRC-HE-100K tile of any class for eval/val ({n_train} tiles)"
            )

        common = {
            "source": "Kather et al. 2019, Zenodo 1214456",
            "tile_size": native,
            "size": size,
            "resample": None if size == native else "PIL bilinear (antialiased)",
            "class_full_names": NCT_CLASS_NAMES,
            "seed": int(seed),
            "caps": dict(caps.limits),
        }
        pre_info = {
            **common,
            "archive": NCT_TRAIN,
            "n_archive": n_train,
            "class_counts": {"train": _class_counts(train_labels[pre_rows])},
        }
        eval_info = {
            **common,
            "val_fraction": val_fraction,
            "archives": {"train": NCT_TRAIN, "val": NCT_TRAIN, "test": NCT_TEST},
            "protocol": "probe trained on NCT-CRC-HE-100K (val: stratified hold-out of it), tested on CRC-VAL-HE-7K",
            "n_archive": {NCT_TRAIN: n_train, NCT_TEST: n_test},
            "class_counts": {
                split: _class_counts((test_labels if split == "test" else train_labels)[rows])
                for split, rows in zip(SPLITS, eval_blocks, strict=True)
            },
        }
        # NCT-CRC-HE-100K tile index -> [(writer index, output row, split code)]
        targets: dict[int, list[tuple[int, int, int]]] = {}
        for row, i in enumerate(pre_rows):
            targets.setdefault(int(i), []).append((0, row, 0))
        row = 0
        for code, block in enumerate(eval_blocks[:2]):
            for i in block:
                targets.setdefault(int(i), []).append((1, row, code))
                row += 1
        n_eval = sum(b.size for b in eval_blocks)

        with (
            DatasetWriter(
                out / "pretrain", len(pre_rows), (3, size, size), _nct_meta("pretrain", ["train"], pre_info)
            ) as w_pre,
            DatasetWriter(out / "eval", n_eval, (3, size, size), _nct_meta("eval", SPLITS, eval_info)) as w_eval,
        ):
            writers = (w_pre, w_eval)
            order = sorted(targets, key=lambda i: train_tiles[i].header_offset)  # archive order: sequential reads
            for done, i in enumerate(order, 1):
                image = _read_tile(zf_train, train_path, train_tiles[i], native, size)
                for w, r, code in targets[i]:
                    writers[w].write(r, image, int(train_labels[i]), code)
                _progress(done, len(order), NCT_TRAIN)
            test_block = sorted(eval_blocks[2], key=lambda j: test_tiles[j].header_offset)
            test_row = {int(j): row + k for k, j in enumerate(eval_blocks[2])}
            for done, j in enumerate(test_block, 1):
                image = _read_tile(zf_test, test_path, test_tiles[j], native, size)
                w_eval.write(test_row[int(j)], image, int(test_labels[j]), 2)
                _progress(done, len(test_block), NCT_TEST)
    return {"pretrain": out / "pretrain", "eval": out / "eval"}


# ================================================================================================ Camelyon17
def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


class _TarStream:
    """Sequential members of a tar.gz, with read errors turned into BuildErrors naming the archive/member."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # gzip.GzipFile (not tarfile's own "r|gz") so that a cut-off stream raises EOFError instead of ending the
        # member list silently (tarfile treats a truncated header as the end of the archive)
        self.gz = gzip.GzipFile(path, "rb")
        try:
            self.tar = tarfile.open(fileobj=self.gz, mode="r|", bufsize=1 << 20)  # noqa: SIM115 -- see close()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            self.gz.close()
            raise BuildError(path, f"is not a readable tar.gz archive: {err}") from err

    def __iter__(self) -> Iterator[tuple[str, tarfile.TarInfo]]:
        while True:
            try:
                member = self.tar.next()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
                raise BuildError(self.path, f"cannot be read as tar.gz (damaged or truncated): {err}") from err
            if member is None:
                return
            self.tar.members = []  # stream mode keeps every header otherwise (455k of them)
            yield _norm(member.name), member

    def read(self, member: tarfile.TarInfo, name: str) -> bytes:
        where = f"{self.path}:{name}"
        if not member.isfile():
            raise BuildError(where, "is not a regular file in the archive")
        try:
            fh = self.tar.extractfile(member)
            assert fh is not None
            return fh.read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise BuildError(where, f"cannot be read from the archive: {err}") from err

    def close(self) -> None:
        self.tar.close()
        self.gz.close()


def _parse_metadata(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Columns of WILDS' metadata.csv as arrays (``patient`` kept as text); BuildError naming ``where``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BuildError(where, f"is not UTF-8 text: {err}") from err
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise BuildError(where, "is empty (no header row)")
    header = [h.strip() for h in header]
    if missing := [c for c in CAMELYON_COLUMNS if c not in header]:
        raise BuildError(
            where,
            f"is missing column(s) {missing}; has {header} (expected an unnamed index column "
            f"then {list(CAMELYON_COLUMNS)})",
        )
    cols = {c: header.index(c) for c in CAMELYON_COLUMNS}
    values: dict[str, list] = {c: [] for c in CAMELYON_COLUMNS}
    for line, record in enumerate(reader, 2):
        if not record:
            continue
        if len(record) != len(header):
            raise BuildError(where, f"line {line} has {len(record)} fields, the header {len(header)}")
        for c, k in cols.items():
            cell = record[k].strip()
            try:
                values[c].append(cell if c == "patient" else int(cell))
            except ValueError:
                raise BuildError(where, f"line {line}: column {c!r} must be an integer, got {cell!r}") from None
    out = {c: np.array(v, dtype=np.int64) for c, v in values.items() if c != "patient"}
    patients = values["patient"]
    if bad := next((p for p in patients if not p.isdigit()), None):
        raise BuildError(where, f"column 'patient' must hold digits, got {bad!r}")
    out["patient"] = np.array([f"{int(p):03d}" for p in patients], dtype="U8")
    if not len(patients):
        raise BuildError(where, "lists no patches")
    checks = {"tumor": (0, 1), "split": (0, 1), "center": (0, CAMELYON_CENTERS - 1)}
    for c, (lo, hi) in checks.items():
        if (bad := out[c][(out[c] < lo) | (out[c] > hi)]).size:
            raise BuildError(where, f"column {c!r} must lie in [{lo}, {hi}], got {int(bad[0])}")
    return out


def _patch_name(meta: dict[str, np.ndarray], i: int) -> str:
    p, n, x, y = meta["patient"][i], meta["node"][i], meta["x_coord"][i], meta["y_coord"][i]
    return f"patches/patient_{p}_node_{n}/patch_patient_{p}_node_{n}_x_{x}_y_{y}.png"


def _camelyon_plan(
    meta: dict[str, np.ndarray], p: Mapping[str, Any], caps: Caps, seed: int, where: str
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Metadata row indices of the train/val/test blocks (after caps) and the split description."""
    center, split = meta["center"], meta["split"]
    test_c, val_c = int(p["test_center"]), int(p["val_center"])
    train_centers = [c for c in range(CAMELYON_CENTERS) if c not in (test_c, val_c)]
    in_train = np.isin(center, train_centers)
    masks = {
        "train": in_train & (split == 0),
        "val": in_train & (split == 1) if p["val"] == "id" else center == val_c,
        "test": center == test_c,
    }
    blocks = [caps.apply(np.flatnonzero(masks[s]), "camelyon", s, seed) for s in SPLITS]
    for s, b in zip(SPLITS, blocks, strict=True):
        if b.size == 0:
            raise BuildError(
                where,
                f"has no patch for the {s} split (train hospitals {train_centers}, val "
                f"{p['val']!r}, test hospital {test_c})",
            )
    desc = {
        "train_hospitals": train_centers,
        "val_hospitals": train_centers if p["val"] == "id" else [val_c],
        "test_hospital": test_c,
        "val": p["val"],
        "wilds_splits": {"train": "train", "val": "id_val" if p["val"] == "id" else "val (OOD)", "test": "test"},
    }
    return blocks, desc


def build_camelyon17(out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int) -> dict[str, Path]:
    """Dataset ``camelyon`` (normal/tumour, train hospitals -> held-out test hospital), (3, size, size) uint8,
    streamed from the Camelyon17-WILDS v1.0 archive (see the module docstring)."""
    kind = "camelyon17"
    p = check_params(kind, params, CAMELYON_DEFAULTS)
    size, native = _positive_int(kind, p, "size"), _positive_int(kind, p, "patch_size")
    if p["val"] not in ("id", "ood"):
        raise ValueError(f"datasets entry of kind {kind!r}: params.val must be 'id' or 'ood', got {p['val']!r}")
    for key in ("test_center", "val_center"):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or not 0 <= p[key] < CAMELYON_CENTERS:
            raise ValueError(f"datasets entry of kind {kind!r}: params.{key} must be a hospital 0-4, got {p[key]!r}")
    if p["test_center"] == p["val_center"]:
        raise ValueError(f"datasets entry of kind {kind!r}: params.test_center and val_center must differ")
    path = require(files, CAMELYON_ARCHIVE, kind, folder_ok=True)
    out = Path(out)
    if path.is_dir():  # WILDS' extracted camelyon17_v1.0/, read in place (source.path)
        return _camelyon_from_folder(out, path, p, caps, seed, size, native)

    stream = _TarStream(path)
    try:
        members = iter(stream)
        found, skipped_before = None, 0
        for name, member in members:  # first pass, up to metadata.csv
            if posixpath.basename(name) == "metadata.csv" and member.isfile():
                found = (name, stream.read(member, name))
                break
            if member.isfile():
                skipped_before += 1
        if found is None:
            raise BuildError(path, "holds no metadata.csv (expected Camelyon17-WILDS v1.0: metadata.csv + patches/)")
        meta_name, data = found
        where = f"{path}:{meta_name}"
        meta = _parse_metadata(data, where)
        root = posixpath.dirname(meta_name)
        blocks, desc = _camelyon_plan(meta, p, caps, seed, where)
        order = np.concatenate(blocks)
        wanted: dict[str, int] = {}
        for row, i in enumerate(order):
            member_name = posixpath.join(root, _patch_name(meta, int(i)))
            if member_name in wanted:
                raise BuildError(where, f"lists {member_name!r} twice")
            wanted[member_name] = row
        labels, codes, meta_out = _camelyon_meta(meta, blocks, desc, caps, seed, size, native)
        total = len(wanted)
        with DatasetWriter(out / "camelyon", total, (3, size, size), meta_out) as writer:

            def fill(source: _TarStream, items: Iterator[tuple[str, tarfile.TarInfo]], stop: str | None) -> None:
                for name, member in items:
                    if name == stop or not wanted:
                        return
                    row = wanted.pop(name, None)
                    if row is None:
                        continue
                    image = _decode(source.read(member, name), f"{path}:{name}", "PNG", native, size)
                    writer.write(row, image, int(labels[row]), int(codes[row]))
                    _progress(total - len(wanted), total, CAMELYON_ARCHIVE)

            fill(stream, members, None)
            if wanted and skipped_before:  # patches stored before metadata.csv: one more pass for those
                log.info("%s: %d chosen patches precede metadata.csv; second pass", path, len(wanted))
                stream.close()
                stream = _TarStream(path)
                fill(stream, iter(stream), meta_name)
            if wanted:
                first = min(wanted, key=wanted.__getitem__)
                raise BuildError(
                    f"{path}:{first}",
                    f"is listed in metadata.csv but missing from the archive "
                    f"({len(wanted)} of {total} chosen patches missing; the archive ended normally)",
                )
    finally:
        stream.close()
    return {"camelyon": out / "camelyon"}


def _camelyon_meta(
    meta: dict[str, np.ndarray],
    blocks: list[np.ndarray],
    desc: dict[str, Any],
    caps: Caps,
    seed: int,
    size: int,
    native: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Labels and split codes of the chosen rows (in ``blocks`` order) and the dataset's meta.json."""
    order = np.concatenate(blocks)
    codes = np.repeat(np.arange(3, dtype=np.uint8), [b.size for b in blocks])
    labels = meta["tumor"][order]
    counts = {
        s: {
            str(c): [int(((meta["center"][b] == c) & (meta["tumor"][b] == k)).sum()) for k in (0, 1)]
            for c in sorted(set(meta["center"][b].tolist()))
        }
        for s, b in zip(SPLITS, blocks, strict=True)
    }
    info = {
        "source": "Camelyon17-WILDS v1.0 (Koh et al. 2021; Bandi et al. 2018)",
        "archive": CAMELYON_ARCHIVE,
        **desc,
        "label_rule": "tumour = WILDS 'tumor' (tumour tissue in the central 32x32 px of the patch)",
        "patch_size": native,
        "size": size,
        "resample": None if size == native else "PIL bilinear (antialiased)",
        "n_archive": int(meta["tumor"].size),
        "seed": int(seed),
        "caps": dict(caps.limits),
        "counts": counts,
        "counts_note": "split -> hospital -> [normal, tumour] patches",
    }
    meta_out = {
        "name": "camelyon",
        "channel_names": CHANNELS,
        "class_names": CAMELYON_CLASSES,
        "split_names": SPLITS,
        "mask_names": [],
        "info": info,
    }
    return labels, codes, meta_out


def _camelyon_from_folder(
    out: Path, folder: Path, p: Mapping[str, Any], caps: Caps, seed: int, size: int, native: int
) -> dict[str, Path]:
    """Dataset ``camelyon`` from WILDS' extracted folder (``metadata.csv`` + ``patches/``): only the chosen patches
    are opened, straight from their files."""
    meta_path = folder / "metadata.csv"
    try:
        data = meta_path.read_bytes()
    except OSError as err:
        raise BuildError(meta_path, f"cannot be read ({err}); expected WILDS' camelyon17_v1.0/metadata.csv") from err
    meta = _parse_metadata(data, str(meta_path))
    blocks, desc = _camelyon_plan(meta, p, caps, seed, str(meta_path))
    labels, codes, meta_out = _camelyon_meta(meta, blocks, desc, caps, seed, size, native)
    meta_out["info"]["archive"] = str(folder)
    order = np.concatenate(blocks)
    with DatasetWriter(out / "camelyon", int(order.size), (3, size, size), meta_out) as writer:
        for row, i in enumerate(order):
            patch = folder / _patch_name(meta, int(i))
            try:
                raw = patch.read_bytes()
            except FileNotFoundError:
                raise BuildError(patch, "is listed in metadata.csv but missing from the folder") from None
            except OSError as err:
                raise BuildError(patch, f"cannot be read: {err}") from err
            writer.write(row, _decode(raw, str(patch), "PNG", native, size), int(labels[row]), int(codes[row]))
            _progress(row + 1, int(order.size), str(folder))
    return {"camelyon": out / "camelyon"}
