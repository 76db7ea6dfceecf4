"""``shapes3d data fetch``, offline: tiny archives in the real sets' layouts, served from a file URL or a loopback
HTTP server (with Range support, and a response cut short once to test resuming); checksums; unsafe members
(``..``, absolute paths, links out, devices) and bombs refused before anything is extracted; the result found
by discovery; what the CLI prints."""

from __future__ import annotations

import hashlib
import http.server
import io
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from shapes3d.cli.main import main
from shapes3d.data.discovery import discover
from shapes3d.data.fetch import DATASETS, fetch_dataset
from shapes3d.errors import CorruptFileError, InputFileError, MissingFileError, Shapes3DError, TooLargeError

OFF = b"OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
OBJ = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"
# ModelNet10.zip's layout: one top folder, <class>/{train,test}/<class>_NNNN.off, a README, macOS litter.
MODELNET = {
    "ModelNet10/README.txt": b"ModelNet10\n",
    "ModelNet10/chair/train/chair_0001.off": OFF,
    "ModelNet10/chair/train/chair_0002.off": OFF,
    "ModelNet10/chair/test/chair_0890.off": OFF,
    "ModelNet10/table/train/table_0001.off": OFF,
    "ModelNet10/table/test/table_0393.off": OFF,
    "__MACOSX/ModelNet10/chair/train/._chair_0001.off": b"\0\5\26\7",
    "ModelNet10/.DS_Store": b"\0\0\0\1",
}
# MeshCNN's shrec_16.tar.gz: shrec_16/<class>/{train,test}/T<n>.obj.
SHREC = {f"shrec_16/{c}/{s}/T{i}.obj": OBJ for c in ("alien", "ants", "armadillo")
         for s, i in (("train", 1), ("train", 2), ("train", 3), ("test", 4))}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def make_zip(path: Path, members: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)  # ZipInfo keeps '/abs' and '..'
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tgz(path: Path, members: dict[str, bytes], *, links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


class Server:
    """A loopback HTTP server for one file: honours ``Range: bytes=N-`` (unless ``ranges`` is False) and cuts its
    first response short after ``cut`` bytes when ``cut`` is set (headers still announce the full length)."""

    def __init__(self, data: bytes, *, cut: int | None = None, ranges: bool = True) -> None:
        self.data, self.cut, self.ranges, self.requests = data, cut, ranges, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests.append(self.headers.get("Range"))
                start = 0
                rng = self.headers.get("Range")
                if rng and server.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                body = server.data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[:server.cut], None
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def serve():
    servers = []

    def start(data: bytes, **kw) -> Server:
        servers.append(Server(data, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_modelnet_from_a_file_url_is_laid_out_for_discovery(tmp_path):
    archive = make_zip(tmp_path / "mirror.zip", MODELNET)
    out = tmp_path / "data"
    r = fetch_dataset("modelnet10", out, url=archive.as_uri())
    assert r.folder == out / "ModelNet10" and r.archive == out / "ModelNet10.zip"
    assert r.sha256 == sha(archive) and r.downloaded == archive.stat().st_size
    assert r.checksum == f"no published checksum: recorded in {out / 'ModelNet10.zip.sha256'} at this first download"
    assert (out / "ModelNet10.zip.sha256").read_text() == f"{sha(archive)}  ModelNet10.zip\n"
    assert listing(out) == sorted(["ModelNet10", "ModelNet10.zip", "ModelNet10.zip.sha256"] + [
        f"ModelNet10/{p}" for p in ("FETCHED.json", "README.txt", "chair", "chair/train", "chair/test", "table",
                                    "table/train", "table/test", "chair/train/chair_0001.off",
                                    "chair/train/chair_0002.off", "chair/test/chair_0890.off",
                                    "table/train/table_0001.off", "table/test/table_0393.off")])
    m = discover(r.folder)
    assert m.layout == "modelnet" and m.classes == ["chair", "table"]
    assert len(m.filter(split="train")) == 3 and len(m.filter(split="test")) == 2
    assert len(m.filter(class_name="chair", split="train")) == 2
    assert (r.shapes, r.classes, r.splits, r.files) == (5, 2, {"train": 3, "test": 2}, 6)
    assert (r.folder / "chair/train/chair_0001.off").read_bytes() == OFF


def test_shrec_download_resumes_after_an_interrupted_response(tmp_path, serve):
    archive = make_tgz(tmp_path / "shrec_16.tar.gz", SHREC)
    data = archive.read_bytes()
    server = serve(data, cut=100)
    out = tmp_path / "data"
    with pytest.raises(Shapes3DError) as e:
        fetch_dataset("shrec11", out, url=server.url)
    part = out / "shrec_16.tar.gz.part"
    assert str(e.value) == (f"download of {server.url} stopped after 100 of {len(data)} bytes (the connection "
                            f"closed early); {part} is kept: run the same command again to resume")
    assert listing(out) == ["shrec_16.tar.gz.part"] and part.read_bytes() == data[:100]
    r = fetch_dataset("shrec11", out, url=server.url)
    assert server.requests == [None, "bytes=100-"]
    assert r.downloaded == len(data) - 100 and sha(out / "shrec_16.tar.gz") == sha(archive)
    assert not part.exists()
    m = discover(out / "SHREC11")
    assert m.classes == ["alien", "ants", "armadillo"]
    assert len(m.filter(split="train")) == 9 and len(m.filter(split="test")) == 3
    assert (r.shapes, r.classes, r.splits) == (12, 3, {"train": 9, "test": 3})


def test_a_server_ignoring_range_sends_the_whole_file_again(tmp_path, serve):
    archive = make_tgz(tmp_path / "shrec_16.tar.gz", SHREC)
    server = serve(archive.read_bytes(), cut=50, ranges=False)
    out = tmp_path / "data"
    with pytest.raises(Shapes3DError, match="stopped after 50 of"):
        fetch_dataset("shrec11", out, url=server.url)
    r = fetch_dataset("shrec11", out, url=server.url)
    assert server.requests == [None, "bytes=50-"] and r.downloaded == archive.stat().st_size
    assert sha(out / "shrec_16.tar.gz") == sha(archive) and r.shapes == 12


def test_checksum_mismatch_is_refused_and_nothing_is_extracted(tmp_path):
    archive = make_zip(tmp_path / "ModelNet10.zip", MODELNET)
    out = tmp_path / "data"
    with pytest.raises(CorruptFileError) as e:
        fetch_dataset("modelnet10", out, archive=archive, sha256="ab" * 32)
    assert str(e.value) == (f"{archive}: SHA-256 {sha(archive)} does not match the expected {'ab' * 32} "
                            "(--sha256); nothing was extracted. Delete the archive to download it again, or check "
                            "the mirror")
    assert not out.exists()


def test_a_recorded_checksum_guards_later_downloads(tmp_path):
    first = make_zip(tmp_path / "a.zip", MODELNET)
    out = tmp_path / "data"
    fetch_dataset("modelnet10", out, archive=first)
    assert (out / "a.zip.sha256").read_text() == f"{sha(first)}  a.zip\n"
    r = fetch_dataset("modelnet10", out, archive=first, overwrite=True)
    assert r.checksum == f"matches the checksum recorded in {out / 'a.zip.sha256'}" and first.exists()
    recorded = sha(first)
    make_zip(first, {**MODELNET, "ModelNet10/chair/test/chair_0891.off": OFF})  # changed upstream
    with pytest.raises(CorruptFileError) as e:
        fetch_dataset("modelnet10", out, archive=first, overwrite=True)
    assert str(e.value) == (f"{first}: SHA-256 {sha(first)} does not match the expected {recorded} (recorded in "
                            f"{out / 'a.zip.sha256'}); nothing was extracted. Delete the archive to download it "
                            "again, or check the mirror; if the set changed upstream and you trust the new archive, "
                            "delete a.zip.sha256")
    assert len(discover(out / "ModelNet10")) == 5  # the set in place is untouched
    r = fetch_dataset("modelnet10", out, archive=first, overwrite=True, sha256=sha(first))  # vouched for
    assert r.shapes == 6 and (out / "a.zip.sha256").read_text() == f"{sha(first)}  a.zip\n"


@pytest.mark.parametrize("maker,member,problem", [
    ("zip", "../evil.off", "leads out of the folder ('..')"),
    ("zip", "ModelNet10/chair/../../../evil.off", "leads out of the folder ('..')"),
    ("zip", "/tmp/evil.off", "is an absolute path"),
    ("zip", "C:\\evil.off", "is an absolute path"),
    ("zip", "ModelNet10\\..\\..\\evil.off", "leads out of the folder ('..')"),
    ("tar", "../evil.off", "leads out of the folder ('..')"),
    ("tar", "/tmp/evil.off", "is an absolute path"),
])
def test_members_leaving_the_folder_are_refused(tmp_path, maker, member, problem):
    members = {**MODELNET, member: OFF}
    archive = (make_zip(tmp_path / "m.zip", members) if maker == "zip"
               else make_tgz(tmp_path / "m.tar.gz", members))
    out = tmp_path / "out" / "data"
    with pytest.raises(InputFileError) as e:
        fetch_dataset("modelnet10", out, archive=archive)
    assert str(e.value) == (f"{archive}: member {member!r} {problem}; refusing to extract the archive "
                            "(nothing was extracted)")
    assert listing(out) == ["m.zip.sha256" if maker == "zip" else "m.tar.gz.sha256"]
    assert not list(tmp_path.rglob("evil.off"))


@pytest.mark.parametrize("maker,kind,target,what", [
    ("tar", tarfile.SYMTYPE, "../../../../outside", "symlink"),
    ("tar", tarfile.SYMTYPE, "/etc/passwd", "symlink"),
    ("tar", tarfile.LNKTYPE, "../outside.off", "hard link"),
    ("zip", None, "../../../../outside", "symlink"),
])
def test_links_out_of_the_folder_are_refused(tmp_path, maker, kind, target, what):
    name = "ModelNet10/chair/train/link.off"
    archive = (make_zip(tmp_path / "m.zip", MODELNET, links={name: target}) if maker == "zip"
               else make_tgz(tmp_path / "m.tar.gz", MODELNET, links={name: (kind, target)}))
    out = tmp_path / "data"
    with pytest.raises(InputFileError) as e:
        fetch_dataset("modelnet10", out, archive=archive)
    assert str(e.value) == (f"{archive}: member {name!r} is a {what} leading outside the folder (-> {target}); "
                            "refusing to extract the archive (nothing was extracted)")
    assert not (out / "ModelNet10").exists() and not [p for p in out.iterdir() if p.is_dir()]


def test_links_inside_the_folder_and_devices(tmp_path, caplog):
    name = "ModelNet10/chair/train/link.off"
    archive = make_tgz(tmp_path / "m.tar.gz", MODELNET, links={name: (tarfile.SYMTYPE, "chair_0001.off")})
    r = fetch_dataset("modelnet10", tmp_path / "a", archive=archive)
    assert r.shapes == 5 and not (r.folder / "chair/train/link.off").exists()
    assert f"member {name!r} is a symlink (-> chair_0001.off); links are not extracted" in caplog.text
    fifo = make_tgz(tmp_path / "f.tar.gz", MODELNET, links={"ModelNet10/fifo": (tarfile.FIFOTYPE, "")})
    with pytest.raises(InputFileError) as e:
        fetch_dataset("modelnet10", tmp_path / "b", archive=fifo)
    assert str(e.value) == (f"{fifo}: member 'ModelNet10/fifo' is a device, FIFO or sparse file, not a plain file "
                            "or folder; refusing to extract the archive (nothing was extracted)")


@pytest.mark.parametrize("maker", ["zip", "tar"])
def test_decompression_bombs_are_refused_before_extraction(tmp_path, maker, monkeypatch):
    members = {**MODELNET, "ModelNet10/chair/train/bomb.off": bytes(4 << 20)}  # 4 MiB of zeros, ~4 KiB packed
    archive = make_zip(tmp_path / "b.zip", members) if maker == "zip" else make_tgz(tmp_path / "b.tar.gz", members)
    assert archive.stat().st_size < 64 << 10
    out = tmp_path / "data"
    with pytest.raises(TooLargeError) as e:
        fetch_dataset("modelnet10", out, archive=archive, max_bytes=1 << 20)
    assert str(e.value) == (f"{archive}: its members declare more than {1 << 20} bytes uncompressed in all, over "
                            "the limit for this data set (a decompression bomb?); raise it with --max-bytes if the "
                            "archive is genuine")
    monkeypatch.setenv("SHAPES3D_MAX_UNCOMPRESSED", "1M")  # the per-file limit of every compressed input
    with pytest.raises(TooLargeError) as e:
        fetch_dataset("modelnet10", out, archive=archive)
    assert str(e.value) == (f"{archive}: member 'ModelNet10/chair/train/bomb.off' declares {4 << 20} bytes "
                            f"uncompressed, over the limit of {1 << 20} bytes on decompressed input (decompression "
                            "bomb?); raise it with SHAPES3D_MAX_UNCOMPRESSED if the file is genuine")
    assert [p.name for p in out.iterdir()] == [f"{archive.name}.sha256"]  # nothing extracted


@pytest.mark.parametrize("maker", ["zip", "tar"])
def test_too_many_members_are_refused(tmp_path, maker):
    archive = make_zip(tmp_path / "m.zip", MODELNET) if maker == "zip" else make_tgz(tmp_path / "m.tar.gz", MODELNET)
    with pytest.raises(TooLargeError) as e:
        fetch_dataset("modelnet10", tmp_path / "data", archive=archive, max_members=3)
    assert str(e.value) == (f"{archive}: has more than 3 members, over the limit of shapes3d data fetch (an archive "
                            "bomb?); refusing to extract the archive (nothing was extracted)")
    if maker == "zip":  # counted from the end record, before zipfile reads the whole central directory
        from shapes3d.data.archives import _zip_declared_count

        assert _zip_declared_count(archive) == len(MODELNET)


def test_archives_that_are_not_the_set_are_refused(tmp_path):
    page = tmp_path / "page.zip"
    page.write_bytes(b"<!DOCTYPE html><html>Dropbox</html>")
    with pytest.raises(CorruptFileError) as e:
        fetch_dataset("shrec11", tmp_path / "a", archive=page)
    assert str(e.value) == (f"{page}: not a zip or tar archive (it starts with b'<!DOCTYPE html><'); a web page "
                            "instead of the file? check the address, or download the archive by hand and pass "
                            "--archive")
    flat = make_zip(tmp_path / "flat.zip", {"meshes/a.off": OFF, "meshes/b.off": OFF})
    with pytest.raises(InputFileError) as e:
        fetch_dataset("modelnet10", tmp_path / "b", archive=flat)
    assert str(e.value) == (f"{flat}: extracted 2 files, but none sits in <class>/{{train,test}}/ as ModelNet10 "
                            "should; nothing was placed")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["flat.zip.sha256"]


def test_a_truncated_archive_is_a_corrupt_file(tmp_path):
    whole = make_tgz(tmp_path / "whole.tar.gz", {**SHREC, "shrec_16/noise.obj": bytes(range(256)) * 400})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CorruptFileError) as e:
        fetch_dataset("shrec11", tmp_path / "data", archive=cut)
    assert str(e.value).startswith(f"{cut}: damaged or truncated archive (")
    assert str(e.value).endswith("); nothing was extracted; delete it to download it again")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["cut.tar.gz.sha256"]


def test_an_existing_set_is_kept_unless_overwrite(tmp_path, serve):
    archive = make_zip(tmp_path / "m.zip", MODELNET)
    server = serve(archive.read_bytes())
    out = tmp_path / "data"
    (out / "ModelNet10").mkdir(parents=True)
    with pytest.raises(Shapes3DError) as e:
        fetch_dataset("modelnet10", out, url=server.url)
    assert str(e.value) == f"{out / 'ModelNet10'} already exists; remove it or pass --overwrite to replace it"
    assert server.requests == []  # refused before downloading
    r = fetch_dataset("modelnet10", out, url=server.url, overwrite=True, keep_archive=False)
    assert r.archive is None and not (out / "ModelNet10.zip").exists() and r.shapes == 5
    assert sorted(p.name for p in out.iterdir()) == ["ModelNet10", "ModelNet10.zip.sha256"]  # old copy gone


def test_missing_sources_are_clear_errors(tmp_path):
    out = tmp_path / "data"
    gone = tmp_path / "gone.zip"
    with pytest.raises(Shapes3DError) as e:
        fetch_dataset("modelnet40", out, url=gone.as_uri())
    assert str(e.value).startswith(f"cannot download {gone.as_uri()}: ")
    assert str(e.value).endswith("; check the address and the connection, or pass --archive with a copy "
                                 "downloaded by other means")
    with pytest.raises(MissingFileError) as e:
        fetch_dataset("modelnet40", out, archive=gone)
    assert str(e.value) == f"{gone}: archive does not exist"
    with pytest.raises(Shapes3DError) as e:
        fetch_dataset("shapenet", out)
    assert str(e.value) == "unknown data set 'shapenet': expected one of modelnet10, modelnet40, shrec11"
    assert not out.exists()


def test_official_addresses_are_the_ones_documented():
    assert {n: s.url for n, s in DATASETS.items()} == {
        "modelnet10": "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
        "modelnet40": "http://modelnet.cs.princeton.edu/ModelNet40.zip",
        "shrec11": "https://www.dropbox.com/s/w16st84r6wc57u7/shrec_16.tar.gz?dl=1"}
    readme = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    assert all(s.url in readme for s in DATASETS.values())
    assert all(s.sha256 is None for s in DATASETS.values())  # none published: recorded at first download


def test_the_cli_lists_the_sets_and_ceilings_of_the_library():
    from shapes3d.cli.data import FETCH_SETS

    assert FETCH_SETS == {n: f"{s.max_bytes >> 30}G" for n, s in DATASETS.items()}


def test_cli_prints_what_it_wrote(tmp_path, capsys):
    archive = make_tgz(tmp_path / "shrec_16.tar.gz", SHREC)
    out = tmp_path / "data"
    assert main(["-q", "data", "fetch", "shrec11", "--out", str(out), "--url", archive.as_uri()]) == 0
    digest = sha(archive)
    assert capsys.readouterr().out == (
        f"wrote {out / 'SHREC11'}: 12 shapes, 3 classes (train 9, test 3)\n"
        f"sha256 {digest} (no published checksum: recorded in {out / 'shrec_16.tar.gz.sha256'} at this first "
        "download)\n"
        f"archive kept: {out / 'shrec_16.tar.gz'}\n")
    assert main(["-q", "data", "fetch", "shrec11", "--out", str(out), "--archive", str(archive), "--overwrite",
                 "--sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {archive}: SHA-256 {digest} does not match the expected {'0' * 64} (--sha256); nothing "
                   "was extracted. Delete the archive to download it again, or check the mirror\n")
    with pytest.raises(SystemExit) as e:
        main(["data", "fetch", "shrec11", "--out", str(out), "--sha256", "xyz"])
    assert e.value.code == 2 and "argument --sha256: 'xyz' is not a SHA-256 (64 hexadecimal digits)" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["data", "fetch", "shrec11", "--out", str(out), "--max-bytes", "lots"])
    assert e.value.code == 2 and "argument --max-bytes: 'lots' is not a byte count such as 512M, 8G or 1073741824" \
        in capsys.readouterr().err
    assert main(["-q", "data", "fetch", "shrec11", "--out", str(tmp_path / "small"), "--archive", str(archive),
                 "--max-bytes", "512"]) == 2
    assert "over the limit for this data set (a decompression bomb?); raise it with --max-bytes" in \
        capsys.readouterr().err
