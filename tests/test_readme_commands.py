"""Every command in README.md and README_CN.md names a file that exists, flags that script accepts, and config
keys that the schema has; every repository path the README mentions exists. So the docs cannot rot."""
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from src.config import ConfigError, GDConfig, TDConfig, _apply_override

READMES = ["README.md", "README_CN.md"]
SCRIPT = re.compile(r"^(?:\S*python3?|bash)\s+(?:-m\s+\S+\s+)?(\S+\.(?:py|sh))(.*)$")
# Paths under these prefixes are made by the user or a command (outputs), not shipped in the repository.
GENERATED = ("runs/", "data/", "deploy/", "logs/", "out/", "/path/", "../shared/", ".venv", "msrun_log",
             "ascend310_infer/out/")


def commands(readme):
    """Shell commands of the ```bash blocks, continuation lines joined, comments dropped."""
    text = open(os.path.join(ROOT, readme), encoding="utf-8").read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    # Inline commands such as `python scripts/convert_checkpoint.py hf --input DIR ...` in tables and text.
    out += re.findall(r"`((?:\.venv/bin/)?python3? [^`]+)`", text)
    return out


def script_calls(readme):
    calls = []
    for line in commands(readme):
        for part in re.split(r"\s*(?:\|\||&&|\|)\s*", line):
            match = SCRIPT.match(part.strip())
            if match and "msrun" not in part.split()[0]:
                calls.append((match.group(1), match.group(2)))
    return calls


@functools.lru_cache(maxsize=None)
def help_text(script):
    if script.endswith(".sh"):
        return open(os.path.join(ROOT, script), encoding="utf-8").read()
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} --help failed: {proc.stderr[-1500:]}"
    return proc.stdout


def config_kind(script, args):
    if "run_general_distill" in script:
        return GDConfig
    if "run_task_distill" in script or "sst2_minilm" in script:
        return TDConfig
    config = next((a for a in args if a.endswith(".yaml")), "")
    return GDConfig if "gd_config" in config else TDConfig


def check_flags(script, rest):
    try:
        args = shlex.split(rest)
    except ValueError:
        args = rest.split()
    problems = []
    for arg in args:
        if not arg.startswith("--"):
            continue
        name = arg.split("=", 1)[0]
        if "." in name and "=" in arg:  # a config override
            try:
                _apply_override({}, arg, config_kind(script, args))
            except ConfigError as err:
                problems.append(f"{script}: {arg}: {err}")
        elif script.endswith(".py") and not re.search(re.escape(name) + r"(?![\w-])", help_text(script)):
            problems.append(f"{script}: flag {name} is not in its --help")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("readme", READMES)
def test_every_command_names_an_existing_script_and_real_flags(readme):
    calls = script_calls(readme)
    assert len(calls) > 15, calls
    problems = []
    for script, rest in calls:
        if not os.path.isfile(os.path.join(ROOT, script)):
            problems.append(f"{script}: no such file in the repository")
            continue
        problems += check_flags(script, rest)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("readme", READMES)
def test_every_repository_path_in_the_readme_exists(readme):
    text = open(os.path.join(ROOT, readme), encoding="utf-8").read()
    candidates = set(re.findall(r"`((?:src|scripts|tests|bench|td_config|ascend310_infer)/[\w./{},-]+)`", text))
    # (not a path inside another one, such as ../shared/bench/torch_reference.py)
    candidates |= set(re.findall(r"(?<![\w./-])((?:src|scripts|bench|td_config)/[\w-]+\.(?:py|sh|yaml))\b", text))
    missing = []
    for path in sorted(candidates):
        if path.startswith(GENERATED) or "*" in path or "<" in path:
            continue
        expanded = [path]
        brace = re.search(r"\{([^}]*)\}", path)
        if brace:
            expanded = [path[:brace.start()] + p + path[brace.end():] for p in brace.group(1).split(",")]
        # Files of the C++ program are also named relative to ascend310_infer/ ("src/main.cc").
        missing += [p for p in expanded if not any(os.path.exists(os.path.join(ROOT, base, p.rstrip("/")))
                                                   for base in ("", "ascend310_infer"))]
    assert not missing, missing


def test_tree_lists_exactly_the_tracked_top_level():
    """The file tree in README.md lists every tracked top-level entry and nothing else."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    tree = re.search(r"## Script and file description\n\n```\n(.*?)```", text, re.S).group(1)
    listed = set()
    for line in tree.splitlines():
        match = re.match(r"^[├└]── ([^#]+?)\s*(#.*)?$", line)
        if match:
            for name in match.group(1).split(","):
                listed.add(name.strip().rstrip("/"))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    top = {path.split("/")[0] for path in tracked}
    top.discard(".gitignore")
    top = {t if t != ".ci" else ".ci/run" for t in top}
    assert listed == top, (sorted(listed - top), sorted(top - listed))
