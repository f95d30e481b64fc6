"""Fixtures shared by the tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from asr.errors import DataError

_CORPORA: list[Path] = []
EXIT_NO_CORPORA = 4     # pytest's own code for a usage error: nothing was tested


@pytest.hookimpl(trylast=True)      # after -k and -m have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """Find the real corpora once, before any test runs, if a selected test needs them.

    ``asr.data.corpora.find_corpora``: ``$ASR_SHARED_DATA``, else ``shared/data`` beside
    the repository, else a verified download into the user cache. When none works the run
    stops here with one message saying what to set, instead of failing test after test.
    """
    if config.option.collectonly or not any(
            "shared_data" in getattr(item, "fixturenames", ()) for item in items):
        return
    from asr.data.corpora import find_corpora

    try:
        _CORPORA.append(find_corpora(progress=False))
    except DataError as exc:
        pytest.exit(f"no test corpora: {' '.join(str(exc).split())}", returncode=EXIT_NO_CORPORA)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real corpora, a folder holding ``yesno/waves_yesno/`` and ``fsdd/recordings/``."""
    if not _CORPORA:       # collected without the hook (e.g. a plugin re-ordering items)
        from asr.data.corpora import find_corpora
        _CORPORA.append(find_corpora(progress=False))
    return _CORPORA[0]


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


SYNTH_SOTU = Path(__file__).resolve().parents[2] / "shared" / "tools" / "synth-sotu"


@pytest.fixture(scope="session")
def sotu_slice(tmp_path_factory) -> Path:
    """synth-sotu's 3-speaker slice (270 utterances: train, dev, test), built once per run;
    the folder holding ``LibriSpeech/``. Skips where espeak-ng, sox or the tool is missing."""
    import shutil
    import subprocess

    if not SYNTH_SOTU.is_file() or not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("needs espeak-ng and sox (apt-get install -y espeak-ng sox) and "
                    "shared/tools/synth-sotu")
    out = tmp_path_factory.mktemp("sotu_slice")
    subprocess.run([str(SYNTH_SOTU), str(out), "--max-speakers", "3"], check=True,
                   capture_output=True, timeout=300)
    return out
