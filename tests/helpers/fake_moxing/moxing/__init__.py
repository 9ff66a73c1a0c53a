"""A stand-in for ModelArts' moxing (tests only; the real one exists only in ModelArts images).

mox.file.copy_parallel(src_url, dst_url) copies folders, with obs://bucket/... mapped to FAKE_OBS_ROOT/bucket/...,
and appends {"src": ..., "dst": ...} to FAKE_MOXING_LOG (one JSON line per call). A missing source raises, as
an absent OBS folder does."""
import json
import os
import shutil
import types


def _local(url):
    if url.startswith("obs://"):
        return os.path.join(os.environ["FAKE_OBS_ROOT"], url[len("obs://"):])
    return url


def copy_parallel(src_url, dst_url):
    with open(os.environ["FAKE_MOXING_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"src": src_url, "dst": dst_url}) + "\n")
    src, dst = _local(src_url), _local(dst_url)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"moxing: {src_url} does not exist")
    shutil.copytree(src, dst, dirs_exist_ok=True)


file = types.SimpleNamespace(copy_parallel=copy_parallel)  # pylint: disable=redefined-builtin
