"""The README's Python snippets run as printed and print what the README says they print."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
SNIPPETS = re.findall(r'\.venv/bin/python -c "\n(.*?)\n"\n```\n\nwhich prints `([^`]*)`', README, re.S)


def test_readme_has_the_two_commands_first():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["bash scripts/quickstart.sh", ".venv/bin/python -m pytest"]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "bash scripts/quickstart.sh" in ci and ".venv/bin/python -m pytest" in ci


def test_readme_snippets_were_found():
    assert len(SNIPPETS) == 2


@pytest.mark.slow
@pytest.mark.parametrize("code,expected", SNIPPETS, ids=["build_tinybert", "load_minilm"])
def test_readme_snippet_runs_as_printed(code, expected, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == expected


def test_readme_config_command_runs():
    command = re.search(r"\.venv/bin/python (-m src\.config [^\n]*)", README).group(1).split()
    run = subprocess.run([sys.executable] + command, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "lr: 3.0e-05" in run.stdout and "hidden_size: 384" in run.stdout
