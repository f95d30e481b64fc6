#!/usr/bin/env python
"""yesno: 60 recordings of eight yes/no words; Kaldi's smallest recipe.

    python recipes/yesno/run.py [--stage N] [--stop-stage M] [--corpus DIR] [--nj N]
                                [--cluster local|dask|tcp://HOST:PORT]

Stages: 0 data, 1 features, 2 train monophone GMM-HMM, 3 train hybrid DNN-HMM on the
monophone's alignments, 4 decode test, 5 results.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from asr.data import locate_corpus, prepare_yesno
from asr.decoder import DecoderConfig
from asr.experiment import Experiment
from asr.features import FeatureConfig
from asr.gmm.systems import HmmConfig, align_utterances, train_monophone
from asr.gmm.train import GmmTrainConfig
from asr.jobs import ClusterConfig
from asr.lexicon import Lexicon
from asr.nnet import NnetConfig, pdf_targets, train_hybrid
from asr.recipe import (Stage, recipe_arguments, recipe_executor, resolve_settings, run_recipe,
                        run_record, run_stages, seed_everything, setup_logging, write_settings)
from asr.results import write_results_md

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Settings:
    seed: int = 0
    lexicon: str = "data/lexicons/yesno.txt"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    hmm: HmmConfig = field(default_factory=HmmConfig)
    mono: GmmTrainConfig = field(default_factory=GmmTrainConfig)
    decode: DecoderConfig = field(default_factory=DecoderConfig)
    dnn_features: FeatureConfig = field(default_factory=lambda: FeatureConfig(
        kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker"))
    dnn: NnetConfig = field(default_factory=NnetConfig)
    dnn_acoustic_scale: float = 0.2     # hybrid scores are scaled likelihoods: own scale
    cluster: ClusterConfig = field(default_factory=ClusterConfig)   # where --nj jobs run


def main(argv: list[str] | None = None) -> int:
    parser = recipe_arguments(__doc__.splitlines()[0], Path(__file__).with_name("settings.toml"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    settings = resolve_settings(args, Settings)
    run = run_record("yesno", argv, settings)
    seed_everything(settings.seed)
    progress = not args.no_progress
    ex = Experiment("yesno", args.data, args.exp, args.results, settings.features,
                    progress=progress, skip_bad=args.skip_bad_utts)
    ex_dnn = ex.with_features(settings.dnn_features, "feats_dnn")
    setup_logging(ex.exp / "run.log")
    write_settings(ex.exp, settings)

    corpus: list[Path] = []

    def find_corpus():   # before any stage starts: a missing corpus stops the run at once
        corpus.append(locate_corpus("yesno", args.corpus, args.data / "downloads"))

    def data():
        prepare_yesno(corpus[0], ex.data)

    def features():
        for name in ("train", "test"):
            ex.make_features(name, executor)

    def train():
        lexicon = Lexicon.load(ROOT / settings.lexicon)
        utts = ex.utterances("train", vocabulary=lexicon.words)
        system, _ = train_monophone(utts, lexicon, settings.features, settings.hmm,
                                    settings.mono, settings.decode, progress=progress)
        system.save(ex.system_dir("mono"))

    def train_dnn():
        gmm = ex.load_system("mono")
        targets = pdf_targets(align_utterances(gmm, ex.utterances("train")))
        for name in ("train", "test"):
            ex_dnn.make_features(name, executor)
        train_hybrid(ex_dnn.utterances("train"), targets, gmm, settings.dnn_features,
                     settings.dnn, ex.system_dir("dnn_train"), progress
                     ).save(ex.system_dir("dnn"))

    def decode():
        _, mono = ex.decode("mono", "test", executor=executor)
        ex.record("mono", {"test": mono}, run)
        _, dnn = ex.decode("dnn", "test", dataclasses.replace(
            settings.decode, acoustic_scale=settings.dnn_acoustic_scale), features=ex_dnn,
            executor=executor)
        ex.record("dnn", {"test": dnn}, run)

    def results():
        write_results_md(ex.results / "results.json", ex.results / "RESULTS.md",
                         "yesno: word error rates", system_order=["mono", "dnn"],
                         test_set_order=["test"],
                         notes="Train: 31 utterances, test: 29 (Kaldi's split). The hybrid "
                               "DNN-HMM trains on the monophone's alignments; neither system "
                               "sees augmented data.")

    stages = [Stage(0, "data", data, check=find_corpus), Stage(1, "features", features), Stage(2, "train_mono", train),
              Stage(3, "train_dnn", train_dnn), Stage(4, "decode", decode),
              Stage(5, "results", results)]
    with recipe_executor(args, settings) as executor:      # --nj jobs on --cluster
        run_stages(stages, ex.exp, args.stage, args.stop_stage, args.force,
                   clean=[ex.data, ex.results])
    return 0


if __name__ == "__main__":
    sys.exit(run_recipe(main))   # an AsrError ends it in one line; --debug: traceback
