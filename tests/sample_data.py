"""Real sample data the tests need, obtained by the project's own scripts (never committed)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.settings import REPO_ROOT


def fetched(script: str, what: str) -> Path:
    """Run a fetch script (path relative to the repo) and return the path it prints."""
    try:
        out = subprocess.run(["bash", str(REPO_ROOT / script)], check=True, capture_output=True, text=True,
                             timeout=300).stdout.strip()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"could not get {what} with {script}: {e}")
    return Path(out)


def footage_path() -> Path:
    return fetched("infra/local/footage.sh", "the real footage")


def face_samples_dir() -> Path:
    return fetched("infra/models/fetch_face_samples.sh", "the sample face images")
