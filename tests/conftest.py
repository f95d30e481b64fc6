"""Fixtures shared by the tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real corpora (yesno/, fsdd/): ``$ASR_SHARED_DATA``, else ``shared/data`` beside the repo."""
    if "ASR_SHARED_DATA" in os.environ:
        return Path(os.environ["ASR_SHARED_DATA"])
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"
