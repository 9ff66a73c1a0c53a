"""A run directory has one trainer at a time, and what an interrupted one left is cleaned (src/training/manifest.py):
the lock held by another process, the temporary files of a save cut short, metrics rows of steps done again."""
import json
import os
import subprocess
import sys

import pytest

from src.training.manifest import (RunDirError, lock_run_dir, prepare_run_dir, truncate_metrics,
                                   unlock_run_dir)
from conftest import ROOT

HOLD = ("import sys; sys.path.insert(0, sys.argv[1]); from src.training.manifest import lock_run_dir; "
        "lock_run_dir(sys.argv[2]); print('locked', flush=True); sys.stdin.read()")


def test_a_run_directory_another_process_trains_in_is_refused_with_its_pid(tmp_path):
    run_dir = tmp_path / "phase1"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, ROOT, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"{run_dir} is in use by another training process \(pid "
                                              rf"{holder.pid}\)"):
            lock_run_dir(str(run_dir))
        with pytest.raises(RunDirError, match="in use by another training process"):
            prepare_run_dir(str(run_dir), {"a": 1})  # the stages' entry point checks it before anything else
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # the holder is gone (as after kill -9: the kernel drops the lock): the directory is free
    lock_run_dir(str(run_dir))
    lock_run_dir(str(run_dir))  # this process holds it already: a no-op
    unlock_run_dir(str(run_dir))


def test_a_run_directory_with_another_config_is_refused_with_the_keys_and_the_ways_on(tmp_path):
    """E.g. a GD run started before gd_config.yaml's student_init default changed: the command names the key and
    both ways on (--overwrite, or --resume with the run's own config), and the run directory is left as it was."""
    from src.training.manifest import Manifest
    run_dir = tmp_path / "gd"
    run_dir.mkdir()
    Manifest(stage="gd", config={"checkpoint": {"student_init": "random"}}, started_from={}).write(str(run_dir))
    before = (run_dir / "manifest.json").read_text()
    with pytest.raises(RunDirError) as err:
        prepare_run_dir(str(run_dir), {"checkpoint": {"student_init": "teacher_selected"}})
    assert str(err.value) == (f"{run_dir} holds a run with a different config:\n"
                              f"  checkpoint.student_init: 'random' -> 'teacher_selected'\n"
                              f"use another run.output_dir, --overwrite to start this stage again, "
                              f"or --resume {run_dir} to go on with the config that run was started with")
    assert (run_dir / "manifest.json").read_text() == before
    unlock_run_dir(str(run_dir))
    assert prepare_run_dir(str(run_dir), {"checkpoint": {"student_init": "random"}}).stage == "gd"  # same config
    unlock_run_dir(str(run_dir))


def test_temporary_files_of_an_interrupted_save_are_removed_and_nothing_else(tmp_path, caplog):
    run_dir = tmp_path / "gd"
    (run_dir / "checkpoints").mkdir(parents=True)
    stale = [run_dir / "state.ckpt.tmp-4242-4243.ckpt", run_dir / "manifest.json.tmp-4242-4243",
             run_dir / "checkpoints" / "step_00000300.ckpt.tmp-1-2.ckpt"]
    kept = [run_dir / "state.ckpt", run_dir / "last.ckpt", run_dir / "metrics.jsonl",
            run_dir / "checkpoints" / "step_00000200.ckpt", run_dir / "notes.tmp.txt"]
    for path in stale + kept:
        path.write_bytes(b"x" * 10)
    lock_run_dir(str(run_dir))
    try:
        assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
        assert "removed state.ckpt.tmp-4242-4243.ckpt, left by an interrupted save" in caplog.text
    finally:
        unlock_run_dir(str(run_dir))


def test_metrics_after_the_resumed_step_are_dropped_once(tmp_path):
    rows = [{"type": "train", "step": s} for s in (2, 4, 6, 8)] + [{"type": "eval", "step": 6}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"type": "train", "st', encoding="utf-8")
    assert truncate_metrics(str(tmp_path), 6) == 2  # step 8 and the row the kill cut short
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [2, 4, 6, 6]
    assert truncate_metrics(str(tmp_path), 6) == 0
    assert truncate_metrics(str(tmp_path), 0) == 4  # a fresh start keeps none
    assert path.read_text() == "" and truncate_metrics(str(tmp_path / "none"), 0) == 0
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
