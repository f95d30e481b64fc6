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


def load_recipe(corpus: str):
    """Import ``recipes/<corpus>/run.py`` as a module (recipes are scripts, not a package)."""
    import importlib.util
    import sys

    name = f"recipe_{corpus}"
    path = Path(__file__).resolve().parents[1] / "recipes" / corpus / "run.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
