"""The code version a result was made by: the git commit of the checkout, else the installed package's version."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return version("llavaction")
