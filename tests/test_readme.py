"""The README's usage example runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import anynet

README = Path(__file__).resolve().parent.parent / "README.md"
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(anynet.__file__)))


def test_usage_example_runs_and_prints_the_echoes():
    (example,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=PACKAGE_PARENT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\nb'\\x00\\x01'\n"
