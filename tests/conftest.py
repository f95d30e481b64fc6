"""Fixtures shared by the tests."""
from __future__ import annotations

from contextlib import contextmanager
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


def train_fsdd_chain(shared_data: Path, root: Path, train_strings: int, test_strings: int,
                     heldout_speaker: str | None = None, mllt_iters=(2, 4, 6)) -> dict:
    """mono -> tri -> tri2b on connected FSDD digits (seed 0), as the tri2b and tri3b tests
    start: the data dirs, raw and processed features, lexicon, settings and systems."""
    import dataclasses

    from asr.data import DataDir, prepare_fsdd_connected
    from asr.decoder import DecoderConfig
    from asr.features import FeatureConfig, apply_pipeline, compute_archive_in_memory
    from asr.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt
    from asr.gmm.systems import HmmConfig, train_monophone, train_triphone
    from asr.gmm.train import GmmTrainConfig
    from asr.lexicon import Lexicon
    from asr.training import Utterance

    extra = {"heldout_speaker": heldout_speaker} if heldout_speaker else {}
    prepare_fsdd_connected(shared_data / "fsdd", root / "data", train_strings, test_strings,
                           seed=0, **extra)
    train, test = DataDir.load(root / "data/train"), DataDir.load(root / "data/test")
    cfg = FeatureConfig(kind="mfcc", deltas=2, cmvn="speaker")
    raw = compute_archive_in_memory(train.wavs, cfg, progress=False)
    feats = apply_pipeline(raw, cfg, train.utt2spk)
    utts = [Utterance(u, feats[u], train.text[u]) for u in train.utts]
    lexicon = Lexicon.load(Path(__file__).resolve().parents[1] / "data/lexicons/digits.txt")
    decoding = DecoderConfig(grammar="loop", acoustic_scale=0.1, beam=15.0, self_loop_scale=1.0)
    mono, _ = train_monophone(utts, lexicon, cfg, HmmConfig(), GmmTrainConfig(
        num_iters=15, max_gaussians=200, mixup_iters=10,
        realign_iters=[1, 2, 3, 4, 5, 6, 8, 10, 12, 14]), decoding, progress=False)
    tri_cfg = GmmTrainConfig(num_iters=12, num_leaves=150, max_gaussians=500, mixup_iters=8,
                             realign_iters=[6, 10])
    tri, _ = train_triphone(utts, mono, tri_cfg, decoding, progress=False)
    raw_utts = [Utterance(u, raw[u], train.text[u]) for u in train.utts]
    tri2b, lda_mllt = train_lda_mllt(raw_utts, tri, LdaMlltConfig(
        **dataclasses.asdict(tri_cfg), mllt_iters=list(mllt_iters)), train.utt2spk,
        progress=False)
    test_raw = compute_archive_in_memory(test.wavs, cfg, progress=False)
    return dict(root=root, train=train, test=test, raw=raw, raw_utts=raw_utts, utts=utts,
                test_raw=test_raw, features=cfg, lexicon=lexicon, decoding=decoding,
                mono=mono, tri=tri, tri_cfg=tri_cfg, tri2b=tri2b, lda_mllt=lda_mllt)


@contextmanager
def serving(folder: Path):
    """Serve ``folder`` over HTTP on 127.0.0.1 (quietly); yields the base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(timeout=5)


@pytest.fixture
def one_torch_thread():
    """One torch thread: two threads on two shared cores run many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_scores(pdfs, num_pdfs: int, rng, noise: float):
    """(T, num_pdfs) log-likelihoods whose best pdf in frame t is ``pdfs[t]`` (0 against
    -30, plus Gaussian noise of std ``noise``), and ``pdfs`` as an array."""
    import numpy as np
    pdfs = np.asarray(pdfs)
    loglik = np.full((len(pdfs), num_pdfs), -30.0)
    loglik[np.arange(len(pdfs)), pdfs] = 0.0
    return loglik + rng.normal(scale=noise, size=loglik.shape), pdfs


def toy_frames(num_utts=6, dim=5, num_pdfs=4, seed=0):
    """utt -> (T, dim) random frames and utt -> (T,) targets: the argmax of the first
    ``num_pdfs`` dimensions (a network learns them quickly)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feats, targets = {}, {}
    for i in range(num_utts):
        x = rng.normal(size=(int(rng.integers(40, 70)), dim)).astype(np.float32)
        feats[f"u{i}"], targets[f"u{i}"] = x, x[:, :num_pdfs].argmax(1)
    return feats, targets
