#!/usr/bin/env python
"""FSDD: isolated, connected and noisy spoken digits; GMM-HMM, hmmlearn and DNN-HMM systems.

    python recipes/fsdd/run.py [--stage N] [--stop-stage M] [--corpus DIR]

Stages: 0 data, 1 features, 2 monophone, 3 triphone, 4 hmmlearn baseline, 5 hybrid DNN,
6 decode, 7 results. Systems are trained per fold: "main" (conventional split: isolated
and connected training data; tested on isolated, connected and noisy connected digits)
and one "heldout_<speaker>" fold per speaker left out of training entirely.

The GMM systems train on the clean recordings. The hybrid DNN also sees augmented copies
(``[augment]``), with frame targets from the triphone system: speed-perturbed copies of the
isolated recordings in the held-out folds (aligned afresh), and one noisy copy of every
recording in the main fold (white, pink or babble at 20-0 dB; a noisy copy keeps its
clean recording's alignment), as Kaldi's recipes train their neural networks.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from asr.baseline import HmmlearnBaselineConfig, run_baseline
from asr.data import (DataDir, copy_source, locate_corpus, prepare_fsdd_connected,
                      prepare_fsdd_isolated, prepare_noisy, prepare_noisy_copies,
                      prepare_speed_perturbed)
from asr.decoder import DecoderConfig
from asr.experiment import Experiment
from asr.features import FeatureConfig
from asr.fileio import write_json
from asr.gmm.systems import HmmConfig, align_utterances, train_monophone, train_triphone
from asr.gmm.train import GmmTrainConfig
from asr.lexicon import Lexicon
from asr.nnet import NnetConfig, pdf_targets, train_hybrid
from asr.recipe import (Stage, recipe_arguments, resolve_settings, run_parallel, run_recipe,
                        run_record, run_stages, seed_everything, setup_logging, write_settings)
from asr.results import (load_results, plot_curves, plot_results, seed_spread_table,
                         write_results_md)
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
    connected_heldout_speaker: str = "nicolas"
    noise_kinds: list[str] = field(default_factory=lambda: ["white", "pink", "babble"])
    snrs: list[int] = field(default_factory=lambda: [20, 10, 5, 0])


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


@dataclass
class Settings:
    seed: int = 0
    lexicon: str = "data/lexicons/digits.txt"
    systems: list[str] = field(default_factory=lambda: ["mono", "tri", "hmmlearn", "dnn"])
    mono_on_isolated: bool = True
    jobs: int = 2                       # folds trained at once (one process each)
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    hmm: HmmConfig = field(default_factory=HmmConfig)
    mono: GmmTrainConfig = field(default_factory=GmmTrainConfig)
    tri: GmmTrainConfig = field(default_factory=lambda: GmmTrainConfig(num_leaves=300))
    hmmlearn: HmmlearnBaselineConfig = field(default_factory=HmmlearnBaselineConfig)
    dnn_features: FeatureConfig = field(default_factory=lambda: FeatureConfig(
        kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker"))
    dnn: NnetConfig = field(default_factory=NnetConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    decode_isolated: DecoderConfig = field(default_factory=lambda: DecoderConfig("single"))
    decode_connected: DecoderConfig = field(default_factory=DecoderConfig)
    dnn_acoustic_scale: float = 0.2     # hybrid scores are scaled likelihoods: own scale
    # the held-out folds' hybrid is also trained with these seeds (rows "dnn_seed<k>"), so
    # that RESULTS.md gives its mean and spread over seeds
    dnn_extra_seeds: list[int] = field(default_factory=lambda: [1, 2])

    def __post_init__(self):
        if self.dnn.seed in self.dnn_extra_seeds or len(set(self.dnn_extra_seeds)) < len(
                self.dnn_extra_seeds):
            raise ValueError(f"dnn_extra_seeds must differ from each other and from dnn.seed "
                             f"({self.dnn.seed}), got {self.dnn_extra_seeds}")

    def dnn_systems(self, fold: str) -> dict[str, int]:
        """The hybrid systems of one fold: name -> network seed."""
        if "dnn" not in self.systems:
            return {}
        extra = self.dnn_extra_seeds if fold != "main" else []
        return {"dnn": self.dnn.seed, **{f"dnn_seed{k}": k for k in extra}}


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
            sets += [t.data for t in self.tests(fold)]
        return sets


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
        prepare_fsdd_isolated(corpus, ex.data / "isolated", speakers=c.speakers)
        for spk in c.heldout_folds:
            prepare_fsdd_isolated(corpus, ex.data / f"isolated_heldout_{spk}",
                                  heldout_speaker=spk, speakers=c.speakers)
        prepare_fsdd_connected(corpus, ex.data / "connected", c.connected_train,
                               c.connected_test, seed=s.seed, speakers=c.speakers)
        if c.connected_heldout_speaker in c.heldout_folds:
            prepare_fsdd_connected(corpus, ex.data / f"connected_heldout_{c.connected_heldout_speaker}",
                                   c.connected_train, c.connected_test, seed=s.seed,
                                   heldout_speaker=c.connected_heldout_speaker, speakers=c.speakers)
        prepare_noisy(ex.data / "connected/test", ex.data / "noisy",
                      recordings_for_babble=ex.data / "isolated/train", kinds=c.noise_kinds,
                      snrs=c.snrs, seed=s.seed)
        for fold in folds.names:
            DataDir.combine(_cmvn_speakers(DataDir.load(ex.data / p), p)
                            for p in folds.train_parts(fold)).save(ex.data / fold / "train")
        if "dnn" in s.systems or s.augment.gmm_noisy:
            augment()

    def augment():
        """Augmented copies of the folds' training data, for the hybrid (Folds.dnn_train_sets)."""
        a, c = s.augment, s.corpus
        todo = {fold: folds.dnn_train_sets(fold) for fold in folds.names}
        def speed():
            # every isolated recording is perturbed once; each fold takes its training ones
            copies = prepare_speed_perturbed(
                DataDir.combine(DataDir.load(ex.data / f"isolated/{x}") for x in ("train", "test")),
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

    def dnn():
        def task(fold):
            start = time.perf_counter()
            sets = folds.dnn_train_sets(fold)
            for name in sets + [t.data for t in folds.tests(fold)]:
                ex_dnn.make_features(name)
            gmm = ex.load_system(f"{fold}/tri")
            targets, sources = {}, {}
            for name in sets:   # targets: the triphone system's forced alignments
                copies = name != f"{fold}/train"
                if copies:      # augmented copies: validation keeps them with their source
                    sources.update({u: copy_source(u) for u in ex.data_dir(name).utts})
                if name.endswith("_noisy"):   # a noisy copy has its clean recording's frames
                    targets.update({u: targets[copy_source(u)] for u in ex.data_dir(name).utts
                                    if copy_source(u) in targets})
                    continue
                if copies:
                    ex.make_features(name)
                targets.update(pdf_targets(align_utterances(gmm, ex.utterances(name))))
            utts = [u for name in sets for u in ex_dnn.utterances(name)]
            for system, seed in todo[fold].items():
                train_hybrid(utts, targets, gmm, s.dnn_features,
                             dataclasses.replace(s.dnn, seed=seed),
                             ex.system_dir(f"{fold}/{system}_train"), progress, sources
                             ).save(ex.system_dir(f"{fold}/{system}"))
            return time.perf_counter() - start
        todo = {fold: {system: seed for system, seed in s.dnn_systems(fold).items()  # folds
                       if not (ex.system_dir(f"{fold}/{system}") / "manifest.json").exists()}
                for fold in folds.names}           # finished before an interruption stay
        order = sorted((fold for fold in folds.names if todo[fold]),   # longest first
                       key=lambda fold: -len(ex.data_dir(f"{fold}/train")) * len(todo[fold]))
        seconds = run_parallel([lambda fold=fold: task(fold) for fold in order], s.jobs)
        for fold, sec in zip(order, seconds):
            timed(f"train/{fold}/dnn", sec / len(todo[fold]))

    def hmmlearn():
        def task(fold, t):
            train, test = ex.data_dir(f"{fold}/train"), ex.data_dir(t.data)
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
        def task(fold, system):   # one system's decodes; the parent writes results.json
            done = []
            for t in folds.tests(fold):
                cfg = s.decode_isolated if t.isolated else s.decode_connected
                hybrid = system.startswith("dnn")
                if hybrid:
                    cfg = dataclasses.replace(cfg, acoustic_scale=s.dnn_acoustic_scale)
                seconds, result = ex.decode(f"{fold}/{system}", t.data, cfg, t.column,
                                            ex_dnn if hybrid else ex)
                done.append((t.column, result, seconds))
            return done
        jobs = [(fold, system) for fold in folds.names
                for system in [x for x in s.systems if x not in ("hmmlearn", "dnn")]
                + list(s.dnn_systems(fold))]
        outputs = run_parallel([lambda job=job: task(*job) for job in jobs], s.jobs)
        scores: dict[str, dict] = {}
        for (fold, system), done in zip(jobs, outputs):
            for column, result, seconds in done:
                scores.setdefault(system, {})[column] = result
                timed(f"decode/{fold}/{system}/{column}", seconds)
        for system, by_column in scores.items():
            ex.record(system, by_column, run)

    def results():
        c = s.corpus
        heldout = [f"heldout_{spk}" for spk in c.heldout_folds]
        order = (["isolated"] + heldout + ["connected"]
                 + [f"connected_heldout_{c.connected_heldout_speaker}"]
                 + [f"{k}_{snr}dB" for k in c.noise_kinds for snr in c.snrs])
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        lines = ["Isolated columns use a one-word grammar, connected and noisy columns a word "
                 "loop. `heldout_<speaker>`: that speaker is absent from training.", "",
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
        seeded = list(s.dnn_systems(heldout[0] if heldout else "main"))
        if len(seeded) > 1:
            seeds = ", ".join(str(k) for k in s.dnn_systems(heldout[0]).values())
            sections.append(
                f"## Hybrid DNN over {len(seeded)} seeds (held-out folds)\n\n"
                f"The held-out folds' network trained with seeds {seeds} (rows "
                f"{', '.join(f'`{x}`' for x in seeded)}); WER % (errors). Goals are judged on "
                "the mean. Results are bit-identical on one machine and library build, "
                "not across CPU models.\n\n"
                + seed_spread_table(ex.results / "results.json", seeded,
                                    [o for o in order if o.startswith(("heldout_",
                                                                       "connected_heldout_"))],
                                    mean_rows={"heldout mean": heldout}))
        write_results_md(ex.results / "results.json", ex.results / "RESULTS.md",
                         "FSDD: word error rates (%)", system_order=s.systems + seeded[1:],
                         test_set_order=[o for o in order if o in _columns(ex)],
                         notes="\n".join(lines),
                         mean_columns={"heldout mean": heldout}, sections=sections)
        plot_results(ex.results / "results.json", ex.results / "wer.png",
                     "FSDD word error rates", system_order=s.systems,
                     test_set_order=[o for o in order if o in _columns(ex)])
        history = ex.system_dir("main/dnn_train") / "history.json"
        if "dnn" in s.systems and history.exists():
            epochs = json.loads(history.read_text())
            plot_curves({"train": [e["train_acc"] for e in epochs],
                         "valid": [e["valid_acc"] for e in epochs]},
                        ex.results / "dnn_learning_curve.png", "epoch", "frame accuracy",
                        "FSDD hybrid DNN (conventional split)")

    systems = set(s.systems)
    stages = [Stage(0, "data", data, check=find_corpus), Stage(1, "features", features)]
    stages += [Stage(2, "mono", mono)] if systems & {"mono", "tri", "dnn"} else []
    stages += [Stage(3, "tri", tri)] if systems & {"tri", "dnn"} else []
    stages += [Stage(4, "hmmlearn", hmmlearn)] if "hmmlearn" in systems else []
    stages += [Stage(5, "dnn", dnn)] if "dnn" in systems else []
    stages += [Stage(6, "decode", decode), Stage(7, "results", results)]
    run_stages(stages, ex.exp, args.stage, args.stop_stage, args.force,
               clean=[ex.data, ex.results])
    return 0


def _cmvn_speakers(data: DataDir, part: str) -> DataDir:
    """Give connected recordings speaker ids of their own ("jackson-connected").

    Per-speaker CMVN pools a speaker's utterances; connected strings hold far more silence
    than the trimmed isolated recordings, so pooling both would give statistics that match
    neither kind of test set.
    """
    if not part.startswith("connected"):
        return data
    return DataDir(data.wavs, data.text, {u: f"{spk}-connected" for u, spk in data.utt2spk.items()})


def _training_data(s: Settings) -> str:
    """RESULTS.md's sentence on which systems saw which (augmented) training data."""
    a = s.augment
    noisy = (f"one noisy copy of every main-fold recording (SNR drawn from "
             f"{', '.join(str(x) for x in a.noise_snrs)} dB)")
    others = [x for x in s.systems if x != "dnn"]
    text = (f"{', '.join(others) or 'no other system'} train on the clean recordings"
            + (f"; the main fold's triphone GMM also on {noisy}" if a.gmm_noisy else "") + ".")
    if "dnn" in s.systems:
        copies = ([f"speed perturbation ×{', ×'.join(f'{f:g}' for f in a.speed_factors)} of "
                   "the held-out folds' isolated recordings"] if a.speed_factors else [])
        copies += [noisy] if a.noise_snrs else []
        text += (" The hybrid DNN also trains on augmented copies: " + "; ".join(copies)
                 if copies else " The hybrid DNN trains on the clean recordings too")
        text += (". Its validation utterances are drawn by source recording, so a copy "
                 "never validates its own original.")
    return text


def _columns(ex: Experiment) -> set[str]:
    return {col for row in load_results(ex.results / "results.json").values() for col in row}


if __name__ == "__main__":
    sys.exit(run_recipe(main))   # an AsrError ends it in one line; --debug: traceback
