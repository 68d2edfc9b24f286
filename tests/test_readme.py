"""The README's commands and usage example run as written."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anynet
from conftest import EXTENSIONS_DISABLED

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(anynet.__file__)))


def test_usage_example_runs_and_prints_the_echoes():
    (example,) = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=PACKAGE_PARENT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\nb'\\x00\\x01'\n"


def test_the_main_job_runs_the_installed_command_on_the_compiled_core():
    (main_job,) = re.findall(r"The main job:.*?```\n(.*?)\n```", README, re.DOTALL)
    assert main_job == "pip install . && anynet bench"
    # The command is the console script that pyproject.toml declares.
    assert re.search(r'\[project\.scripts\]\nanynet = "anynet\._cli:main"\n', (ROOT / "pyproject.toml").read_text())
    # Where anynet is installed (CI) its script is beside the interpreter and
    # runs as written; in a development tree, its entry point runs the same way.
    script = shutil.which("anynet", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-c", "import sys, anynet._cli; sys.exit(anynet._cli.main())"]
    result = subprocess.run(
        [*command, "bench"], cwd=PACKAGE_PARENT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "20000 messages echoed and checked" in result.stdout
    assert ("python core" if EXTENSIONS_DISABLED else "compiled core") in result.stdout
