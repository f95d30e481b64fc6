"""GMM-HMM training and decoding times on FSDD (conventional split), one thread.

Trains the monophone system with Kaldi's train_mono.sh schedule (40 passes, Gaussians
growing to 1,000, realignment on Kaldi's iterations; MFCC+Δ+ΔΔ with per-speaker CMN) on
the 2,250 training recordings, decodes the 250 test recordings with a one-word grammar
and writes a section of ``results/benchmarks.md``. Kaldi's own GMM-HMM code, measured with
the same schedule on this kind of machine, took 15 s to train and 0.22 s to decode
(kaldi-hmm-gmm 1.1.4); those two reference figures are quoted, not re-measured here.

    python benchmarks/bench_gmm_hmm.py [--corpus DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import REPO, limit_threads, machine, table, write_section  # noqa: E402

from asr.data import prepare_fsdd_isolated  # noqa: E402
from asr.decoder import DecoderConfig  # noqa: E402
from asr.evaluate import decode_and_score  # noqa: E402
from asr.experiment import Experiment  # noqa: E402
from asr.features import FeatureConfig  # noqa: E402
from asr.gmm.systems import HmmConfig, train_monophone, train_triphone  # noqa: E402
from asr.gmm.train import GmmTrainConfig  # noqa: E402
from asr.lexicon import Lexicon  # noqa: E402

BEGIN, END = "<!-- begin: gmm-hmm -->", "<!-- end: gmm-hmm -->"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=REPO.parent / "shared/data/fsdd/recordings")
    args = p.parse_args()
    info = machine()
    threads = limit_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_fsdd_isolated(args.corpus, tmp / "data/fsdd/isolated")
        ex = Experiment("fsdd", tmp / "data", tmp / "exp", tmp / "results",
                        FeatureConfig(cmvn="speaker"), progress=False)
        start = time.perf_counter()
        for name in ("isolated/train", "isolated/test"):
            ex.make_features(name)
        t_feats = time.perf_counter() - start
        train = ex.utterances("isolated/train")
        test = ex.load_features("isolated/test")
        refs = ex.data_dir("isolated/test").text
        lexicon = Lexicon.load(REPO / "data/lexicons/digits.txt")
        decoding = DecoderConfig(grammar="single")
        rows = []
        start = time.perf_counter()
        mono, _ = train_monophone(train, lexicon, ex.features, HmmConfig(), GmmTrainConfig(),
                                  decoding, progress=False)
        t_train = time.perf_counter() - start
        start = time.perf_counter()
        res = decode_and_score(mono, test, refs, tmp / "dec_mono", "mono", progress=False)
        t_dec = time.perf_counter() - start
        rows.append(["asr monophone", f"{t_train:.1f}", f"{t_dec:.2f}", res.line()])
        start = time.perf_counter()
        tri, _ = train_triphone(train, mono, GmmTrainConfig(
            num_iters=35, num_leaves=300, max_gaussians=2000, mixup_iters=25,
            realign_iters=[10, 20, 30]), decoding, progress=False)
        t_tri = time.perf_counter() - start
        start = time.perf_counter()
        res = decode_and_score(tri, test, refs, tmp / "dec_tri", "tri", progress=False)
        rows.append(["asr triphone (on the monophone)", f"{t_tri:.1f}",
                     f"{time.perf_counter() - start:.2f}", res.line()])
    rows.append(["Kaldi monophone (kaldi-hmm-gmm, quoted)", "15", "0.22", "0.0-0.8% over six runs"])
    text = "\n".join([
        BEGIN, "## GMM-HMM training and decoding (FSDD conventional split)", "",
        f"Machine: {info['cpu']}, {info['cores']}; load {info['load']}; threads: {threads}; "
        f"{info['date']}. Features of both sets took {t_feats:.1f} s (not included).", "",
        table(["system", "train (s)", "decode 250 files (s)", "result"], rows), "",
        f"Monophone training time relative to Kaldi's 15 s: {t_train / 15:.2f}x; decoding "
        f"relative to Kaldi's 0.22 s: {t_dec / 0.22:.2f}x (below 1 is faster).", "",
        "Reproduce: `python benchmarks/bench_gmm_hmm.py`", END, ""])
    write_section(REPO / "results/benchmarks.md", BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    main()
