"""splicer.data.completeness: every format it reads is accepted whole and rejected when cut short or damaged."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from splicer.data.completeness import IncompleteFileError, check_complete, file_format


def _tar_gz(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for i in range(30):
            data = np.random.default_rng(i).bytes(3000)
            info = tarfile.TarInfo(f"patches/p{i}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _idx(path: Path) -> None:
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    path.write_bytes(struct.pack(">I", 0x803) + struct.pack(">3I", *images.shape) + images.tobytes())


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(5):
            zf.writestr(f"tiles/t{i}.tif", np.random.default_rng(i).bytes(5000))


def _h5(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f["sentinel2"] = np.ones((4, 13, 8, 8), np.uint16)


def _tiff(path: Path) -> None:
    import tifffile

    tifffile.imwrite(path, np.ones((3, 64, 64), np.uint16), tile=(16, 16))


WRITERS = {
    "a.tar.gz": _tar_gz,
    "b.gz": lambda p: p.write_bytes(gzip.compress(np.random.default_rng(0).bytes(20000))),
    "train-images-idx3-ubyte": _idx,
    "c.zip": _zip,
    "d.npz": lambda p: np.savez(p, x=np.arange(1000)),
    "e.h5": _h5,
    "f.json": lambda p: p.write_text(json.dumps({"train": list(range(500))})),
    "g.csv": lambda p: p.write_text("CellID,X,Y\n" + "".join(f"{i},{i}.5,{i}.25\n" for i in range(200))),
    "h.ome.tif": _tiff,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_whole_files_pass_and_cut_files_fail(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    WRITERS[name](path)
    assert file_format(name) is not None
    said = check_complete(path)
    assert said and "no format check" not in said
    data = path.read_bytes()
    for keep in (len(data) - 1, len(data) - 37, len(data) // 2):
        path.write_bytes(data[:keep])
        with pytest.raises(IncompleteFileError, match=str(path)):
            check_complete(path)


def test_damaged_gzip_fails_its_crc(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(bytes(range(256)) * 100))
    data[-8] ^= 0xFF  # the CRC-32 trailer
    (tmp_path / "x.gz").write_bytes(bytes(data))
    with pytest.raises(IncompleteFileError, match="gzip"):
        check_complete(tmp_path / "x.gz")


def test_csv_cut_at_a_line_break_is_caught_by_its_field_count(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("CellID,X,Y\n1,2,3\n4,5\n")
    with pytest.raises(IncompleteFileError, match="2 fields, the header 3"):
        check_complete(tmp_path / "t.csv")


def test_unknown_types_are_not_checked_and_say_so(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"abc")
    assert check_complete(tmp_path / "x.bin") == "no format check for this file type"
    assert file_format("x.bin") is None
