"""splicer.data.download against a loopback HTTP server (127.0.0.1 only), and the splicer.data.sources registry."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import tarfile
import urllib.request
from pathlib import Path

import pytest
from loopback import Route, Server, corrupted

from splicer.data import download, sources
from splicer.data.download import ChecksumError, DownloadError, MissingArchiveError, fetch, fetch_all, file_digest
from splicer.data.sources import Archive, archives
from splicer.registry import KINDS, Kind, SizeHint

pytestmark = pytest.mark.timeout(30)

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"timeout": 5, "chunk": 64 * 1024, "backoff": 0.0}


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------------------------------------------------------
# fetch


def test_file_digest_streams_md5_and_sha256(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(PAYLOAD)
    assert file_digest(f, "md5", chunk=1000) == MD5
    assert file_digest(f, "sha256") == SHA256


@pytest.mark.parametrize("digest", [{"md5": MD5}, {"sha256": SHA256}, {"md5": MD5, "sha256": SHA256}])
def test_download_verifies_md5_and_sha256(server: Server, tmp_path: Path, digest: dict[str, str]) -> None:
    server.routes["/data.bin"] = Route(PAYLOAD)
    archive = Archive("data.bin", server.url("/data.bin"), **digest)
    path = fetch(archive, tmp_path / "dest", **FAST)
    assert path == tmp_path / "dest" / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path / "dest") == ["data.bin"]
    assert server.ranges("/data.bin") == [None]
    # a second call verifies the file on disk and does not download again
    assert fetch(archive, tmp_path / "dest", **FAST) == path
    assert len(server.requests) == 1


def test_corrupt_download_is_rejected_then_a_good_serve_succeeds(server: Server, tmp_path: Path) -> None:
    server.routes["/d.bin"] = Route(PAYLOAD, corrupt=True)
    archive = Archive("d.bin", server.url("/d.bin"), md5=MD5)
    with pytest.raises(ChecksumError) as info:
        fetch(archive, tmp_path, **FAST)
    err = info.value
    assert err.expected == MD5 and err.actual == hashlib.md5(corrupted(PAYLOAD)).hexdigest() != MD5
    assert "d.bin" in str(err) and MD5 in str(err)
    assert len(server.requests) == 2  # deleted and fetched once more from scratch
    assert server.ranges("/d.bin") == [None, None]
    assert leftovers(tmp_path) == []  # nothing under the final name, no .part either
    server.routes["/d.bin"].corrupt = False
    assert fetch(archive, tmp_path, **FAST).read_bytes() == PAYLOAD


def test_existing_corrupt_file_is_moved_aside_and_never_used(server: Server, tmp_path: Path) -> None:
    server.routes["/d.bin"] = Route(PAYLOAD)
    archive = Archive("d.bin", server.url("/d.bin"), sha256=SHA256)
    (tmp_path / "d.bin").write_bytes(b"garbage")
    with pytest.raises(ChecksumError) as info:
        fetch(archive, tmp_path, **FAST)
    msg = str(info.value)
    assert str(tmp_path / "d.bin") in msg and SHA256 in msg and hashlib.sha256(b"garbage").hexdigest() in msg
    assert "d.bin.corrupt" in msg
    assert leftovers(tmp_path) == ["d.bin.corrupt"]
    assert server.requests == []
    assert fetch(archive, tmp_path, **FAST).read_bytes() == PAYLOAD  # a later call downloads afresh
    assert (tmp_path / "d.bin.corrupt").read_bytes() == b"garbage"


def test_cut_transfer_resumes_from_part_with_range(server: Server, tmp_path: Path) -> None:
    server.routes["/big.bin"] = Route(PAYLOAD, cut=1)
    archive = Archive("big.bin", server.url("/big.bin"), sha256=SHA256)
    path = fetch(archive, tmp_path, **FAST)
    assert file_digest(path, "sha256") == SHA256
    assert server.ranges("/big.bin") == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert leftovers(tmp_path) == ["big.bin"]


def test_existing_part_is_resumed(server: Server, tmp_path: Path) -> None:
    server.routes["/p.bin"] = Route(PAYLOAD)
    (tmp_path / "p.bin.part").write_bytes(PAYLOAD[:1000])
    path = fetch(Archive("p.bin", server.url("/p.bin"), md5=MD5), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges("/p.bin") == ["bytes=1000-"]


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.routes["/r.bin"] = Route(PAYLOAD, ignore_range=True)
    (tmp_path / "r.bin.part").write_bytes(b"\x00" * 5000)  # wrong bytes: must not be kept
    path = fetch(Archive("r.bin", server.url("/r.bin"), md5=MD5), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges("/r.bin") == ["bytes=5000-"]  # asked to resume, got 200, rewrote from zero
    assert leftovers(tmp_path) == ["r.bin"]


def test_cut_transfer_with_server_ignoring_range(server: Server, tmp_path: Path) -> None:
    server.routes["/c.bin"] = Route(PAYLOAD, ignore_range=True, cut=2)
    path = fetch(Archive("c.bin", server.url("/c.bin"), md5=MD5), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_stale_part_failing_checksum_is_redownloaded_from_scratch(server: Server, tmp_path: Path) -> None:
    server.routes["/s.bin"] = Route(PAYLOAD)
    (tmp_path / "s.bin.part").write_bytes(b"\xff" * 100)  # resumable, but not the start of this file
    path = fetch(Archive("s.bin", server.url("/s.bin"), md5=MD5), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges("/s.bin") == ["bytes=100-", None]


def test_complete_part_answered_416_is_verified(server: Server, tmp_path: Path) -> None:
    server.routes["/f.bin"] = Route(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    path = fetch(Archive("f.bin", server.url("/f.bin"), md5=MD5), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges("/f.bin") == [f"bytes={len(PAYLOAD)}-"]


def test_size_is_checked_when_no_checksum_is_published(server: Server, tmp_path: Path) -> None:
    server.routes["/n.bin"] = Route(PAYLOAD)
    assert fetch(Archive("n.bin", server.url("/n.bin"), size=len(PAYLOAD)), tmp_path, **FAST).exists()
    (tmp_path / "m.bin").write_bytes(b"short")
    with pytest.raises(ChecksumError, match="size mismatch"):
        fetch(Archive("m.bin", server.url("/n.bin"), size=len(PAYLOAD)), tmp_path, **FAST)
    # no checksum, no size: a complete transfer is accepted as is
    assert fetch(Archive("u.bin", server.url("/n.bin")), tmp_path, **FAST).read_bytes() == PAYLOAD


def test_transient_errors_are_retried_then_give_up(server: Server, tmp_path: Path) -> None:
    server.routes["/e.bin"] = Route(PAYLOAD, status=503)
    with pytest.raises(DownloadError, match="after 3 attempts"):
        fetch(Archive("e.bin", server.url("/e.bin"), md5=MD5), tmp_path, retries=2, **FAST)
    assert len(server.requests) == 3
    server.requests.clear()
    with pytest.raises(DownloadError, match="HTTP 404"):  # not transient: no retry
        fetch(Archive("x.bin", server.url("/missing"), md5=MD5), tmp_path, retries=2, **FAST)
    assert len(server.requests) == 1
    assert leftovers(tmp_path) == []


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    archive = Archive("z.bin", f"http://127.0.0.1:{closed_port()}/z.bin", md5=MD5)
    with pytest.raises(DownloadError, match="after 2 attempts"):
        fetch(archive, tmp_path, retries=1, **FAST)


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network access in offline mode")


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_verifies_a_preplaced_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    archive = Archive("pre.bin", f"http://127.0.0.1:{closed_port()}/pre.bin", md5=MD5, sha256=SHA256)
    (tmp_path / "pre.bin").write_bytes(PAYLOAD)
    if how == "environment":
        monkeypatch.setenv(download.OFFLINE_ENV, "1")
    assert fetch(archive, tmp_path, offline=how == "argument", **FAST) == tmp_path / "pre.bin"
    # and a corrupt pre-placed archive is still caught
    (tmp_path / "pre.bin").write_bytes(PAYLOAD[:-1])
    with pytest.raises(ChecksumError):
        fetch(archive, tmp_path, offline=how == "argument", **FAST)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_missing_archive_says_what_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    url = f"http://127.0.0.1:{closed_port()}/files/gone.zip"
    archive = Archive("gone.zip", url, md5=MD5, note="Zenodo record 1")
    if how == "environment":
        monkeypatch.setenv(download.OFFLINE_ENV, "1")
    with pytest.raises(MissingArchiveError) as info:
        fetch(archive, tmp_path / "res", offline=how == "argument")
    msg = str(info.value)
    assert url in msg and str((tmp_path / "res" / "gone.zip").resolve()) in msg and MD5 in msg
    assert "Zenodo record 1" in msg
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "res").exists()


def test_fetch_all_offline_reports_every_missing_archive(tmp_path: Path) -> None:
    port = closed_port()
    todo = [Archive(f"{i}.bin", f"http://127.0.0.1:{port}/{i}.bin", md5=MD5) for i in range(3)]
    (tmp_path / "1.bin").write_bytes(PAYLOAD)
    with pytest.raises(MissingArchiveError) as info:
        fetch_all(todo, tmp_path, offline=True)
    assert "0.bin" in str(info.value) and "2.bin" in str(info.value)
    assert "1.bin'" not in str(info.value)


def test_fetch_all_and_cli(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for name in ("a", "b"):
        server.routes[f"/{name}"] = Route(PAYLOAD + name.encode())
    todo = [Archive(n, server.url(f"/{n}"), md5=hashlib.md5(PAYLOAD + n.encode()).hexdigest()) for n in "ab"]
    monkeypatch.setattr(sources, "LOOPBACK", todo, raising=False)
    monkeypatch.setitem(KINDS, "loopback", Kind(None, None, (), "splicer.data.sources:LOOPBACK", SizeHint(1, 1, 1, 1)))
    assert download.main(["loopback", str(tmp_path / "cli"), "-q"]) == 0
    assert leftovers(tmp_path / "cli") == ["a", "b"]
    capsys.readouterr()
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert download.main(["loopback", str(tmp_path / "cli"), "--offline", "-q"]) == 0
    assert download.main(["loopback", str(tmp_path / "elsewhere"), "--offline", "-q"]) == 1
    assert str((tmp_path / "elsewhere" / "a").resolve()) in capsys.readouterr().err
    assert download.main(["no_such_kind", str(tmp_path)]) == 1
    assert "no_such_kind" in capsys.readouterr().err
    assert fetch_all(todo, tmp_path / "cli", offline=True) == [tmp_path / "cli" / "a", tmp_path / "cli" / "b"]


# ---------------------------------------------------------------------------------------------------------------
# registry


def test_unknown_kind_and_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="no_such_kind"):
        archives("no_such_kind")
    assert archives("orion_crc") == []  # no slides to download: the entry reads a synced folder (params.path)
    with pytest.raises(ValueError, match="CRC99"):
        archives("orion_crc", slides=["CRC99"])
    with pytest.raises(ValueError, match="size"):
        archives("mnist_cifar", size=64)
    with pytest.raises(ValueError, match="33"):
        archives("chestmnist", size=33)
    assert archives("demo") == []


def _all_registered() -> dict[str, list[Archive]]:
    out = {kind: sources.find_all(kind) for kind, entry in KINDS.items() if entry.archives}
    for flag in ("chestmnist", "pneumoniamnist"):
        out[flag] = archives(flag)
        for size in (64, 128, 224):
            out[f"{flag}@{size}"] = archives(flag, size=size)
    return out


def test_registry_urls_are_https_and_names_unique() -> None:
    registered = _all_registered()
    assert {k for k, e in KINDS.items() if e.archives} <= set(registered)
    assert not [k for k, e in KINDS.items() if not e.archives and archives(k)]
    for kind, items in registered.items():
        assert items, kind
        names = [a.name for a in items]
        assert len(names) == len(set(names)), f"duplicate names in {kind}"
        for a in items:
            assert a.url.startswith("https://"), (kind, a.url)
            assert "/" not in a.name
            assert a.note, (kind, a.name)


def test_registry_checksums_where_published() -> None:
    by_name = {a.name: a for items in _all_registered().values() for a in items}
    assert by_name["train-images-idx3-ubyte.gz"].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert by_name["cifar-10-python.tar.gz"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert by_name["EuroSATallBands.zip"].sha256 is not None
    assert by_name["CRC-VAL-HE-7K.zip"].md5 == "2fd1651b4f94ebd818ebf90ad2b6ce06"
    # no checksum is published for these
    for name in ("data_100k_v001.h5", "camelyon17_v1.0_archive.tar.gz", "P37_S29-CRC01.csv", "markers.csv"):
        assert by_name[name].checksums == {}, name
    # WILDS' compressed_size is approximate (a progress-bar figure, a multiple of 4096): never verified as a size
    camelyon = by_name["camelyon17_v1.0_archive.tar.gz"]
    assert camelyon.size is None and camelyon.approx_size == 10_658_709_504


def test_orion_archives_follow_the_release_names() -> None:
    got = {a.name: a.url for a in archives("orion_crc", slides=["CRC01", "crc33_02", "CRC01"], files=("cells", "mask"))}
    base = "https://lin-2023-orion-crc.s3.amazonaws.com/data/"
    assert got == {
        "P37_S29-CRC01.csv": base + "CRC01/P37_S29-CRC01.csv",
        "P37_S29-CRC01-mask.ome.tif": base + "CRC01/P37_S29-CRC01-mask.ome.tif",
        "P37_S76_02-CRC33_02.csv": base + "CRC33_02/P37_S76_02-CRC33_02.csv",
        "P37_S76_02-CRC33_02-mask.ome.tif": base + "CRC33_02/P37_S76_02-CRC33_02-mask.ome.tif",
    }
    default = [a.name for a in sources.orion_archives("orion_crc", ["CRC08"])]
    assert default == [
        "P37_S57_Full_A24_C59nX_E15_20220224_011032_774034-zlib.ome.tiff",
        "P37_S57-CRC08.csv",
        "markers.csv",
    ]


def test_medmnist_entries_come_from_the_installed_package() -> None:
    info = pytest.importorskip("medmnist.info").INFO
    for flag in ("chestmnist", "pneumoniamnist"):
        (a,) = archives(flag)
        assert (a.name, a.url, a.md5) == (f"{flag}.npz", info[flag]["url"], info[flag]["MD5"])
        if "url_64" in info[flag]:
            (b,) = archives(flag, size=64)
            assert (b.name, b.url, b.md5) == (f"{flag}_64.npz", info[flag]["url_64"], info[flag]["MD5_64"])


def test_archive_validation() -> None:
    with pytest.raises(ValueError):
        Archive("a/b", "https://x")
    with pytest.raises(ValueError):
        Archive("a", "ftp://x")
    with pytest.raises(ValueError):
        Archive("a", "https://x", md5="XYZ")
    assert sources.find_archive("mnist_cifar", "cifar-10-python.tar.gz").md5
    with pytest.raises(ValueError):
        sources.find_archive("mnist_cifar", "nope")
    # without options, the dynamic kinds are searched under every option (as the Snakemake download rule does)
    assert sources.find_archive("orion_crc", "P37_S83-CRC40.csv").url.endswith("/data/CRC40/P37_S83-CRC40.csv")
    assert sources.find_archive("pneumoniamnist", "pneumoniamnist_128.npz").md5
    with pytest.raises(ValueError):
        sources.find_archive("orion_crc", "P37_S29-CRC01.csv", slides=["CRC02"])


# ---------------------------------------------------------------------------------------------------------------
# no published checksum: completeness, never an approximate size (issue #12 item 1)


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WILDS_LIKE = tar_gz({"metadata.csv": b"a,b\n1,2\n", **{f"patches/p{i}.png": bytes(range(256)) * 50 for i in range(20)}})
CAMELYON = "camelyon17_v1.0_archive.tar.gz"


def test_camelyon17_is_accepted_whatever_its_size_differs_from_wilds_approximate_one(
    server: Server, tmp_path: Path
) -> None:
    """The registry's Camelyon17 archive, served whole (its size is of course not WILDS' approximate 10.66 GB):
    accepted online and offline, and the record says what was verified instead of a size."""
    server.routes[f"/{CAMELYON}"] = Route(WILDS_LIKE)
    archive = sources.find_archive("camelyon17", CAMELYON, mirror=server.url("/"))
    record = tmp_path / "res" / ".verified" / f"{CAMELYON}.json"
    path = download.fetch_verified(archive, tmp_path / "res", record, **FAST)
    assert path.read_bytes() == WILDS_LIKE
    info = json.loads(record.read_text())
    assert info["path"] == str(path)
    assert "no published checksum" in info["verified"] and "tar index walked to its end" in info["verified"]
    assert info["transfer"] == f"{len(WILDS_LIKE)} bytes, as announced by the server"
    # a copy placed by hand is accepted offline too (an approximate size a few KB off changes nothing)
    off_by_a_few_kb = dataclasses.replace(archive, approx_size=len(WILDS_LIKE) + 4096)
    assert fetch(off_by_a_few_kb, tmp_path / "res", offline=True) == path


def test_truncated_archive_without_checksum_is_rejected(server: Server, tmp_path: Path) -> None:
    """A tar.gz cut short -- by a server that announces the short length, so the transfer itself looks complete --
    is not a complete archive: downloaded twice, rejected, nothing left in place; offline, moved aside."""
    cut = WILDS_LIKE[: len(WILDS_LIKE) - 700]
    server.routes["/cut.tar.gz"] = Route(cut)
    archive = Archive("cut.tar.gz", server.url("/cut.tar.gz"), approx_size=len(cut))
    with pytest.raises(ChecksumError, match=r"completeness .*downloaded twice"):
        fetch(archive, tmp_path / "a", **FAST)
    assert leftovers(tmp_path / "a") == []
    assert server.ranges("/cut.tar.gz") == [None, None]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cut.tar.gz").write_bytes(cut)
    with pytest.raises(ChecksumError, match="moved it aside"):
        fetch(archive, tmp_path / "b", offline=True)
    assert leftovers(tmp_path / "b") == ["cut.tar.gz.corrupt"]


def test_a_transfer_short_of_its_content_length_is_resumed_not_accepted(server: Server, tmp_path: Path) -> None:
    server.routes["/w.tar.gz"] = Route(WILDS_LIKE, cut=1)  # announces the full length, sends half, hangs up
    path = fetch(Archive("w.tar.gz", server.url("/w.tar.gz")), tmp_path, **FAST)
    assert path.read_bytes() == WILDS_LIKE
    assert server.ranges("/w.tar.gz")[1] == f"bytes={len(WILDS_LIKE) // 2}-"


# ---------------------------------------------------------------------------------------------------------------
# MMEarth: flat or in data_100k_v001/, and the offline message says both (issue #12 item 3)


def test_mmearth_files_are_found_flat_or_in_their_release_folder(tmp_path: Path, monkeypatch) -> None:
    import h5py
    import numpy as np

    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    h5, splits = sources.find_archive("mmearth", "data_100k_v001.h5"), "data_100k_v001_splits.json"
    folder = tmp_path / "mmearth" / "data_100k_v001"
    folder.mkdir(parents=True)
    with h5py.File(folder / h5.name, "w") as f:
        f["sentinel2"] = np.zeros((2, 13, 4, 4), np.uint16)
    assert fetch(h5, tmp_path / "mmearth", offline=True) == folder / h5.name  # in the release folder, in place
    (tmp_path / "mmearth" / splits).write_text('{"train": [0]}')  # flat
    flat = fetch(sources.find_archive("mmearth", splits), tmp_path / "mmearth", offline=True)
    assert flat == tmp_path / "mmearth" / splits
    with pytest.raises(MissingArchiveError) as info:
        fetch(sources.find_archive("mmearth", "data_100k_v001_tile_info.json"), tmp_path / "mmearth", offline=True)
    message = str(info.value)
    assert str(tmp_path / "mmearth" / "data_100k_v001_tile_info.json") in message
    assert str(folder / "data_100k_v001_tile_info.json") in message
    assert "place all four files" not in message
    # a truncated HDF5 in the release folder is caught there too
    data = (folder / h5.name).read_bytes()
    (folder / h5.name).write_bytes(data[:-100])
    with pytest.raises(ChecksumError, match="end of file"):
        fetch(h5, tmp_path / "mmearth", offline=True)


def test_source_path_for_mmearth_and_medmnist_and_kinds_without_a_layout(tmp_path: Path) -> None:
    release = tmp_path / "mmearth" / "data_100k_v001"  # torchgeo's MMEarth(root) reads root/data_100k_v001/
    release.mkdir(parents=True)
    (release / "data_100k_v001.h5").write_bytes(b"")
    (release / "data_100k_v001_splits.json").write_text("{}")
    for path in (release, release.parent):
        local = {a.name: a.local for a in archives("mmearth", path=str(path))}
        assert local["data_100k_v001.h5"] == str(release / "data_100k_v001.h5")
        assert local["data_100k_v001_tile_info.json"] is None  # not there: downloaded
    pytest.importorskip("medmnist")
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "pneumoniamnist_224.npz").write_bytes(b"")
    (a,) = archives("pneumoniamnist", size=224, path=str(tmp_path / "medmnist"))
    assert a.local == str(tmp_path / "medmnist" / "pneumoniamnist_224.npz") and a.md5  # md5 still verified
    with pytest.raises(ValueError, match=r"takes no source\.path"):
        archives("nct_crc", path=str(tmp_path))
