"""Fetch the public datasets the demo needs, checked against pinned checksums, when they are not on disk.

Each archive is downloaded to `<data_dir>/downloads/` (a partial download is kept as `.part` and replaced
atomically when complete), its size and digest are compared with the pinned values, and only the files the
project reads are extracted, under the same layout as `../shared/data`:

    glue/SST-2/train.tsv, glue/SST-2/dev.tsv           from GLUE's SST-2.zip
    corpus/en/wikitext-2-raw.wiki.test.raw             from wikitext-2-raw-v1.zip (wiki.test.raw)

Nothing here runs in the tests against the network: they fetch `file://` URLs of archives they write.
"""
from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from src.infra.files import atomic_output, file_digest


class DownloadError(RuntimeError):
    """A download failed or its checksum did not match (message names the URL, file and digests)."""


@dataclass(frozen=True)
class Archive:
    name: str                        # file name under <data_dir>/downloads/
    urls: Tuple[str, ...]            # tried in order
    digest: Tuple[str, str]          # (algorithm, hex digest) of the archive
    members: Dict[str, str]          # archive member -> path under data_dir
    size: Optional[int] = None       # bytes, when known


ARCHIVES = {
    # GLUE's official SST-2 archive; MD5 as pinned by torchtext's SST2 dataset.
    "sst2": Archive(
        name="SST-2.zip",
        urls=("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",),
        digest=("md5", "9f81648d4199384278b86e315dac217c"),
        members={"SST-2/train.tsv": "glue/SST-2/train.tsv", "SST-2/dev.tsv": "glue/SST-2/dev.tsv"}),
    # WikiText-2 raw (Salesforce). The original S3 home first, then the copy llama.cpp's CI fetches, pinned to
    # a commit; both must give the same bytes (size and SHA-256 below).
    "wikitext2": Archive(
        name="wikitext-2-raw-v1.zip",
        urls=("https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip",
              "https://huggingface.co/datasets/ggml-org/ci/resolve/927b3642933080f1b0e811e2f916e14c292992f9/"
              "wikitext-2-raw-v1.zip"),
        digest=("sha256", "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"),
        size=4721645,
        members={"wikitext-2-raw/wiki.test.raw": "corpus/en/wikitext-2-raw.wiki.test.raw"}),
}


def _fetch(url: str, dest: str, progress: Optional[Callable[[int, Optional[int]], None]]) -> None:
    part = dest + ".part"
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:  # noqa: S310 (pinned URLs)
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        for chunk in iter(lambda: response.read(1 << 16), b""):
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    os.replace(part, dest)


def download_archive(archive: Archive, folder: str,
                     progress: Optional[Callable[[int, Optional[int]], None]] = None) -> str:
    """The checked archive in `folder` (downloaded if absent or wrong); raises DownloadError listing each failure."""
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, archive.name)
    algorithm, expected = archive.digest
    if os.path.isfile(dest) and file_digest(dest, algorithm) == expected:
        return dest
    failures = []
    for url in archive.urls:
        try:
            _fetch(url, dest, progress)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        size = os.path.getsize(dest)
        got = file_digest(dest, algorithm)
        if got == expected and (archive.size is None or size == archive.size):
            return dest
        failures.append(f"{url}: {algorithm} {got} ({size} bytes), expected {expected}"
                        + (f" ({archive.size} bytes)" if archive.size else ""))
        os.replace(dest, dest + ".bad")  # kept for inspection, never used
    raise DownloadError(f"could not get {archive.name}:\n  " + "\n  ".join(failures))


def extract_members(archive: Archive, path: str, data_dir: str) -> Sequence[str]:
    """Extract the members the project reads to their places under data_dir (atomically); returns the paths."""
    written = []
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for member, target in archive.members.items():
            if member not in names:
                raise DownloadError(f"{path}: has no member {member} (holds {sorted(names)[:8]} ...)")
            out = os.path.join(data_dir, target)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with zf.open(member) as src, atomic_output(out, binary=True) as dst:
                shutil.copyfileobj(src, dst)
            written.append(out)
    return written


def ensure_dataset(key: str, data_dir: str, archives: Optional[Dict[str, Archive]] = None,
                   progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Sequence[str]:
    """The dataset's files under data_dir: present ones are used as they are, missing ones are fetched."""
    archive = (archives or ARCHIVES)[key]
    targets = [os.path.join(data_dir, t) for t in archive.members.values()]
    if all(os.path.isfile(t) for t in targets):
        return targets
    path = download_archive(archive, os.path.join(data_dir, "downloads"), progress)
    return extract_members(archive, path, data_dir)
