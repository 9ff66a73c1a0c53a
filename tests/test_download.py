"""Dataset download for the demo: checksums, fallback URLs, atomic extraction (file:// URLs, no network)."""
import hashlib
import os
import zipfile

import pytest

from src.infra.download import ARCHIVES, Archive, DownloadError, download_archive, ensure_dataset
from src.infra.files import file_digest


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def archive_for(zip_path, urls, algorithm="sha256", digest=None, size=None):
    with open(zip_path, "rb") as f:
        data = f.read()
    return Archive(name="SST-2.zip", urls=tuple(urls), size=size,
                   digest=(algorithm, digest or hashlib.new(algorithm, data).hexdigest()),
                   members={"SST-2/train.tsv": "glue/SST-2/train.tsv", "SST-2/dev.tsv": "glue/SST-2/dev.tsv"})


SST2 = {"SST-2/train.tsv": "sentence\tlabel\ngood film\t1\n", "SST-2/dev.tsv": "sentence\tlabel\nbad film\t0\n",
        "SST-2/test.tsv": "index\tsentence\n0\tok\n"}


def test_pinned_archives_name_the_files_the_demo_reads():
    assert ARCHIVES["sst2"].digest == ("md5", "9f81648d4199384278b86e315dac217c")
    assert ARCHIVES["wikitext2"].size == 4721645 and ARCHIVES["wikitext2"].digest[0] == "sha256"
    assert set(ARCHIVES["sst2"].members.values()) == {"glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"}
    assert list(ARCHIVES["wikitext2"].members.values()) == ["corpus/en/wikitext-2-raw.wiki.test.raw"]


def test_download_checks_the_digest_and_extracts_only_what_is_read(tmp_path):
    src = make_zip(tmp_path / "src.zip", SST2)
    archive = archive_for(src, [src.as_uri()], algorithm="md5")
    data_dir = tmp_path / "data"
    seen = []
    paths = ensure_dataset("sst2", str(data_dir), {"sst2": archive}, progress=lambda done, total: seen.append(done))
    assert [os.path.relpath(p, data_dir) for p in paths] == ["glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"]
    assert (data_dir / "glue/SST-2/dev.tsv").read_text() == SST2["SST-2/dev.tsv"]
    assert not (data_dir / "glue/SST-2/test.tsv").exists()
    assert seen and seen[-1] == os.path.getsize(src)
    assert file_digest(str(data_dir / "downloads/SST-2.zip"), "md5") == archive.digest[1]
    assert not list(data_dir.rglob("*.part"))


def test_existing_files_are_used_without_downloading(tmp_path):
    data_dir = tmp_path / "data"
    for rel in ("glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"):
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_text("mine\n")
    archive = archive_for(make_zip(tmp_path / "src.zip", SST2), ["file:///nonexistent/SST-2.zip"])
    ensure_dataset("sst2", str(data_dir), {"sst2": archive})
    assert (data_dir / "glue/SST-2/dev.tsv").read_text() == "mine\n"


def test_a_wrong_checksum_is_refused_and_the_next_url_tried(tmp_path):
    good = make_zip(tmp_path / "good.zip", SST2)
    bad = make_zip(tmp_path / "bad.zip", {**SST2, "SST-2/dev.tsv": "tampered\n"})
    archive = archive_for(good, [bad.as_uri(), good.as_uri()])
    paths = ensure_dataset("sst2", str(tmp_path / "data"), {"sst2": archive})
    with open(paths[1], encoding="utf-8") as f:
        assert f.read() == SST2["SST-2/dev.tsv"]
    assert (tmp_path / "data/downloads/SST-2.zip.bad").exists()  # the mismatching download is kept aside


def test_every_url_failing_names_each_failure(tmp_path):
    good = make_zip(tmp_path / "good.zip", SST2)
    bad = make_zip(tmp_path / "bad.zip", {"x": "y"})
    archive = archive_for(good, ["file:///nonexistent/SST-2.zip", bad.as_uri()], size=os.path.getsize(good))
    with pytest.raises(DownloadError) as info:
        download_archive(archive, str(tmp_path / "dl"))
    message = str(info.value)
    assert "could not get SST-2.zip" in message and "/nonexistent/SST-2.zip" in message
    assert f"expected {archive.digest[1]} ({os.path.getsize(good)} bytes)" in message


def test_an_archive_without_the_member_is_an_error(tmp_path):
    src = make_zip(tmp_path / "src.zip", {"SST-2/train.tsv": "a\n"})
    archive = archive_for(src, [src.as_uri()])
    with pytest.raises(DownloadError, match="has no member SST-2/dev.tsv"):
        ensure_dataset("sst2", str(tmp_path / "data"), {"sst2": archive})
