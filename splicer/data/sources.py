"""Registry of the upstream archives every dataset of the paper is built from.

Each :class:`Archive` names one file to fetch: where it lives upstream, the local file name it is stored under
(``resources/<kind>/<name>`` in the pipeline) and, where the upstream library publishes one, its checksum. A
``None`` checksum means no checksum is published upstream for that file. An exact size is verified where one is
published; an *approximate* size (WILDS' ``compressed_size``) is never treated as a checksum. A file with no
published digest is verified for completeness instead (:mod:`splicer.data.completeness`): the transfer must
deliver the announced ``Content-Length``, and the file must be readable as a whole by its own format (a tar.gz's
whole gzip stream with its CRC-32 and length, a zip's central directory and member CRCs, an HDF5 file's recorded
end-of-file address, ...).

**Extracted upstream folders, read in place** (``source: {path: ...}``): where an upstream loader leaves
extracted files (WILDS' ``camelyon17_v1.0/``, torchvision's ``MNIST/raw/`` and ``cifar-10-batches-py/``,
torchgeo's EuroSAT ``ds/`` tree, MMEarth's ``data_100k_v001/``, medmnist's ``~/.medmnist/``), ``path`` points at
it and the archives it stands in for get :attr:`Archive.local`: they are verified in place (published per-file
digests where upstream has them, e.g. torchvision's CIFAR-10 batch md5s; completeness otherwise) and nothing is
downloaded or copied. Each kind's layout is its ``in_place`` entry in :data:`splicer.registry.KINDS`.

Which archives a dataset kind uses is its ``archives`` entry in :data:`splicer.registry.KINDS`: a fixed list
here (``MNIST_CIFAR``, ``EUROSAT``, ...) or a function of the entry's ``source`` options:

* ``chestmnist`` / ``pneumoniamnist`` -- URL and MD5 read from the installed ``medmnist`` package's
  ``medmnist.info.INFO`` (option ``size``: 28, 64, 128 or 224, as far as the installed version offers them);
* ``orion_crc`` -- per-slide files of the Orion-CRC release (Lin et al. 2023) on the public AWS open-data
  bucket; option ``slides`` (folder names such as ``"CRC01"``) is required, ``files`` picks which files.

Provenance of every URL and checksum is given next to it (upstream repository and file).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "CAMELYON17",
    "CIFAR10",
    "EUROSAT",
    "MMEARTH",
    "MNIST",
    "MNIST_CIFAR",
    "NCT_CRC",
    "ORION_FILES",
    "ORION_SLIDES",
    "SOURCE_OPTIONS",
    "Archive",
    "archives",
    "camelyon17_in_place",
    "eurosat_in_place",
    "find_all",
    "find_archive",
    "medmnist_archives",
    "medmnist_in_place",
    "medmnist_info",
    "medmnist_sizes",
    "medmnist_variants",
    "mmearth_in_place",
    "mnist_cifar_in_place",
    "orion_archives",
    "orion_variants",
]

_HEX = {"md5": re.compile(r"[0-9a-f]{32}"), "sha256": re.compile(r"[0-9a-f]{64}")}


@dataclass(frozen=True)
class Archive:
    """One upstream file: local ``name``, ``url``, published ``md5``/``sha256`` (None if unpublished), exact
    ``size`` (verified) or ``approx_size`` (upstream's rough figure: progress only, never verified).

    ``subdirs``: folders inside ``resources/<kind>/`` where upstream tools put this file (it is accepted there in
    place, as well as at ``resources/<kind>/<name>``). ``local``: set by ``source.path``, an extracted upstream
    file or folder that stands in for the download and is read in place; ``contents`` lists what such a folder
    must hold, as ``(relative path, "md5:<hex>" | "sha256:<hex>" | None)``.
    """

    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    note: str = ""
    approx_size: int | None = None
    subdirs: tuple[str, ...] = ()
    local: str | None = None
    contents: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or self.name in {".", ".."} or "/" in self.name or "\\" in self.name:
            raise ValueError(f"Archive name must be a plain file name, got {self.name!r}")
        if not re.match(r"https?://", self.url):
            raise ValueError(f"Archive {self.name!r}: url must be http(s), got {self.url!r}")
        for algo, value in (("md5", self.md5), ("sha256", self.sha256)):
            if value is not None and not _HEX[algo].fullmatch(value):
                raise ValueError(f"Archive {self.name!r}: {algo} must be lowercase hex, got {value!r}")
        for key in ("size", "approx_size"):
            if (value := getattr(self, key)) is not None and value < 0:
                raise ValueError(f"Archive {self.name!r}: {key} must be >= 0, got {value}")
        for sub in self.subdirs:
            if not sub or sub.startswith("/") or ".." in Path(sub).parts:
                raise ValueError(f"Archive {self.name!r}: subdirs must be relative folders, got {sub!r}")
        for _, digest in self.contents:
            if digest is not None:
                algo, _, value = digest.partition(":")
                if algo not in _HEX or not _HEX[algo].fullmatch(value):
                    raise ValueError(f"Archive {self.name!r}: contents digest must be 'md5:<hex>' or 'sha256:<hex>'")

    @property
    def checksums(self) -> dict[str, str]:
        """The published digests, ``{algo: hexdigest}`` (empty when none is published)."""
        return {algo: v for algo, v in (("md5", self.md5), ("sha256", self.sha256)) if v is not None}

    def describe_checksum(self) -> str:
        """Human-readable expected checksum(s) and size, for error messages."""
        parts = [f"{algo} {value}" for algo, value in self.checksums.items()]
        if self.size is not None:
            parts.append(f"size {self.size} bytes")
        if parts:
            return ", ".join(parts)
        approx = f"; upstream gives ~{self.approx_size / 1e9:.1f} GB, approximately" if self.approx_size else ""
        return f"no published checksum: verified complete (transfer length and a readable file){approx}"


# ---------------------------------------------------------------------------------------------------------------
# MNIST -- pytorch/vision torchvision/datasets/mnist.py: MNIST.mirrors[0] + MNIST.resources (md5s). The second
# mirror there (http://yann.lecun.com/exdb/mnist/) is plain http and no longer reliable, so it is not used.
_MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST = [
    Archive(name, _MNIST_MIRROR + name, md5=md5, note="MNIST (torchvision mirror)")
    for name, md5 in (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    )
]

# CIFAR-10 -- pytorch/vision torchvision/datasets/cifar.py: CIFAR10.url, CIFAR10.filename, CIFAR10.tgz_md5.
CIFAR10 = [
    Archive(
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        note="CIFAR-10 python version (https://www.cs.toronto.edu/~kriz/cifar.html)",
    )
]

# EuroSAT multispectral (13 bands) -- microsoft/torchgeo torchgeo/datasets/eurosat.py (torchgeo >= 0.6):
# EuroSAT.url (Hugging Face mirror pinned to a revision) + EuroSAT.filename + EuroSAT.sha256, and the
# train/val/test split lists (EuroSAT.split_filenames / split_sha256s). torchgeo <= 0.5 used
# https://madm.dfki.de/files/sentinel/EuroSATallBands.zip with md5 5ac12b3b2557aa56e1826e981e8e200e; current
# torchgeo publishes only the sha256 for the pinned mirror, which is what is verified here.
_EUROSAT_BASE = "https://hf.co/datasets/torchgeo/eurosat/resolve/1ce6f1bfb56db63fd91b6ecc466ea67f2509774c/"
EUROSAT = [
    Archive(
        "EuroSATallBands.zip",
        _EUROSAT_BASE + "EuroSATallBands.zip",
        sha256="751f070f9bffa2eed48b24ca2dd0b02959280c08837e8c9a5532a67ba611df59",
        note="EuroSAT all 13 Sentinel-2 bands, ~2.0 GB (https://github.com/phelber/EuroSAT)",
    ),
    *(
        Archive(
            f"eurosat-{split}.txt",
            f"{_EUROSAT_BASE}eurosat-{split}.txt",
            sha256=digest,
            note=f"EuroSAT {split} split list (Neumann et al. 2019, arXiv:1911.06721), as used by torchgeo",
        )
        for split, digest in (
            ("train", "1c1d2e855f95deee605a3d992f914d113fddbecf422ec61648057d029a37d695"),
            ("val", "b385741f31daa9f1250cf1e1fe03adfab394e1172e0693df40141af004f60330"),
            ("test", "cf37948894c12bd953930ff54ee9b7abf0b31478abb8d25fd2c6c721db74c592"),
        )
    ),
]

# MMEarth100k (128x128 px, 100k tiles, ~48 GB) -- vishalned/MMEarth-data bash_scripts/data_100k_128.sh (the
# data_100k_v001 release; file names match torchgeo/datasets/mmearth.py MMEarth.filenames["MMEarth100k"], which
# reads them from <root>/data_100k_v001/). No checksum or size is published for these files: None. They are
# accepted flat in resources/mmearth/ or in resources/mmearth/data_100k_v001/ (subdirs), read in place.
_MMEARTH_BASE = "https://sid.erda.dk/share_redirect/CoaUojVXzu/"
MMEARTH_DIR = "data_100k_v001"
MMEARTH = [
    Archive(
        name,
        _MMEARTH_BASE + name,
        note=f"MMEarth100k ({what}); resources/mmearth/ or resources/mmearth/{MMEARTH_DIR}/",
        subdirs=(MMEARTH_DIR,),
    )
    for name, what in (
        ("data_100k_v001.h5", "HDF5 tiles, ~48 GB"),
        ("data_100k_v001_band_stats.json", "per-band statistics"),
        ("data_100k_v001_splits.json", "train/val/test indices"),
        ("data_100k_v001_tile_info.json", "per-tile metadata"),
    )
]

# NCT-CRC-HE-100K / CRC-VAL-HE-7K (Kather et al. 2019) -- Zenodo record 1214456 (doi:10.5281/zenodo.1214456).
# URLs as in kaiko-ai/eva src/eva/vision/data/datasets/classification/crc.py. MD5s are the ones Zenodo publishes
# for the record's files: CRC-VAL-HE-7K md5 2fd1651b... as in eva crc.py / crc_he.py. For NCT-CRC-HE-100K.zip,
# eva's crc.py lists 035777cf..., which is the md5 of NCT-CRC-HE-100K-NONORM.zip (eva crc_he.py pairs it with
# the NONORM file); the record lists md5 6fd702d1... and 11,690,284,003 bytes for NCT-CRC-HE-100K.zip, as quoted
# by independent downloaders of the record. Sizes are the record's byte counts.
_ZENODO_1214456 = "https://zenodo.org/records/1214456/files/"
NCT_CRC = [
    Archive(
        "NCT-CRC-HE-100K.zip",
        _ZENODO_1214456 + "NCT-CRC-HE-100K.zip?download=1",
        md5="6fd702d11df6292bc054397ae038a464",
        size=11_690_284_003,
        note="NCT-CRC-HE-100K, 100,000 Macenko-normalised 224x224 H&E patches, 9 tissue classes (Zenodo 1214456)",
    ),
    Archive(
        "CRC-VAL-HE-7K.zip",
        _ZENODO_1214456 + "CRC-VAL-HE-7K.zip?download=1",
        md5="2fd1651b4f94ebd818ebf90ad2b6ce06",
        size=800_276_929,
        note="CRC-VAL-HE-7K, 7,180 H&E patches from 50 held-out patients (Zenodo 1214456)",
    ),
]

# Camelyon17-WILDS v1.0 -- p-lambda/wilds wilds/datasets/camelyon17_dataset.py: _versions_dict["1.0"]
# ("download_url", "compressed_size"); wilds_dataset.py saves it as archive.tar.gz, extracts it into
# <root>/camelyon17_v1.0/ (metadata.csv, patches/, RELEASE_v1.0.txt) and deletes it. WILDS publishes no checksum,
# and its compressed_size is documented as *approximate* (it only drives a progress bar; 10_658_709_504 is a
# multiple of 4096): never verified. Completeness is: the announced Content-Length arrived, and the whole gzip
# stream (CRC-32, length) and tar index read to their end.
CAMELYON17 = [
    Archive(
        "camelyon17_v1.0_archive.tar.gz",
        "https://worksheets.codalab.org/rest/bundles/0xe45e15f39fb54e9d9e919556af67aabe/contents/blob/",
        approx_size=10_658_709_504,
        note="Camelyon17-WILDS v1.0 (96x96 patches + metadata.csv; https://wilds.stanford.edu/downloads)",
    )
]

MNIST_CIFAR = MNIST + CIFAR10
"""The ``mnist_cifar`` kind's archives."""

# ---------------------------------------------------------------------------------------------------------------
# MedMNIST v2 -- never hardcoded: read from the installed medmnist package (medmnist/info.py INFO[flag]).


@lru_cache(maxsize=1)
def medmnist_info() -> ModuleType:
    """The installed ``medmnist.info`` module, loaded without importing the (torch-heavy) package itself."""
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the MedMNIST kinds need the 'medmnist' package (pip install medmnist; see envs/data.yaml)")
    try:
        info_spec = importlib.util.spec_from_file_location(
            "_splicermedmnist_info", f"{next(iter(spec.submodule_search_locations))}/info.py"
        )
        assert info_spec is not None and info_spec.loader is not None
        module = importlib.util.module_from_spec(info_spec)
        info_spec.loader.exec_module(module)
        if not isinstance(getattr(module, "INFO", None), dict):
            raise AttributeError("INFO")
        return module
    except Exception:  # unusual layout: fall back to the regular (slow) import
        return importlib.import_module("medmnist.info")


def medmnist_sizes(info: dict[str, Any]) -> list[int]:
    """Image sizes an ``INFO[flag]`` entry offers: 28 (keys ``url``/``MD5``) plus every ``url_<size>``."""
    return [28, *sorted(int(k[4:]) for k in info if re.fullmatch(r"url_\d+", k))]


def medmnist_variants(kind: str) -> list[Archive]:
    """Every ``<flag>[_<size>].npz`` the installed ``medmnist`` offers for ``kind``."""
    sizes = medmnist_sizes(medmnist_info().INFO[kind])
    return [a for size in sizes for a in medmnist_archives(kind, size=size)]


def medmnist_archives(flag: str, size: int = 28) -> list[Archive]:
    """The ``<flag>[_<size>].npz`` file of a MedMNIST dataset, URL and MD5 from the installed ``medmnist``."""
    info_module = medmnist_info()
    if flag not in info_module.INFO:
        raise ValueError(f"medmnist {info_module.__version__} has no dataset {flag!r}")
    info = info_module.INFO[flag]
    suffix = "" if int(size) == 28 else f"_{int(size)}"
    if f"url{suffix}" not in info:
        sizes = medmnist_sizes(info)
        raise ValueError(f"medmnist {info_module.__version__} offers {flag} at sizes {sizes}, not {size}")
    return [
        Archive(
            f"{flag}{suffix}.npz",
            info[f"url{suffix}"],
            md5=info.get(f"MD5{suffix}"),
            note=f"MedMNIST v2 {flag} at {int(size)}x{int(size)} (medmnist {info_module.__version__} INFO)",
        )
    ]


# ---------------------------------------------------------------------------------------------------------------
# Orion-CRC (Lin et al. 2023, Nature Cancer) -- public AWS open-data bucket s3://lin-2023-orion-crc/data (us-east-1,
# anonymous). Folder and file names from labsyspharm/orion-crc datarelease-README.md ("File Lists"). No checksums
# are published for these files (S3 ETags of multipart uploads are not MD5s), and sizes are given only rounded
# (GiB/MiB): checksum and size are None.
_ORION_BUCKET = "https://lin-2023-orion-crc.s3.amazonaws.com/data/"
ORION_SLIDES: dict[str, tuple[str, str]] = {
    # folder: (19-channel Orion OME-TIFF, H&E registered to it)
    "CRC01": ("P37_S29_A24_C59kX_E15_20220106_014304_946511", "18459_LSP10353_US_SCAN_OR_001__093059"),
    "CRC02": ("P37_S30_A24_C59kX_E15_20220106_014319_409148", "18459_LSP10364_US_SCAN_OR_001__092347"),
    "CRC03": ("P37_S31_A24_C59kX_E15_20220106_014409_014236", "18459_LSP10375_US_SCAN_OR_001__092147"),
    "CRC04": ("P37_S32_A24_C59kX_E15_20220106_014630_553652", "18459_LSP10388_US_SCAN_OR_001__091155"),
    "CRC05": ("P37_S33_A24_C59kX_E15_20220107_180446_881530", "18459_LSP10397_US_SCAN_OR_001__091631"),
    "CRC06": ("P37_S34_A24_C59kX_E15_20220107_202112_212579", "18459_LSP10408_US_SCAN_OR_001__092559"),
    "CRC07": ("P37_S35_A24_C59kX_E15_20220108_012037_490594", "18459_LSP10419_US_SCAN_OR_001__090907"),
    "CRC08": ("P37_S57_Full_A24_C59nX_E15_20220224_011032_774034", "19510_C8_US_SCAN_OR_001__150825"),
    "CRC09": ("P37_S37_A24_C59kX_E15_20220108_012113_953544", "18459_LSP10441_US_SCAN_OR_001__091844"),
    "CRC10": ("P37_S38_A24_C59kX_E15_20220108_012130_664519", "18459_LSP10452_US_SCAN_OR_001__091355"),
    "CRC11": ("P37_S43_Full_A24_C59mX_E15_20220128_171510_544056", "19510_C11_US_SCAN_OR_001__151039"),
    "CRC12": ("P37_S44_Full_A24_C59mX_E15_20220128_171448_903938", "19510_C12_US_SCAN_OR_001__151249"),
    "CRC13": ("P37_S45_Full_A24_C59mX_E15_20220128_171409_633341", "19510_C13_US_SCAN_OR_001__151503"),
    "CRC14": ("P37_S46_Full_A24_C59mX_E15_20220128_013821_398547", "19510_C14_US_SCAN_OR_001__151737"),
    "CRC15": ("P37_S47_Full_A24_C59mX_E15_20220128_020654_901143", "19510_C15_US_SCAN_OR_001__152234"),
    "CRC16": ("P37_S48_Full_A24_C59mX_E15_20220129_015105_865195", "19510_C16_US_SCAN_OR_001__152020"),
    "CRC17": ("P37_S49_Full_A24_C59mX_E15_20220129_015121_911264", "19510_C17_US_SCAN_OR_001__152525"),
    "CRC18": ("P37_S50_Full_A24_C59mX_E15_20220129_015242_755602", "19510_C18_US_SCAN_OR_001__152757"),
    "CRC19": ("P37_S51_Full_A24_C59mX_E15_20220129_015300_669681", "19510_C19_US_SCAN_OR_001__153041"),
    "CRC20": ("P37_S52_Full_A24_C59mX_E15_20220129_015324_574779", "19510_C20_US_SCAN_OR_001__153341"),
    "CRC21": ("P37_S58_Full_A24_C59nX_E15_20220224_011058_014787", "19510_C21_US_SCAN_OR_001__153607"),
    "CRC22": ("P37_S59_Full_A24_C59nX_E15_20220224_011113_455637", "19510_C22_US_SCAN_OR_001__092420"),
    "CRC23": ("P37_S60_Full_A24_C59nX_E15_20220224_011127_971497", "19510_C23_US_SCAN_OR_001__154147"),
    "CRC24": ("P37_S61_Full_A24_C59nX_E15_20220224_011149_079291", "19510_C24_US_SCAN_OR_001__091904"),
    "CRC25": ("P37_S62_Full_A24_C59nX_E15_20220224_011204_784145", "19510_C25_US_SCAN_OR_001__154712"),
    "CRC26": ("P37_S63_Full_A24_C59nX_E15_20220224_011246_458738", "19510_C26_US_SCAN_OR_001__092131"),
    "CRC27": ("P37_S64_Full_A24_C59nX_E15_20220224_011259_841605", "19510_C27_US_SCAN_OR_001__155205"),
    "CRC28": ("P37_S65_Full_A24_C59nX_E15_20220224_011333_386280", "19510_C28_US_SCAN_OR_001__155413"),
    "CRC29": ("P37_S66_Full_A24_C59nX_E15_20220224_011348_519133", "19510_C29_US_SCAN_OR_001__155859"),
    "CRC30": ("P37_S67_Full_A24_C59nX_E15_20220224_011408_506939", "19510_C30_US_SCAN_OR_001__155702"),
    "CRC31": ("P37_S74_Full_A24_C59qX_E15_20220302_234837_137590", "19510_C31_US_SCAN_OR_001__160203"),
    "CRC32": ("P37_S75_Full_A24_C59qX_E15_20220302_235001_586560", "19510_C32_US_SCAN_OR_001__160434"),
    "CRC33_01": ("P37_S76_01_A24_C59qX_E15_20220302_235136_561323", "19510_C33_US_SCAN_OR_001__160715-2"),
    "CRC33_02": ("P37_S76_02_A24_C59qX_E15_20220302_235158_533766", "19510_C33_US_SCAN_OR_001__160715"),
    "CRC34": ("P37_S77_Full_A24_C59qX_E15_20220302_235222_359806", "19510_C34_US_SCAN_OR_001__160949"),
    "CRC35": ("P37_S78_Full_A24_C59qX_E15_20220302_235239_498836", "19510_C35_US_SCAN_OR_001__161209"),
    "CRC36": ("P37_S79_Full_A24_C59qX_E15_20220302_235254_496641", "19510_C36_US_SCAN_OR_001__161442"),
    "CRC37": ("P37_S80_Full_A24_C59qX_E15_20220307_235159_333000", "19510_C37_US_SCAN_OR_001__161733"),
    "CRC38": ("P37_S81_Full_A24_C59qX_E15_20220302_235331_704703", "19510_C38_US_SCAN_OR_001__162018"),
    "CRC39": ("P37_S82_Full_A24_C59qX_E15_20220304_200614_832683", "19510_C39_US_SCAN_OR_001__162343"),
    "CRC40": ("P37_S83_Full_A24_C59qX_E15_20220304_200429_490805", "19510_P37-S83_C40_US_SCAN_OR_001__163912"),
}
"""Orion-CRC slide folder -> (Orion image stem, registered H&E stem), from the data release README."""

ORION_FILES = ("image", "cells", "markers", "he", "mask")
"""Orion-CRC file types: 19-channel OME-TIFF, per-cell CSV, markers.csv (channel names), registered H&E, mask."""


def _orion_slide_id(folder: str) -> str:
    """``P37_S29`` (or ``P37_S76_01``) -- the prefix of the per-cell table and mask names."""
    match = re.match(r"P37_S\d+(?:_0\d(?=_))?", ORION_SLIDES[folder][0])
    assert match is not None
    return match.group(0)


def orion_variants(kind: str = "orion_crc") -> list[Archive]:
    """Every Orion-CRC file (all slides, all file types)."""
    return orion_archives(kind, list(ORION_SLIDES), ORION_FILES)


def orion_archives(
    kind: str = "orion_crc", slides: Sequence[str] | None = None, files: Iterable[str] = ("image", "cells", "markers")
) -> list[Archive]:
    """Orion-CRC files of the chosen ``slides`` (folder names, e.g. ``"CRC01"``, ``"CRC33_01"``).

    ``files`` picks among :data:`ORION_FILES`; ``markers`` (identical in every folder) is taken once, from the
    first slide. The 19-channel images are 44-147 GiB each. Without ``slides`` nothing is downloaded: the entry
    reads a synced folder in place (``params.path``, :mod:`splicer.data.real.orion`), which its build checks.
    """
    if slides is None:
        return []
    if isinstance(slides, str):
        slides = [slides]
    if not slides:
        raise ValueError(f"kind {kind!r} needs a non-empty list of slides, e.g. slides=['CRC01', 'CRC02']")
    files = tuple(files)
    if unknown := [f for f in files if f not in ORION_FILES]:
        raise ValueError(f"unknown Orion-CRC file type(s) {unknown}; choose from {list(ORION_FILES)}")
    folders = []
    for slide in slides:
        folder = str(slide).upper()
        if folder not in ORION_SLIDES:
            raise ValueError(f"unknown Orion-CRC slide {slide!r}; valid folders: {', '.join(ORION_SLIDES)}")
        if folder not in folders:
            folders.append(folder)
    out = []
    for folder in folders:
        image, he = ORION_SLIDES[folder]
        sid = _orion_slide_id(folder)
        base = f"{_ORION_BUCKET}{folder}/"
        names = {
            "image": (f"{image}-zlib.ome.tiff", "19-channel Orion whole-slide image (pyramidal OME-TIFF)"),
            "cells": (f"{sid}-{folder}.csv", "single-cell table (per-cell marker means, centroids)"),
            "he": (f"{he}-registered.ome.tif", "H&E of the same section, registered to the Orion image"),
            "mask": (f"{sid}-{folder}-mask.ome.tif", "cell segmentation mask"),
        }
        for kind in files:
            if kind == "markers":
                if folder == folders[0]:
                    out.append(Archive("markers.csv", base + "markers.csv", note=f"Orion-CRC channel list ({folder})"))
                continue
            name, what = names[kind]
            out.append(Archive(name, base + name, note=f"Orion-CRC {folder}: {what}"))
    return out


# ---------------------------------------------------------------------------------------------------------------
def _no_options(kind: str, options: dict[str, Any], allowed: Iterable[str] = ()) -> None:
    if extra := sorted(set(options) - set(allowed)):
        allowed = sorted(allowed)
        raise ValueError(f"kind {kind!r} takes no option(s) {extra}" + (f"; options: {allowed}" if allowed else ""))


SOURCE_OPTIONS = ("mirror", "checksums", "path")
"""Options every kind takes: ``mirror`` (a base URL serving the same file names, e.g. an institutional copy),
``checksums`` (``{file name: "sha256:<hex>" | "md5:<hex>"}``: pin the digest of a file you repackaged or
mirrored yourself; it replaces the published checksum and size of that file) and, for the kinds with an
``in_place`` layout in :data:`splicer.registry.KINDS`, ``path`` (an extracted upstream folder read in place)."""


def archives(kind: str, **options: Any) -> list[Archive]:
    """The archives a dataset ``kind`` is built from (options: ``size`` for MedMNIST; ``slides``/``files`` for
    Orion-CRC; ``mirror``/``checksums``/``path`` for any kind, see :data:`SOURCE_OPTIONS`)."""
    mirror, checksums, path = options.pop("mirror", None), options.pop("checksums", None), options.pop("path", None)
    found = _kind_archives(kind, **options)
    if path is not None:
        found = _in_place(kind, found, path)
    if mirror is None and checksums is None:
        return found
    return _redirect(kind, found, mirror, dict(checksums or {}))


def _redirect(kind: str, found: list[Archive], mirror: str | None, checksums: dict[str, str]) -> list[Archive]:
    if mirror is not None and not re.match(r"https?://", str(mirror)):
        raise ValueError(f"kind {kind!r}: source.mirror must be an http(s) URL, got {mirror!r}")
    names = [a.name for a in found]
    if unknown := sorted(set(checksums) - set(names)):
        raise ValueError(f"kind {kind!r}: source.checksums names unknown file(s) {unknown}; files: {names}")
    out = []
    for archive in found:
        url = archive.url if mirror is None else f"{str(mirror).rstrip('/')}/{archive.name}"
        digests: dict[str, Any] = {"md5": archive.md5, "sha256": archive.sha256, "size": archive.size}
        if archive.name in checksums:
            algo, sep, value = str(checksums[archive.name]).partition(":")
            if not sep or algo not in _HEX:
                raise ValueError(
                    f"kind {kind!r}: source.checksums[{archive.name!r}] must be 'sha256:<hex>' or "
                    f"'md5:<hex>', got {checksums[archive.name]!r}"
                )
            digests = {"md5": None, "sha256": None, "size": None, algo: value.lower()}
        note = archive.note + (f" [mirror {mirror}]" if mirror else "")
        out.append(dataclasses.replace(archive, url=url, note=note, **digests))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Extracted upstream folders read in place (source.path): one layout function per kind, registered as the kind's
# ``in_place`` in splicer.registry.KINDS: (kind, archives, folder) -> the archives, those found in the folder with
# ``local`` set (the rest are still downloaded).


def _in_place(kind: str, found: list[Archive], path: Any) -> list[Archive]:
    from splicer.registry import resolve

    entry = _kind(kind)
    if entry.in_place is None:
        with_path = sorted(k for k, e in _kinds().items() if e.in_place)
        raise ValueError(f"kind {kind!r} takes no source.path (kinds read in place from a folder: {with_path})")
    if not isinstance(path, str | Path) or not str(path):
        raise ValueError(f"kind {kind!r}: source.path must be a folder, got {path!r}")
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"kind {kind!r}: source.path {str(path)!r} is not a folder ({root} does not exist)")
    in_place: Callable[[str, list[Archive], Path], list[Archive]] = resolve(entry.in_place)
    out = in_place(kind, found, root)
    if not any(a.local for a in out):
        raise ValueError(f"kind {kind!r}: source.path {root} holds none of its files (see the README's table)")
    return out


def _kinds() -> dict[str, Any]:
    from splicer.registry import KINDS

    return KINDS


def _local(archive: Archive, local: Path, *, keep_digests: bool = True, **changes: Any) -> Archive:
    """``archive`` read in place from ``local`` (its published digests dropped unless they apply to that file)."""
    if not keep_digests:
        changes = {"md5": None, "sha256": None, "size": None, **changes}
    return dataclasses.replace(archive, local=str(local), approx_size=None, **changes)


def _first_dir(root: Path, *candidates: str) -> Path | None:
    return next((root / c for c in candidates if (root / c).is_dir()), None)


TORCHVISION_CIFAR10_BATCHES = {
    # pytorch/vision torchvision/datasets/cifar.py: CIFAR10.train_list + test_list (md5 of each extracted batch)
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
"""torchvision's md5 of every extracted CIFAR-10 python batch (``cifar-10-batches-py/``)."""


def mnist_cifar_in_place(kind: str, found: list[Archive], root: Path) -> list[Archive]:
    """torchvision's ``root``: ``MNIST/raw/`` (the ``.gz`` files, md5-verified, or the extracted idx files next to
    them, verified by their idx headers) and ``cifar-10-batches-py/`` (each batch md5-verified, as torchvision's
    ``CIFAR10._check_integrity``) or the kept ``cifar-10-python.tar.gz``. ``root`` may also be ``MNIST/raw``'s or
    the CIFAR folder's parent as torchvision names them."""
    raw = _first_dir(root, "MNIST/raw", "raw") or (root if root.name == "raw" else None)
    cifar_dir = _first_dir(root, "cifar-10-batches-py") or (root if root.name == "cifar-10-batches-py" else None)
    out = []
    for archive in found:
        name = archive.name
        if name.endswith("-ubyte.gz") and raw is not None:
            if (raw / name).is_file():
                archive = _local(archive, raw / name)
            elif (raw / name[:-3]).is_file():
                archive = _local(archive, raw / name[:-3], keep_digests=False, note=archive.note + " (extracted idx)")
        elif name == CIFAR10[0].name:
            if cifar_dir is not None:
                contents = tuple((b, f"md5:{m}") for b, m in TORCHVISION_CIFAR10_BATCHES.items())
                archive = _local(archive, cifar_dir, keep_digests=False, contents=contents)
            elif (root / name).is_file():
                archive = _local(archive, root / name)
        out.append(archive)
    return out


def camelyon17_in_place(kind: str, found: list[Archive], root: Path) -> list[Archive]:
    """WILDS' extracted ``camelyon17_v1.0/`` (``metadata.csv`` + ``patches/``), or the WILDS ``root_dir`` above it.
    No digest is published for either: the builder checks that every patch ``metadata.csv`` lists exists."""
    folder = next((d for d in (root, root / "camelyon17_v1.0") if (d / "metadata.csv").is_file()), None)
    if folder is None:
        return found
    contents = (("metadata.csv", None), ("patches", None))
    return [_local(a, folder, keep_digests=False, contents=contents) for a in found]


EUROSAT_TIF_DIR = "ds/images/remote_sensing/otherDatasets/sentinel_2/tif"
"""Where torchgeo's ``EuroSAT(root)`` extracts the GeoTIFFs (``EuroSAT.base_dir``), inside ``root``."""


def eurosat_in_place(kind: str, found: list[Archive], root: Path) -> list[Archive]:
    """torchgeo's EuroSAT ``root``: ``EuroSATallBands.zip`` if torchgeo kept it (sha256-verified), else the extracted
    ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/*.tif`` tree (``root`` may be that ``tif``
    folder itself; the build checks every listed GeoTIFF is there); ``eurosat-{train,val,test}.txt`` from
    ``root`` (sha256-verified) where present, else downloaded (torchgeo fetches only the lists of the splits it
    was asked for)."""
    tif = _first_dir(root, EUROSAT_TIF_DIR) or (root if root.name == "tif" else None)
    out = []
    for archive in found:
        if archive.name.endswith(".zip"):
            if (root / archive.name).is_file():
                archive = _local(archive, root / archive.name)
            elif tif is not None:
                archive = _local(archive, tif, keep_digests=False, note=archive.note + " (extracted tif/ tree)")
        elif (root / archive.name).is_file():
            archive = _local(archive, root / archive.name)
        out.append(archive)
    return out


def mmearth_in_place(kind: str, found: list[Archive], root: Path) -> list[Archive]:
    """The folder holding MMEarth's ``data_100k_v001*`` files (``data_100k_v001/``, as its download script and
    torchgeo lay them out), or its parent; files it lacks are downloaded."""
    folder = next((d for d in (root, root / MMEARTH_DIR) if (d / f"{MMEARTH_DIR}.h5").is_file()), root)
    return [_local(a, folder / a.name) if (folder / a.name).is_file() else a for a in found]


def medmnist_in_place(kind: str, found: list[Archive], root: Path) -> list[Archive]:
    """medmnist's ``root`` (default ``~/.medmnist``), which holds the ``<flag>[_<size>].npz`` files (md5-verified)."""
    return [_local(a, root / a.name) if (root / a.name).is_file() else a for a in found]


def _kind(kind: str) -> Any:
    from splicer.registry import KINDS

    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind]


def _kind_archives(kind: str, **options: Any) -> list[Archive]:
    """The archives of ``kind`` (:data:`splicer.registry.KINDS`): a fixed list, or a function of the options."""
    from splicer.registry import resolve

    entry = _kind(kind)
    found = resolve(entry.archives) if entry.archives else []
    if not callable(found):
        _no_options(kind, options)
        return list(found)
    allowed = [p for p in inspect.signature(found).parameters if p != "kind"]
    _no_options(kind, options, allowed)
    return found(kind, **options)


def _all_variants(kind: str) -> list[Archive]:
    """Every archive ``kind`` can name under any options (all slides and file types; all MedMNIST sizes)."""
    from splicer.registry import resolve

    entry = _kind(kind)
    return resolve(entry.variants)(kind) if entry.variants else archives(kind)


def find_all(kind: str) -> list[Archive]:
    """Every archive ``kind`` can name under any options (all Orion slides and file types, all MedMNIST sizes)."""
    return _all_variants(kind)


def find_archive(kind: str, name: str, **options: Any) -> Archive:
    """The archive of ``kind`` stored under file ``name`` (without options: under any options); else ValueError."""
    for archive in archives(kind, **options) if options else _all_variants(kind):
        if archive.name == name:
            return archive
    raise ValueError(f"kind {kind!r} has no archive named {name!r}")
