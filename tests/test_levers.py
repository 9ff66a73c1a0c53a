"""run.cpu_gelu chosen per machine (src/infra/levers.py): the decision rule, the per-machine cache (written, read
back without measuring, keyed by the machine, rewritten when corrupt), forced values, the fallbacks, the data-parallel
rule, the command line, and one real measurement on tiny shapes. Every test uses a cache file in tmp_path."""
import datetime
import json
import logging
import os
import runpy
import sys

import mindspore as ms
import pytest

from src.config import RunConfig
from src.infra import aot, levers
from src.infra.backend import Backend


class FakeMeasure:
    """Stands for levers.measure_gelu: fixed times, counts its calls."""

    def __init__(self, aot_ms=2.0, builtin_ms=1.0):
        self.aot_ms, self.builtin_ms, self.calls = aot_ms, builtin_ms, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return {"aot_ms": self.aot_ms, "builtin_ms": self.builtin_ms, "shapes": [[4, 8]], "rounds": 1}


def never(*args, **kwargs):
    raise AssertionError("nothing may be measured here")


@pytest.fixture(scope="module")
def kernels():
    """The AOT kernels, built (CI has g++): the machine key holds their build hash."""
    assert aot.gelu_ops(strict=True) is not None
    return aot.library_hash()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A lever cache of this test's own; the process's decisions and warnings forgotten before and after."""
    path = tmp_path / "cache" / "levers.json"
    monkeypatch.setenv(levers.CACHE_ENV, str(path))
    levers.reset()
    yield path
    levers.reset()


def seed(monkeypatch, aot_ms, builtin_ms):
    """Measure once with fixed times (fills the cache), then forget the process's decision."""
    fake = FakeMeasure(aot_ms, builtin_ms)
    monkeypatch.setattr(levers, "measure_gelu", fake)
    levers.cpu_gelu("auto", kernels=True)
    levers.reset()
    return fake


def test_the_faster_side_wins_and_a_near_tie_keeps_aot(cache, monkeypatch, kernels):
    assert levers.choose(10.0, 8.0) == "builtin"
    assert levers.choose(10.0, 9.6) == "builtin"  # 4% faster
    assert levers.choose(10.0, 9.8) == "aot"  # 2% faster: a near tie keeps aot (exact, less memory)
    assert levers.choose(10.0, 12.0) == "aot"
    # measure_gelu with a fake timer: warm-up untimed, sides interleaved (order alternating), median per side
    now, calls = [0.0], []

    def side(name, ms_per_shape):
        def run(i):
            calls.append((name, i))
            slow = 50.0 if name == "builtin" and len(calls) == 9 else 1.0  # one disturbed call: the median ignores it
            now[0] += ms_per_shape[i] * slow / 1e3
        return run

    got = levers.measure_gelu(shapes=((4, 8), (2, 16)), rounds=5, clock=lambda: now[0],
                              sides={"aot": side("aot", [1.0, 2.0]), "builtin": side("builtin", [0.5, 1.0])})
    assert calls[:4] == [("aot", 0), ("aot", 1), ("builtin", 0), ("builtin", 1)]  # compiling calls
    assert calls[4:12] == [("aot", 0), ("builtin", 0), ("builtin", 1), ("aot", 1),
                           ("builtin", 0), ("aot", 0), ("aot", 1), ("builtin", 1)]
    assert len(calls) == 4 + 5 * 4
    assert got["aot_ms"] == pytest.approx(3.0) and got["builtin_ms"] == pytest.approx(1.5)
    assert max(got["rounds_ms"]["builtin"]) > 20 and got["rounds"] == 5 and got["shapes"] == [[4, 8], [2, 16]]
    # through the decision: builtin 3% ahead or less keeps aot, and the log says so
    monkeypatch.setattr(levers, "measure_gelu", FakeMeasure(aot_ms=10.0, builtin_ms=9.8))
    choice = levers.cpu_gelu("auto", kernels=True)
    assert choice.gelu == "aot" and "within 3%: aot kept" in choice.describe()


def test_the_decision_is_cached_and_read_back_without_measuring(cache, monkeypatch, caplog, kernels):
    fake = FakeMeasure(aot_ms=2.0, builtin_ms=1.0)
    monkeypatch.setattr(levers, "measure_gelu", fake)
    with caplog.at_level(logging.INFO, logger="src.infra.levers"):
        first = levers.cpu_gelu("auto", kernels=True)
        assert levers.cpu_gelu("auto", kernels=True) is first  # once per process
    assert first.gelu == "builtin" and first.source == "measured" and fake.calls == 1
    today = datetime.date.today().isoformat()
    decisions = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run.cpu_gelu auto ->")]
    assert decisions == [f"run.cpu_gelu auto -> builtin (measured on this machine {today}: aot 2.00 ms, builtin "
                         f"1.00 ms; cached in {cache})"]
    data = json.loads(cache.read_text(encoding="utf-8"))
    key = levers.machine_key()
    assert list(data["machines"]) == [key]
    entry = data["machines"][key]["cpu_gelu"]
    assert (entry["decision"], entry["aot_ms"], entry["builtin_ms"], entry["date"]) == ("builtin", 2.0, 1.0, today)
    info = data["machines"][key]["machine"]
    assert info["cores"] == len(os.sched_getaffinity(0)) and info["mindspore"] == ms.__version__
    assert info["kernel"] == kernels and set(info["isa"]) <= set(levers.ISA_FLAGS) and info["cpu"] in key
    assert not [p for p in cache.parent.iterdir() if p.name != "levers.json"]  # written atomically, nothing left
    # a new process (the memo forgotten): the file answers, nothing is measured
    levers.reset()
    second = levers.cpu_gelu("auto", kernels=True)
    assert (second.gelu, second.source, fake.calls) == ("builtin", "cache", 1)
    assert f"cached for this machine, measured {today}: aot 2.00 ms, builtin 1.00 ms; {cache}" in second.describe()


def test_another_machine_is_measured_again_and_both_are_kept(cache, monkeypatch, kernels):
    first = seed(monkeypatch, aot_ms=2.0, builtin_ms=1.0)
    here = levers.machine()
    other = dict(here, cpu="AMD Ryzen 9 7950X 16-Core Processor", isa=["avx2", "avx512f", "avx512_bf16"], cores=32)
    monkeypatch.setattr(levers, "machine", lambda: other)
    fake = FakeMeasure(aot_ms=1.0, builtin_ms=2.0)
    monkeypatch.setattr(levers, "measure_gelu", fake)
    assert levers.cpu_gelu("auto", kernels=True).gelu == "aot" and fake.calls == 1 and first.calls == 1
    machines = json.loads(cache.read_text(encoding="utf-8"))["machines"]
    assert {k: v["cpu_gelu"]["decision"] for k, v in machines.items()} == {levers.machine_key(here): "builtin",
                                                                            levers.machine_key(other): "aot"}
    assert "isa avx2+avx512f+avx512_bf16 | 32 cores" in levers.machine_key(other)


def test_a_corrupt_cache_warns_once_and_is_measured_again_and_rewritten(cache, monkeypatch, caplog, kernels):
    fake = FakeMeasure(aot_ms=2.0, builtin_ms=1.0)
    monkeypatch.setattr(levers, "measure_gelu", fake)
    cache.parent.mkdir(parents=True)
    cache.write_text('{"machines": {"trunc', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="src.infra.levers"):
        choice = levers.cpu_gelu("auto", kernels=True)
    assert choice.gelu == "builtin" and fake.calls == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be read" in warnings[0] and str(cache) in warnings[0]
    key = levers.machine_key()
    assert json.loads(cache.read_text(encoding="utf-8"))["machines"][key]["cpu_gelu"]["decision"] == "builtin"
    # valid JSON, but not a cache / an invalid entry: the same
    for text, says in (("[1, 2]", "not a lever cache"),
                       (json.dumps({"machines": {key: {"cpu_gelu": {"decision": "fast", "aot_ms": 1}}}}), "invalid")):
        cache.write_text(text, encoding="utf-8")
        levers.reset()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="src.infra.levers"):
            assert levers.cpu_gelu("auto", kernels=True).source == "measured"
        assert [says in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [True]
        assert json.loads(cache.read_text(encoding="utf-8"))["machines"][key]["cpu_gelu"]["decision"] == "builtin"
    # a cache that can be neither read nor written (a folder in its place): training still gets a decision
    cache.unlink()
    cache.mkdir()
    levers.reset()
    choice = levers.cpu_gelu("auto", kernels=True)
    assert choice.gelu == "builtin" and "not cached" in choice.describe() and fake.calls == 4


def test_forced_values_never_measure_nor_read_the_cache(cache, monkeypatch, caplog):
    monkeypatch.setattr(levers, "measure_gelu", never)
    monkeypatch.setattr(levers, "machine", never)
    with caplog.at_level(logging.INFO, logger="src.infra.levers"):
        for requested in ("aot", "builtin"):
            for distributed in (False, True):
                choice = levers.cpu_gelu(requested, kernels=True, distributed=distributed)
                assert (choice.gelu, choice.source) == (requested, "config")
    assert "run.cpu_gelu aot (forced in the config)" in caplog.text
    assert "run.cpu_gelu builtin (forced in the config)" in caplog.text
    fallback = levers.cpu_gelu("aot", kernels=False)
    assert fallback.gelu == "builtin" and fallback.describe().startswith("run.cpu_gelu aot -> builtin (forced")
    assert levers.cpu_gelu("builtin", kernels=False).gelu == "builtin"
    with pytest.raises(ValueError, match="run.cpu_gelu: got 'fast'"):
        levers.cpu_gelu("fast", kernels=True)
    assert not cache.exists()


def test_auto_without_the_kernels_is_builtin_without_measuring(cache, monkeypatch):
    monkeypatch.setattr(levers, "measure_gelu", never)
    monkeypatch.setattr(levers, "machine", never)
    for distributed in (False, True):
        choice = levers.cpu_gelu("auto", kernels=False, distributed=distributed)
        assert (choice.gelu, choice.source) == ("builtin", "no kernels")
    assert not cache.exists()


def test_data_parallel_auto_is_aot_on_every_rank_whatever_the_cache_says(cache, monkeypatch, kernels):
    seed(monkeypatch, aot_ms=2.0, builtin_ms=1.0)  # this machine's cache says builtin
    monkeypatch.setattr(levers, "measure_gelu", never)
    monkeypatch.setattr(levers, "machine", never)  # not even looked up: the cache is not read
    choice = levers.cpu_gelu("auto", kernels=True, distributed=True)
    assert (choice.gelu, choice.source) == ("aot", "data parallel") and "all ranks agree" in choice.describe()
    assert Backend.for_training(RunConfig(), "CPU", distributed=True) == Backend(gelu="aot", heads="swap", layer_norm="aot")
    # forced in the config (the same file on every rank): honoured in data parallel too
    assert Backend.for_training(RunConfig(cpu_gelu="builtin"), "CPU", distributed=True).gelu == "builtin"


def test_the_training_backend_takes_the_cached_decision_on_cpu_only(cache, monkeypatch, caplog, kernels):
    seed(monkeypatch, aot_ms=2.0, builtin_ms=1.0)
    monkeypatch.setattr(levers, "measure_gelu", never)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="src.infra.levers"):
        assert Backend.for_training(RunConfig(), "CPU") == Backend(gelu="builtin", heads="swap", layer_norm="aot",
                                                                   host_update=True)
        assert Backend.for_training(RunConfig(), "CPU").gelu == "builtin"  # every stage of the process
        assert Backend.for_training(RunConfig(cpu_gelu="aot"), "CPU").gelu == "aot"
        assert Backend.for_training(RunConfig(), "GPU") == Backend()  # GPU / Ascend: nothing measured or read
        assert Backend.for_training(RunConfig(), "Ascend") == Backend(compute_dtype="float16")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run.cpu_gelu")]
    assert len(lines) == 2 and lines[0].startswith("run.cpu_gelu auto -> builtin (cached for this machine")
    assert lines[1] == "run.cpu_gelu aot (forced in the config)"


@pytest.mark.filterwarnings("ignore:'src.infra.levers' found in sys.modules:RuntimeWarning")  # runpy, already imported
def test_the_command_line_prints_the_key_and_the_decisions_and_remeasures(cache, monkeypatch, capsys, kernels):
    assert levers.main([]) == 0
    out = capsys.readouterr().out
    key = levers.machine_key()
    assert f"lever cache: {cache}" in out and f"machine key: {key}" in out and "not measured yet" in out
    seed(monkeypatch, aot_ms=2.0, builtin_ms=1.0)
    assert levers.main([]) == 0
    out = capsys.readouterr().out
    assert f"machine key: {key}\n" in out
    assert "cpu_gelu (auto) on this machine: builtin (measured " in out and "aot 2.00 ms, builtin 1.00 ms" in out
    fake = FakeMeasure(aot_ms=1.0, builtin_ms=3.0)
    monkeypatch.setattr(levers, "measure_gelu", fake)
    assert levers.main(["--remeasure"]) == 0 and fake.calls == 1
    out = capsys.readouterr().out
    assert "cpu_gelu (auto) on this machine: aot (measured" in out and f"written to {cache}" in out
    assert json.loads(cache.read_text(encoding="utf-8"))["machines"][key]["cpu_gelu"]["decision"] == "aot"
    # `python -m src.infra.levers` (run in this process: a new one would spend seconds importing MindSpore)
    monkeypatch.setattr(sys, "argv", ["levers"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("src.infra.levers", run_name="__main__")
    out = capsys.readouterr().out
    assert done.value.code == 0 and f"machine key: {key}\n" in out and "on this machine: aot (measured" in out


def test_the_real_measurement_on_tiny_shapes(kernels, _lever_cache):
    """The real kernels, GRAPH_MODE, two tiny shapes, three rounds (a second or two); the mode is restored."""
    got = levers.measure_gelu(shapes=((64, 96), (32, 48)), rounds=3)
    assert got["aot_ms"] > 0 and got["builtin_ms"] > 0
    assert all(len(got["rounds_ms"][side]) == 3 and min(got["rounds_ms"][side]) > 0 for side in levers.SIDES)
    assert levers.choose(got["aot_ms"], got["builtin_ms"]) in levers.SIDES
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
    if _lever_cache is not None:  # the suite never uses the user's ~/.cache file (tests/conftest.py)
        assert levers.cache_path() == _lever_cache
