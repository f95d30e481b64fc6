#!/usr/bin/env python
"""FSDD: isolated, connected and noisy spoken digits; GMM-HMM, hmmlearn and DNN-HMM systems.

    python recipes/fsdd/run.py [--stage N] [--stop-stage M] [--corpus DIR]

Stages: 0 data, 1 features, 2 monophone, 3 triphones (tri1: deltas; tri2b: LDA+MLLT;
tri3b: SAT with fMLLR, each with its own done-marker), 4 hmmlearn baseline, 5 hybrid DNN,
6 decode, 7 results. Systems are trained per fold: "main" (conventional split: isolated
and connected training data; tested on isolated, connected and noisy connected digits)
and one "heldout_<speaker>" fold per speaker left out of training entirely.

Every fold keeps a dev set out of training: the first ``corpus.dev_recordings`` training
recordings of every digit and training speaker, and ``corpus.connected_dev`` connected
strings made of those recordings only (folds with connected test sets); training strings
that hold a dev recording are not used. Each system decodes dev and test into lattices once;
the LM weight (LMWT = 1 / acoustic scale) and word insertion penalty with the fewest dev
errors are chosen (isolated dev for the isolated tests, connected dev for the connected and
noisy ones), and test is reported at dev's choice. The hybrid's dropout is chosen on dev too.

The GMM systems train on the clean recordings; tri3b decodes with one fMLLR transform per
speaker, estimated from a first pass and re-estimated from the adapted one. The hybrid DNN
trains on the last GMM's alignments (tri3b's: fMLLR-adapted, as Kaldi's ``align_fmllr.sh``)
and also sees augmented copies
(``[augment]``): speed-perturbed copies of the isolated recordings in the held-out folds
(aligned afresh), and one noisy copy of every recording in the main fold (white, pink or
babble at 20-0 dB; a noisy copy keeps its clean recording's alignment), as Kaldi's recipes
train their neural networks.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr.audio import write_wav
from asr.baseline import HmmlearnBaselineConfig, run_baseline
from asr.data import (DataDir, copy_source, locate_corpus, prepare_fsdd_isolated, prepare_noisy,
                      prepare_noisy_copies, prepare_speed_perturbed)
from asr.data.connected import plan_fsdd_connected, plan_strings, render_string
from asr.data.fsdd import RATE, fsdd_recordings, split_dev, split_recordings
from asr.decoder import DecoderConfig
from asr.experiment import Experiment
from asr.features import FeatureConfig
from asr.fileio import atomic_dir, write_json
from asr.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt
from asr.gmm.sat import SatConfig, adapted_utterances, train_sat
from asr.gmm.systems import HmmConfig, train_monophone, train_triphone
from asr.gmm.train import GmmTrainConfig
from asr.lexicon import Lexicon
from asr.lvcsr import SweepConfig, decode_lattices, score_sweep
from asr.nnet import NnetConfig, train_hybrid
from asr.recipe import (Stage, recipe_arguments, resolve_settings, run_parallel, run_recipe,
                        run_record, run_stages, seed_everything, setup_logging, write_settings)
from asr.results import (dev_choice_section, load_results, plot_curves, plot_results,
                         seed_spread_table, write_results_md)
from asr.scoring import compute_wer

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CorpusSettings:
    speakers: list[str] = field(default_factory=lambda: ["jackson", "lucas", "nicolas", "theo",
                                                         "yweweler"])
    heldout_folds: list[str] = field(default_factory=lambda: ["jackson", "lucas", "nicolas",
                                                              "theo", "yweweler"])
    connected_train: int = 1000
    connected_test: int = 300
    dev_recordings: int = 5      # per digit and training speaker, kept out of training
    connected_dev: int = 100     # strings of dev recordings (folds with connected tests)
    connected_heldout_speaker: str = "nicolas"
    noise_kinds: list[str] = field(default_factory=lambda: ["white", "pink", "babble"])
    snrs: list[int] = field(default_factory=lambda: [20, 10, 5, 0])

    def __post_init__(self):
        if self.dev_recordings < 1:
            raise ValueError("dev_recordings must be >= 1: weights are chosen on dev, "
                             "never on test")
        if self.connected_dev < 1:
            raise ValueError("connected_dev must be >= 1: the connected and noisy test sets "
                             "are decoded at a connected dev set's choice")


@dataclass
class AugmentSettings:
    """Extra training data for the hybrid DNN; the GMM systems train on the clean recordings.

    ``speed_factors``: speed-perturbed copies of the held-out folds' isolated recordings;
    ``noise_snrs``: one noisy copy (kind from ``corpus.noise_kinds``) of every recording of
    the main fold. An empty list turns that augmentation off. ``gmm_noisy``: the main
    fold's triphone GMM trains on the noisy copies too (a multi-condition GMM, to compare
    both models on the same training data).
    """
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.1])
    noise_snrs: list[int] = field(default_factory=lambda: [20, 15, 10, 5, 0])
    gmm_noisy: bool = False

    def __post_init__(self):
        for factor in self.speed_factors:
            if not 0.5 <= factor <= 2.0 or factor == 1.0:
                raise ValueError(f"each speed factor must be in [0.5, 2] and not 1.0, "
                                 f"got {factor}")
        if self.gmm_noisy and not self.noise_snrs:
            raise ValueError("gmm_noisy needs noisy copies; noise_snrs is empty")


SYSTEMS = ("mono", "tri", "tri2b", "tri3b", "hmmlearn", "dnn", "dnn_fmllr")
HYBRIDS = ("dnn", "dnn_fmllr")


def hybrid_of(system: str) -> str | None:
    """The hybrid a network belongs to (``dnn_fmllr_seed1`` -> ``dnn_fmllr``); None for a
    GMM system or the hmmlearn baseline."""
    return next((h for h in reversed(HYBRIDS) if system == h or system.startswith(h + "_")),
                None)


@dataclass
class Settings:
    seed: int = 0
    lexicon: str = "data/lexicons/digits.txt"
    systems: list[str] = field(default_factory=lambda: ["mono", "tri", "tri2b", "tri3b",
                                                        "hmmlearn", "dnn", "dnn_fmllr"])
    mono_on_isolated: bool = True
    jobs: int = 2                       # folds trained at once (one process each)
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    hmm: HmmConfig = field(default_factory=HmmConfig)
    mono: GmmTrainConfig = field(default_factory=GmmTrainConfig)
    tri: GmmTrainConfig = field(default_factory=lambda: GmmTrainConfig(num_leaves=300))
    tri2b: LdaMlltConfig = field(default_factory=lambda: LdaMlltConfig(num_leaves=300,
                                                                       max_gaussians=2000))
    tri3b: SatConfig = field(default_factory=lambda: SatConfig(num_leaves=300,
                                                               max_gaussians=2000))
    hmmlearn: HmmlearnBaselineConfig = field(default_factory=HmmlearnBaselineConfig)
    dnn_features: FeatureConfig = field(default_factory=lambda: FeatureConfig(
        kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker"))
    dnn: NnetConfig = field(default_factory=NnetConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    decode_isolated: DecoderConfig = field(default_factory=lambda: DecoderConfig("single"))
    decode_connected: DecoderConfig = field(default_factory=DecoderConfig)
    dnn_acoustic_scale: float = 0.2     # hybrid scores are scaled likelihoods: own scale
    # Gaussian budgets tri3b trains at in every fold; the one with the fewest errors on the
    # fold's dev sets (at the decoding settings) is the fold's tri3b. []: tri3b.max_gaussians
    tri3b_budgets: list[int] = field(default_factory=list)
    # dropouts the hybrid (dnn.seed) trains at in every fold; the fewest dev errors win and
    # the extra seeds train at that dropout. []: dnn.dropout
    dnn_dropouts: list[float] = field(default_factory=list)
    # LMWT (1 / acoustic scale) and word insertion penalty, chosen on dev; ties go to the
    # weights listed first, so each list starts with the decoding setting
    sweep: SweepConfig = field(default_factory=lambda: SweepConfig(
        lm_weights=[10.0, 6.0, 8.0, 12.0, 14.0, 17.0], word_penalties=[0.0, 1.0, 2.0]))
    dnn_sweep: SweepConfig = field(default_factory=lambda: SweepConfig(
        lm_weights=[5.0, 3.0, 4.0, 6.0, 8.0], word_penalties=[0.0, 1.0, 2.0]))
    # the held-out folds' hybrid is also trained with these seeds (rows "dnn_seed<k>"), so
    # that RESULTS.md gives its mean and spread over seeds
    dnn_extra_seeds: list[int] = field(default_factory=lambda: [1, 2])

    def __post_init__(self):
        unknown = sorted(set(self.systems) - set(SYSTEMS))
        if unknown:
            raise ValueError(f"unknown systems {unknown}; expected among "
                             f"{', '.join(SYSTEMS)}")
        chain = ["mono", "tri", "tri2b", "tri3b"]
        for i, name in enumerate(chain[1:], 1):
            if name in self.systems and chain[i - 1] not in self.systems:
                raise ValueError(f"{name} trains on {chain[i - 1]}'s alignments: systems with "
                                 f"'{name}' need '{chain[i - 1]}'")
        if "dnn" in self.systems and "tri" not in self.systems:
            raise ValueError("the hybrid trains on a triphone system's alignments: systems "
                             "with 'dnn' need 'tri'")
        if "dnn_fmllr" in self.systems and "tri3b" not in self.systems:
            raise ValueError("the hybrid on fMLLR features reads tri3b's adapted features: "
                             "systems with 'dnn_fmllr' need 'tri3b'")
        if self.dnn.seed in self.dnn_extra_seeds or len(set(self.dnn_extra_seeds)) < len(
                self.dnn_extra_seeds):
            raise ValueError(f"dnn_extra_seeds must differ from each other and from dnn.seed "
                             f"({self.dnn.seed}), got {self.dnn_extra_seeds}")

    @property
    def gmms(self) -> list[str]:
        """The GMM chain's systems, in training order."""
        return [x for x in ("mono", "tri", "tri2b", "tri3b") if x in self.systems]

    @property
    def hybrids(self) -> list[str]:
        """The hybrids listed in systems: ``dnn`` (fbank + CMVN), ``dnn_fmllr`` (tri3b's
        fMLLR features)."""
        return [x for x in HYBRIDS if x in self.systems]

    def dnn_systems(self, fold: str, hybrid: str | None = None) -> dict[str, int]:
        """The networks of one fold (of one hybrid, or of all): name -> seed."""
        extra = self.dnn_extra_seeds if fold != "main" else []
        return {name: seed for h in self.hybrids if hybrid in (None, h)
                for name, seed in [(h, self.dnn.seed), *((f"{h}_seed{k}", k) for k in extra)]}


@dataclass
class TestSet:
    column: str        # column of the results table
    data: str          # data set under data/fsdd
    isolated: bool     # isolated-word grammar (and the hmmlearn row) or connected word loop


class Folds:
    """The training sets and the test sets each one is scored on."""

    def __init__(self, s: Settings):
        self.s = s

    @property
    def names(self) -> list[str]:
        return ["main"] + [f"heldout_{spk}" for spk in self.s.corpus.heldout_folds]

    def train_parts(self, fold: str) -> list[str]:
        if fold == "main":
            return ["isolated/train", "connected/train"]
        spk = fold.removeprefix("heldout_")
        parts = [f"isolated_{fold}/train"]
        if spk == self.s.corpus.connected_heldout_speaker:
            parts.append(f"connected_{fold}/train")
        return parts

    def tests(self, fold: str) -> list[TestSet]:
        c = self.s.corpus
        if fold == "main":
            return ([TestSet("isolated", "isolated/test", True),
                     TestSet("connected", "connected/test", False)]
                    + [TestSet(f"{kind}_{snr}dB", f"noisy/test_{kind}_snr{snr}", False)
                       for kind in c.noise_kinds for snr in c.snrs])
        tests = [TestSet(fold, f"isolated_{fold}/test", True)]
        if fold.removeprefix("heldout_") == c.connected_heldout_speaker:
            tests.append(TestSet(f"connected_{fold}", f"connected_{fold}/test", False))
        return tests

    def devs(self, fold: str) -> list[TestSet]:
        """The fold's dev sets: its training speakers' isolated dev recordings, and connected
        dev strings where the fold has connected test sets."""
        suffix = "" if fold == "main" else f"_{fold}"
        devs = [TestSet(f"dev{suffix}", f"isolated{suffix}/dev", True)]
        if any(not t.isolated for t in self.tests(fold)):
            devs.append(TestSet(f"dev_connected{suffix}", f"connected{suffix}/dev", False))
        return devs

    def dev_for(self, fold: str, test: TestSet) -> TestSet:
        """The dev set whose choice of weights ``test`` is reported at (same grammar)."""
        return next(d for d in self.devs(fold) if d.isolated == test.isolated)

    def dnn_train_sets(self, fold: str) -> list[str]:
        """The hybrid's training data: the clean set and its augmented copies.

        Speed-perturbed copies of the isolated recordings where an unseen speaker is tested
        (the held-out folds), noisy copies where noisy test sets are (the main fold).
        """
        sets = [f"{fold}/train"]
        if self.s.augment.speed_factors and fold != "main":
            sets.append(f"{fold}/train_sp")
        if self.s.augment.noise_snrs and any(t.data.startswith("noisy/") for t in self.tests(fold)):
            sets.append(f"{fold}/train_noisy")
        return sets

    def all_data_sets(self) -> list[str]:
        sets = [f"{fold}/train" for fold in self.names]
        for fold in self.names:
            sets += [t.data for t in self.devs(fold) + self.tests(fold)]
        return list(dict.fromkeys(sets))


def main(argv: list[str] | None = None) -> int:
    parser = recipe_arguments(__doc__.splitlines()[0], Path(__file__).with_name("settings.toml"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    s = resolve_settings(args, Settings)
    run = run_record("fsdd", argv, s)
    seed_everything(s.seed)
    progress = not args.no_progress
    ex = Experiment("fsdd", args.data, args.exp, args.results, s.features, progress,
                    skip_bad=args.skip_bad_utts)
    ex_dnn = ex.with_features(s.dnn_features, "feats_dnn")
    folds = Folds(s)
    setup_logging(ex.exp / "run.log")
    write_settings(ex.exp, s)
    timings_path = ex.exp / "timings.json"

    def timed(key: str, seconds: float) -> None:
        values = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        values[key] = round(seconds, 3)
        write_json(timings_path, values)

    corpus_dirs: list[Path] = []

    def find_corpus():   # before any stage starts: a missing corpus stops the run at once
        corpus_dirs.append(locate_corpus("fsdd", args.corpus, args.data / "downloads"))

    def data():
        c = s.corpus
        corpus = corpus_dirs[0]
        prepare_fsdd_isolated(corpus, ex.data / "isolated", speakers=c.speakers,
                              num_dev=c.dev_recordings)
        for spk in c.heldout_folds:
            prepare_fsdd_isolated(corpus, ex.data / f"isolated_heldout_{spk}",
                                  heldout_speaker=spk, speakers=c.speakers,
                                  num_dev=c.dev_recordings)
        _prepare_connected(corpus, ex.data / "connected", c, s.seed)
        if c.connected_heldout_speaker in c.heldout_folds:
            _prepare_connected(corpus, ex.data / f"connected_heldout_{c.connected_heldout_speaker}",
                               c, s.seed, heldout_speaker=c.connected_heldout_speaker)
        prepare_noisy(ex.data / "connected/test", ex.data / "noisy",
                      recordings_for_babble=ex.data / "isolated/train", kinds=c.noise_kinds,
                      snrs=c.snrs, seed=s.seed)
        for fold in folds.names:
            DataDir.combine(_cmvn_speakers(DataDir.load(ex.data / p), p)
                            for p in folds.train_parts(fold)).save(ex.data / fold / "train")
        if s.hybrids or s.augment.gmm_noisy:
            augment()

    def augment():
        """Augmented copies of the folds' training data, for the hybrid (Folds.dnn_train_sets)."""
        a, c = s.augment, s.corpus
        todo = {fold: folds.dnn_train_sets(fold) for fold in folds.names}
        def speed():
            # every isolated recording is perturbed once; each fold takes its training ones
            copies = prepare_speed_perturbed(
                DataDir.combine(DataDir.load(ex.data / f"isolated/{x}")
                                for x in ("train", "dev", "test")),
                ex.data / "augment", "isolated_sp", a.speed_factors)
            for fold, sets in todo.items():
                if f"{fold}/train_sp" in sets:
                    wanted = set(DataDir.load(ex.data / folds.train_parts(fold)[0]).utts)
                    copies.subset(u for u in copies.utts if copy_source(u) in wanted).save(
                        ex.data / fold / "train_sp")

        def noisy(fold):
            # seed + 1: training noise is drawn apart from the test sets' noise
            DataDir.combine(_cmvn_speakers(prepare_noisy_copies(
                ex.data / p, ex.data / "augment", p.replace("/", "_") + "_noisy",
                recordings_for_babble=ex.data / "isolated/train", kinds=c.noise_kinds,
                snrs=a.noise_snrs, seed=s.seed + 1), p) for p in folds.train_parts(fold)
            ).save(ex.data / fold / "train_noisy")

        tasks = [speed] if any(f"{f}/train_sp" in sets for f, sets in todo.items()) else []
        tasks += [lambda fold=fold: noisy(fold) for fold, sets in todo.items()
                  if f"{fold}/train_noisy" in sets]
        run_parallel(tasks, s.jobs)

    def features():
        for name in folds.all_data_sets() + (["main/train_noisy"] if s.augment.gmm_noisy else []):
            ex.make_features(name)

    def per_fold(system: str, train_one, jobs: int = s.jobs):
        def task(fold):
            start = time.perf_counter()
            train_one(fold).save(ex.system_dir(f"{fold}/{system}"))
            return time.perf_counter() - start
        todo = [fold for fold in folds.names  # folds finished before an interruption stay
                if not (ex.system_dir(f"{fold}/{system}") / "manifest.json").exists()]
        todo.sort(key=lambda fold: -len(ex.data_dir(f"{fold}/train")))  # longest first
        seconds = run_parallel([lambda fold=fold: task(fold) for fold in todo], jobs)
        for fold, sec in zip(todo, seconds):
            timed(f"train/{fold}/{system}", sec)

    lexicon = Lexicon.load(ROOT / s.lexicon)

    def mono():
        def train_one(fold):
            utts = ex.utterances(f"{fold}/train", vocabulary=lexicon.words)
            if s.mono_on_isolated:
                utts = [u for u in utts if len(u.words) == 1]
            return train_monophone(utts, lexicon, s.features, s.hmm, s.mono,
                                   s.decode_connected, progress)[0]
        per_fold("mono", train_one)

    def tri():
        def train_one(fold):
            utts = ex.utterances(f"{fold}/train")
            if s.augment.gmm_noisy and fold == "main":
                utts += ex.utterances("main/train_noisy")
            return train_triphone(utts, ex.load_system(f"{fold}/mono"), s.tri,
                                  s.decode_connected, progress)[0]
        per_fold("tri", train_one)

    def adapted(name: str, train, previous: str):
        """tri2b (LDA+MLLT on tri's alignments) or tri3b (SAT on tri2b's), on the clean
        training data's base features. fMLLR's speakers are CMVN's: a speaker's connected
        strings are a speaker of their own (``_cmvn_speakers``), normalised apart from the
        isolated recordings; each of them holds thousands of frames.

        With ``tri3b_budgets`` each fold trains tri3b at every Gaussian budget and keeps the
        one with the fewest errors on its dev sets (``<fold>/tri3b_budget.json``)."""
        def train_one(fold, cfg=getattr(s, name)):
            return train(ex.utterances(f"{fold}/train", raw=True),
                         ex.load_system(f"{fold}/{previous}"), cfg,
                         ex.data_dir(f"{fold}/train").utt2spk, s.decode_connected, progress)[0]

        def tuned(fold):
            errors = {}
            for budget in s.tri3b_budgets:
                train_one(fold, dataclasses.replace(s.tri3b, max_gaussians=budget)).save(
                    ex.system_dir(f"{fold}/tri3b_g{budget}"))
                errors[budget] = dev_errors(fold, f"tri3b_g{budget}")
            best = min(s.tri3b_budgets, key=lambda b: errors[b])     # ties: first listed
            write_json(ex.system_dir(f"{fold}/tri3b_budget.json"), {
                "max_gaussians": best, "dev_errors": {str(b): errors[b] for b in errors}})
            return ex.load_system(f"{fold}/tri3b_g{best}")
        per_fold(name, tuned if name == "tri3b" and s.tri3b_budgets else train_one)

    def decoding(system: str, isolated: bool) -> tuple[DecoderConfig, Experiment | None]:
        """A system's search settings for a grammar, and the features it reads (None: the
        GMMs'; the fMLLR hybrid reads them too and adapts as tri3b does)."""
        cfg = s.decode_isolated if isolated else s.decode_connected
        hybrid = hybrid_of(system)
        if hybrid is None:
            return cfg, None
        return (dataclasses.replace(cfg, acoustic_scale=s.dnn_acoustic_scale),
                ex_dnn if hybrid == "dnn" else None)

    def dev_errors(fold: str, system: str) -> int:
        """Errors of ``<fold>/<system>`` on the fold's dev sets at the decoding settings."""
        errors = 0
        for d in folds.devs(fold):
            cfg, features = decoding(system, d.isolated)
            _, result = ex.decode(f"{fold}/{system}", d.data, cfg, d.column, features)
            errors += result.errors
        return errors

    def dnn():
        def task(fold):
            start = time.perf_counter()
            sets = folds.dnn_train_sets(fold)
            hybrids = sorted({hybrid_of(x) for x in todo[fold]}, key=HYBRIDS.index)
            if "dnn" in hybrids:
                for name in sets + [t.data for t in folds.devs(fold) + folds.tests(fold)]:
                    ex_dnn.make_features(name)
            gmm_name = f"{fold}/{s.gmms[-1]}"
            gmm = ex.load_system(gmm_name)
            targets, sources, transforms = {}, {}, {}
            for name in sets:   # targets: the last GMM's (fMLLR-adapted) forced alignments
                copies = name != f"{fold}/train"
                if copies:      # augmented copies: validation keeps them with their source
                    sources.update({u: copy_source(u) for u in ex.data_dir(name).utts})
                    ex.make_features(name)
                noisy = name.endswith("_noisy")
                if not noisy or "dnn_fmllr" in hybrids:   # a noisy copy: for its transforms
                    aligned, transforms[name] = ex.alignments(gmm_name, name)
                if noisy:       # a noisy copy has its clean recording's frames
                    targets.update({u: targets[copy_source(u)] for u in ex.data_dir(name).utts
                                    if copy_source(u) in targets})
                else:
                    targets.update(aligned)

            def inputs(hybrid):
                """The network's training utterances and feature settings (None: tri3b's
                speaker-adapted model input, each set with its own speakers' transforms)."""
                if hybrid == "dnn":
                    return [u for name in sets for u in ex_dnn.utterances(name)], s.dnn_features
                return [u for name in sets for u in adapted_utterances(
                    gmm, ex.utterances(name, raw=True), ex.data_dir(name).utt2spk,
                    transforms[name])], None

            prepared = time.perf_counter() - start
            seconds = {}
            for hybrid in hybrids:
                begin = time.perf_counter()
                utts, features = inputs(hybrid)

                def train(name, cfg):
                    train_hybrid(utts, targets, gmm, features, cfg,
                                 ex.system_dir(f"{fold}/{name}_train"), progress, sources
                                 ).save(ex.system_dir(f"{fold}/{name}"))

                choice = ex.system_dir(f"{fold}/{hybrid}_dropout.json")
                if s.dnn_dropouts and hybrid in todo[fold]:   # dnn.seed at each dropout
                    errors = {}
                    for dropout in s.dnn_dropouts:
                        name = f"{hybrid}_dropout{dropout:g}"
                        train(name, dataclasses.replace(s.dnn, dropout=dropout))
                        errors[dropout] = dev_errors(fold, name)
                    best = min(s.dnn_dropouts, key=lambda d: errors[d])   # ties: first listed
                    ex.load_system(f"{fold}/{hybrid}_dropout{best:g}").save(
                        ex.system_dir(f"{fold}/{hybrid}"))
                    write_json(choice, {"dropout": best, "dev_errors": {
                        f"{d:g}": errors[d] for d in s.dnn_dropouts}})
                dropout = (json.loads(choice.read_text())["dropout"] if s.dnn_dropouts
                           else s.dnn.dropout)
                for system, seed in todo[fold].items():
                    if hybrid_of(system) == hybrid and not (s.dnn_dropouts and system == hybrid):
                        train(system, dataclasses.replace(s.dnn, seed=seed, dropout=dropout))
                networks = sum(hybrid_of(x) == hybrid for x in todo[fold])
                # per network: its own training, and its share of the features and alignments
                seconds[hybrid] = ((time.perf_counter() - begin) / networks
                                   + prepared / len(todo[fold]))
            return seconds
        todo = {fold: {system: seed for system, seed in s.dnn_systems(fold).items()  # folds
                       if not (ex.system_dir(f"{fold}/{system}") / "manifest.json").exists()}
                for fold in folds.names}           # finished before an interruption stay
        order = sorted((fold for fold in folds.names if todo[fold]),   # longest first
                       key=lambda fold: -len(ex.data_dir(f"{fold}/train")) * len(todo[fold]))
        seconds = run_parallel([lambda fold=fold: task(fold) for fold in order], s.jobs)
        for fold, per_hybrid in zip(order, seconds):
            for hybrid, sec in per_hybrid.items():
                timed(f"train/{fold}/{hybrid}", sec)

    def hmmlearn():
        def task(fold, t):   # it tunes nothing: it trains on the dev recordings too
            train = DataDir.combine([ex.data_dir(f"{fold}/train"),
                                     ex.data_dir(folds.devs(fold)[0].data)])
            test = ex.data_dir(t.data)
            iso_train = train.subset(u for u in train.utts if len(train.text[u]) == 1)
            return run_baseline(iso_train, test, s.features, s.hmmlearn, progress=progress)
        jobs = [(fold, t) for fold in folds.names for t in folds.tests(fold) if t.isolated]
        outputs = run_parallel([lambda fold=fold, t=t: task(fold, t) for fold, t in jobs], s.jobs)
        scores = {}
        for (fold, t), (hyps, fit_s, dec_s) in zip(jobs, outputs):
            test = ex.data_dir(t.data)
            scores[t.column] = compute_wer(
                test.text, hyps, str(ex.system_dir(f"{fold}/hmmlearn") / f"decode_{t.column}"))
            timed(f"train/{fold}/hmmlearn", fit_s)
            timed(f"decode/{fold}/hmmlearn/{t.column}", dec_s)
        ex.record("hmmlearn", scores, run)

    def decode():
        def task(fold, system):
            """One system's decodes of one fold: per grammar, the dev set and the test sets
            into lattices once; the weights with the fewest dev errors, test at them."""
            done = []
            for isolated in (True, False):
                tests = [t for t in folds.tests(fold) if t.isolated == isolated]
                if not tests:
                    continue
                dev = folds.dev_for(fold, tests[0])
                cfg, features = decoding(system, isolated)
                sweep = s.sweep if hybrid_of(system) is None else s.dnn_sweep
                lattices = decode_lattices(ex, f"{fold}/{system}",
                                           [dev.data] + [t.data for t in tests], cfg, features)
                chosen = None
                for t in [dev] + tests:
                    lat, text = lattices[t.data], ex.data_dir(t.data).text
                    out = ex.system_dir(f"{fold}/{system}") / f"decode_{t.column}"
                    result, chosen = score_sweep(
                        lat, {u: text[u] for u in lat.lattices},
                        sweep if chosen is None else SweepConfig([chosen[0]], [chosen[1]]),
                        out, str(out), chosen)
                    done.append((t.column, result, lat.seconds, chosen))
            return done
        jobs = [(fold, system) for fold in folds.names
                for system in [x for x in s.systems if x != "hmmlearn" and x not in HYBRIDS]
                + list(s.dnn_systems(fold))]
        outputs = run_parallel([lambda job=job: task(*job) for job in jobs], s.jobs)
        scores: dict[str, dict] = {}
        choices_path = ex.exp / "decode_choices.json"
        choices = json.loads(choices_path.read_text()) if choices_path.exists() else {}
        for (fold, system), done in zip(jobs, outputs):
            for column, result, seconds, chosen in done:
                scores.setdefault(system, {})[column] = result
                choices.setdefault(system, {})[column] = list(chosen)
                timed(f"decode/{fold}/{system}/{column}", seconds)
        write_json(choices_path, choices)
        for system, by_column in scores.items():
            ex.record(system, by_column, run)

    def results():
        c = s.corpus
        heldout = [f"heldout_{spk}" for spk in c.heldout_folds]
        cheld = f"connected_heldout_{c.connected_heldout_speaker}"
        order = (["dev", "isolated"] + [x for h in heldout for x in (f"dev_{h}", h)]
                 + ["dev_connected", "connected", f"dev_{cheld}", cheld]
                 + [f"{k}_{snr}dB" for k in c.noise_kinds for snr in c.snrs])
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        lines = ["Isolated columns use a one-word grammar, connected and noisy columns a word "
                 "loop. `heldout_<speaker>`: that speaker is absent from training.", "",
                 f"- **Dev sets** (`dev*` columns) are kept out of training: the first "
                 f"{c.dev_recordings} training recordings of every digit and training speaker "
                 "(`dev`: indices 5-9 of the five speakers; `dev_heldout_<speaker>`: indices "
                 "0-4 of the other four), and "
                 f"{c.connected_dev} connected strings of those recordings only "
                 "(`dev_connected*`); training strings holding a dev recording are not used. "
                 "Each system decodes dev and test into lattices once; the LMWT (1 / "
                 "acoustic scale) and word insertion penalty with the fewest dev errors "
                 "are chosen, and every test column is scored at its fold's dev choice "
                 "(isolated dev for isolated tests, connected dev for connected and noisy "
                 "ones; see *Chosen on dev*). Dev holds the training speakers' voices, so "
                 "it is easier than a held-out speaker.",
                 "- **Connected digits** are made, not recorded: strings of 1-7 isolated "
                 "recordings of one speaker joined with seeded pauses (50-400 ms between "
                 "digits, 100-500 ms at the ends) over a noise floor 50-60 dB below the "
                 f"speech (seed {s.seed}); training strings use training recordings only, "
                 "test strings test recordings only. Noisy columns add white, pink or babble "
                 "noise to the connected test strings at the SNR named.",
                 "- **Training data:** " + _training_data(s), "",
                 "Seconds to train each system on the conventional split, and to decode its "
                 "250 isolated and 300 connected test recordings:", "",
                 "| system | train | decode isolated | decode connected |",
                 "| :--- | ---: | ---: | ---: |"]
        for system in s.systems:
            cells = [timings.get(f"train/main/{system}"),
                     timings.get(f"decode/main/{system}/isolated"),
                     timings.get(f"decode/main/{system}/connected")]
            lines.append(f"| {system} | " + " | ".join(
                "–" if c is None else f"{c:.1f}" for c in cells) + " |")
        sections = []
        choices_path = ex.exp / "decode_choices.json"
        if choices_path.exists():
            sections.append(_choices_table(json.loads(choices_path.read_text()), s, order))
        # the settings chosen on dev: those with candidates get columns
        columns, titles, what = [], [], []
        if s.tri3b_budgets:
            columns.append(("tri3b Gaussians", "tri3b_budget.json"))
            titles.append("Gaussian budget")
            what.append("tri3b trained at each Gaussian budget")
        if s.dnn_dropouts:
            columns += [(f"{h} dropout", f"{h}_dropout.json") for h in s.hybrids]
            titles.append("dropout")
            what.append(f"each hybrid (seed {s.dnn.seed}) at each dropout (its other seeds "
                        "train at its choice)")
        tuned = {fold: [ex.system_dir(f"{fold}/{name}") for _, name in columns]
                 for fold in folds.names}
        if any(path.exists() for paths in tuned.values() for path in paths):
            rows = ["| fold | " + " | ".join(f"{h}: dev errors | chosen" for h, _ in columns)
                    + " |", "| :--- |" + " :--- | ---: |" * len(columns)]
            for fold, paths in tuned.items():
                cells = []
                for path in paths:
                    if path.exists():
                        choice = json.loads(path.read_text())
                        key = "max_gaussians" if "max_gaussians" in choice else "dropout"
                        cells += [", ".join(f"{k}: {v}" for k, v in choice["dev_errors"].items()),
                                  f"{choice[key]:g}"]
                    else:
                        cells += ["–", "–"]
                rows.append(f"| {fold} | " + " | ".join(cells) + " |")
            title = " and ".join(titles)
            sections.append(f"## {title[0].upper()}{title[1:]}, chosen on dev\n\nPer fold, "
                            + " and ".join(what) + "; errors summed over the fold's dev sets at "
                            "the decoding settings; the fewest win (ties: the first tried).\n\n"
                            + "\n".join(rows))
        if len(s.hybrids) > 1:
            sections.append(dev_choice_section(
                ex.results / "results.json", s.hybrids,
                [d.column for fold in folds.names for d in folds.devs(fold)]))
        extra_rows = []
        for hybrid in s.hybrids:
            seeded = list(s.dnn_systems(heldout[0] if heldout else "main", hybrid))
            extra_rows += seeded[1:]
            if len(seeded) > 1:
                seeds = ", ".join(str(k) for k in s.dnn_systems(heldout[0], hybrid).values())
                sections.append(
                    f"## Hybrid `{hybrid}` over {len(seeded)} seeds (held-out folds)\n\n"
                    f"The held-out folds' network trained with seeds {seeds} (rows "
                    f"{', '.join(f'`{x}`' for x in seeded)}); WER % (errors). Goals are "
                    "judged on the mean. Results are bit-identical on one machine and library "
                    "build, not across CPU models.\n\n"
                    + seed_spread_table(ex.results / "results.json", seeded,
                                        [o for o in order if o.startswith(
                                            ("heldout_", "connected_heldout_"))],
                                        mean_rows={"heldout mean": heldout}))
        write_results_md(ex.results / "results.json", ex.results / "RESULTS.md",
                         "FSDD: word error rates (%)", system_order=s.systems + extra_rows,
                         test_set_order=[o for o in order if o in _columns(ex)],
                         notes="\n".join(lines),
                         mean_columns={"heldout mean": heldout}, sections=sections)
        plot_results(ex.results / "results.json", ex.results / "wer.png",
                     "FSDD word error rates", system_order=s.systems,
                     test_set_order=[o for o in order if o in _columns(ex)])
        dropout = ex.system_dir("main/dnn_dropout.json")
        history = ex.system_dir("main/dnn_train" if not dropout.exists() else
                                f"main/dnn_dropout{json.loads(dropout.read_text())['dropout']:g}"
                                "_train") / "history.json"
        if "dnn" in s.systems and history.exists():
            epochs = json.loads(history.read_text())
            plot_curves({"train": [e["train_acc"] for e in epochs],
                         "valid": [e["valid_acc"] for e in epochs]},
                        ex.results / "dnn_learning_curve.png", "epoch", "frame accuracy",
                        "FSDD hybrid DNN (conventional split)")

    systems = set(s.systems)
    stages = [Stage(0, "data", data, check=find_corpus), Stage(1, "features", features)]
    stages += [Stage(2, "mono", mono)] if systems & {"mono", "tri", *HYBRIDS} else []
    stages += [Stage(3, "tri", tri)] if systems & {"tri", *HYBRIDS} else []
    stages += [Stage(3, "tri2b", lambda: adapted("tri2b", train_lda_mllt, "tri"))
               ] if "tri2b" in systems else []
    stages += [Stage(3, "tri3b", lambda: adapted("tri3b", train_sat, "tri2b"))
               ] if "tri3b" in systems else []
    stages += [Stage(4, "hmmlearn", hmmlearn)] if "hmmlearn" in systems else []
    stages += [Stage(5, "dnn", dnn)] if s.hybrids else []
    stages += [Stage(6, "decode", decode), Stage(7, "results", results)]
    run_stages(stages, ex.exp, args.stage, args.stop_stage, args.force,
               clean=[ex.data, ex.results])
    return 0


def _prepare_connected(corpus: Path, out: Path, c: CorpusSettings, seed: int,
                       heldout_speaker: str | None = None) -> None:
    """Connected strings of one split: ``out/{train,dev,test}`` and their audio.

    Test strings are ``asr.data.prepare_fsdd_connected``'s. Training strings are its
    training plan less every string that holds a dev recording (the first
    ``c.connected_train`` that hold none); dev strings join dev recordings only, drawn the
    same way from their own random stream.
    """
    train, _ = split_recordings(fsdd_recordings(corpus, c.speakers), heldout_speaker)
    _, dev = split_dev(train, c.dev_recordings)
    dev_utts = {r.utt for r in dev}
    plan = plan_fsdd_connected(corpus, 4 * c.connected_train, c.connected_test, seed,
                               heldout_speaker, speakers=c.speakers)
    clean = [x for x in plan["train"] if not dev_utts & {r.utt for r in x.recordings}]
    if len(clean) < c.connected_train:
        raise ValueError(f"only {len(clean)} of {len(plan['train'])} planned training strings "
                         f"hold no dev recording; lower corpus.connected_train "
                         f"({c.connected_train}) or corpus.dev_recordings")
    strings = {"train": clean[:c.connected_train], "test": plan["test"],
               "dev": plan_strings(dev, "dev", c.connected_dev,
                                           np.random.default_rng([seed, 2]))}
    audio: dict[Path, np.ndarray] = {}
    for split, items in strings.items():
        wav_dir = out / "wav" / split
        with atomic_dir(wav_dir) as tmp:
            for x in items:
                write_wav(tmp / f"{x.utt}.wav", render_string(x, audio), RATE)
        DataDir(wavs={x.utt: wav_dir / f"{x.utt}.wav" for x in items},
                text={x.utt: x.words for x in items},
                utt2spk={x.utt: x.speaker for x in items}).save(out / split)


def _cmvn_speakers(data: DataDir, part: str) -> DataDir:
    """Give connected recordings speaker ids of their own ("jackson-connected").

    Per-speaker CMVN pools a speaker's utterances; connected strings hold far more silence
    than the trimmed isolated recordings, so pooling both would give statistics that match
    neither kind of test set.
    """
    if not part.startswith("connected"):
        return data
    return DataDir(data.wavs, data.text, {u: f"{spk}-connected" for u, spk in data.utt2spk.items()})


def _choices_table(choices: dict, s: Settings, order: list[str]) -> str:
    """RESULTS.md's section on the weights each system chose on each dev set."""
    columns = [c for c in order if c.startswith("dev")
               and any(c in by_column for by_column in choices.values())]
    lines = ["## Chosen on dev", "",
             "LMWT / word insertion penalty with the fewest errors on each dev set (ties go "
             "to the first in the sweep); the fold's test columns of that grammar are scored "
             "there. GMMs: LMWT "
             f"{', '.join(f'{w:g}' for w in sorted(s.sweep.lm_weights))} (decoded at "
             f"{1 / s.decode_isolated.acoustic_scale:g}), hybrid: LMWT "
             f"{', '.join(f'{w:g}' for w in sorted(s.dnn_sweep.lm_weights))} (decoded at "
             f"{1 / s.dnn_acoustic_scale:g}); penalties "
             f"{', '.join(f'{w:g}' for w in s.sweep.word_penalties)}.", "",
             "| system | " + " | ".join(columns) + " |",
             "| :--- | " + " | ".join("---:" for _ in columns) + " |"]
    rank = {name: i for i, name in enumerate(s.systems)}
    for system, by_column in sorted(choices.items(),
                                    key=lambda kv: (rank.get(kv[0].split("_")[0], 99), kv[0])):
        cells = [("–" if c not in by_column else
                  f"{by_column[c][0]:g} / {by_column[c][1]:g}") for c in columns]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _training_data(s: Settings) -> str:
    """RESULTS.md's sentence on which systems saw which (augmented) training data."""
    a = s.augment
    noisy = (f"one noisy copy of every main-fold recording (SNR drawn from "
             f"{', '.join(str(x) for x in a.noise_snrs)} dB)")
    others = [x for x in s.systems if x not in HYBRIDS]
    text = (f"{', '.join(others) or 'no other system'} train on the clean recordings"
            + (f"; the main fold's triphone GMM also on {noisy}" if a.gmm_noisy else "") + ".")
    if s.hybrids:
        copies = ([f"speed perturbation ×{', ×'.join(f'{f:g}' for f in a.speed_factors)} of "
                   "the held-out folds' isolated recordings"] if a.speed_factors else [])
        copies += [noisy] if a.noise_snrs else []
        text += (" The hybrids also train on augmented copies: " + "; ".join(copies)
                 if copies else " The hybrids train on the clean recordings too")
        text += (". Their validation utterances are drawn by source recording, so a copy "
                 "never validates its own original.")
        gmm = s.gmms[-1]
        text += (f" Their frame targets are {gmm}'s forced alignments"
                 + (" on fMLLR-adapted features (first an alignment by the speaker-independent "
                    "model, then one transform per speaker, then the adapted alignment)"
                    if gmm == "tri3b" else "") + ".")
        if "dnn" in s.systems:
            text += " `dnn` reads 40 log-mel filterbanks with per-speaker CMVN."
        if "dnn_fmllr" in s.systems:
            text += (" `dnn_fmllr` reads what tri3b's GMM scores: the LDA+MLLT features "
                     "through each speaker's fMLLR transform (in training the transform of "
                     "its alignment, every augmented copy a speaker of its own; at test "
                     "time tri3b's first estimate, re-estimated from the network's own "
                     "adapted pass).")
    if "hmmlearn" in s.systems:
        text += (" hmmlearn tunes nothing, so it trains on the dev recordings too (its "
                 "training data are those it had before dev sets existed).")
    if "tri3b" in s.systems:
        text += (" tri3b decodes as Kaldi's decode_fmllr.sh: its speaker-independent "
                 "alignment model decodes, one fMLLR transform per test speaker (a held-out "
                 "speaker's 500 recordings are its adaptation data, unsupervised), "
                 "re-estimated from a decode of the adapted features, which then decode "
                 "again; in training, a speaker's connected strings are a "
                 "speaker of their own, as for CMVN.")
    return text


def _columns(ex: Experiment) -> set[str]:
    return {col for row in load_results(ex.results / "results.json").values() for col in row}


if __name__ == "__main__":
    sys.exit(run_recipe(main))   # an AsrError ends it in one line; --debug: traceback
