"""What every recipe does with a corpus: features, training sets, systems, decodes, results.

Recipes differ in their data preparation and their list of systems; the steps below are
shared so that no recipe copies another. Paths follow Kaldi's layout::

    data/<corpus>/<set>/              Kaldi data directories
    exp/<corpus>/feats/<set>/         feature archives
    exp/<corpus>/<system>/            model directory of a trained system, train.log
    exp/<corpus>/<system>/decode_<set>/   hyp.txt, per_utt, wer, timing
    exp/<corpus>/graphs/<key>/        HCLG.npz, words.txt (shared by systems with one tree)
    results/<corpus>/                 results.json, RESULTS.md, plots (committed)
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import numpy as np

from asr.data import DataDir
from asr.decoder import DecoderConfig
from asr.evaluate import decode_and_score
from asr.errors import DataError
from asr.features import FeatureConfig, apply_pipeline, compute_archive, read_archive
from asr.features.archive import INDEX_NAME
from asr.results import record_system
from asr.scoring import WerResult
from asr.system import AsrSystem
from asr.training import Utterance

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """Paths and shared steps of one recipe run."""

    corpus: str
    data_root: Path
    exp_root: Path
    results_root: Path
    features: FeatureConfig
    progress: bool = True
    feats_name: str = "feats"     # a second front end (e.g. the network's) uses another name
    skip_bad: bool = False        # --skip-bad-utts: leave out utterances whose audio is unusable

    @property
    def data(self) -> Path:
        return self.data_root / self.corpus

    @property
    def exp(self) -> Path:
        return self.exp_root / self.corpus

    @property
    def results(self) -> Path:
        return self.results_root / self.corpus

    def with_features(self, features: FeatureConfig, feats_name: str) -> "Experiment":
        """The same experiment with a second front end (e.g. the network's), whose
        archives live under ``exp/<corpus>/<feats_name>/``."""
        return dataclasses.replace(self, features=features, feats_name=feats_name)

    def data_dir(self, name: str) -> DataDir:
        return DataDir.load(self.data / name)

    def feat_dir(self, name: str) -> Path:
        return self.exp / self.feats_name / name

    def make_features(self, name: str) -> None:
        """Compute the base features (MFCC or fbank) of one data set into an archive.

        With ``skip_bad`` an utterance whose audio cannot be used is left out, logged and
        listed in the archive's ``skipped`` file instead of stopping the run.
        """
        data = self.data_dir(name)
        compute_archive({u: str(p) for u, p in data.wavs.items()}, self.features,
                        self.feat_dir(name), progress=self.progress, skip_bad=self.skip_bad)

    def raw_features(self, name: str) -> dict[str, np.ndarray]:
        """Base features (utt -> (T, base_dim), the archive's) of one data set, sorted by id.

        Every utterance of the data set must have features, except (with ``skip_bad``)
        those the features stage skipped, which are left out here too.
        """
        data = self.data_dir(name)
        raw = read_archive(self.feat_dir(name))
        missing = sorted(set(data.wavs) - set(raw))
        if missing and not self.skip_bad:
            raise DataError(self.feat_dir(name) / INDEX_NAME,
                            f"lacks features of {len(missing)} utterance(s) of "
                            f"{data.path / 'wav.scp'} (e.g. {missing[0]!r}); rerun the features "
                            "stage, or pass --skip-bad-utts to leave them out")
        if missing:
            log.warning("%s: %d of %d utterances have no features and are left out (e.g. %s)",
                        name, len(missing), len(data), missing[0])
        return {u: raw[u] for u in data.utts if u in raw}

    def load_features(self, name: str, features: FeatureConfig | AsrSystem | None = None
                      ) -> dict[str, np.ndarray]:
        """Features of one data set as a model sees them.

        ``features``: a system (its ``model_input``: pipeline, then its feature transform),
        or a FeatureConfig (CMVN, deltas and splicing only); default: this experiment's.
        """
        raw = self.raw_features(name)
        utt2spk = self.data_dir(name).utt2spk
        if isinstance(features, AsrSystem):
            return features.model_input(raw, utt2spk)
        return apply_pipeline(raw, features or self.features, utt2spk)

    def utterances(self, name: str, features: FeatureConfig | AsrSystem | None = None,
                   vocabulary: Collection[str] | None = None, raw: bool = False
                   ) -> list[Utterance]:
        """Training utterances (id, features, words) of one data set, in sorted id order.

        Features as :meth:`load_features` gives them for ``features`` (a system's model
        input, or a FeatureConfig's pipeline), or with ``raw`` the base features.

        With ``vocabulary`` (e.g. ``lexicon.words``) a transcript word outside it is a
        DataError naming the ``text`` file and line, before any features are read.
        """
        data = self.data_dir(name)
        if vocabulary is not None:
            data.check_vocabulary(vocabulary)
        feats = self.raw_features(name) if raw else self.load_features(name, features)
        return [Utterance(u, feats[u], data.text[u]) for u in data.utts if u in feats]

    @property
    def graph_cache(self) -> Path:
        """Decoding graphs, one folder per (lang, G, tree, transitions, scales)."""
        return self.exp / "graphs"

    def system_dir(self, system: str) -> Path:
        return self.exp / system

    def load_system(self, system: str) -> AsrSystem:
        return AsrSystem.load(self.system_dir(system))

    def skipped_utterances(self) -> int:
        """Utterances the features stages left out as bad (``--skip-bad-utts``), all front ends."""
        return sum(len(path.read_text(encoding="utf-8").splitlines())
                   for path in sorted(self.exp.glob("*/**/skipped")) if path.is_file())

    def record(self, system: str, scores: dict[str, WerResult], run: dict) -> None:
        """Write ``system``'s whole row of results.json (test set -> result) from ``run``
        (``asr.recipe.run_record``), with the number of utterances skipped as bad."""
        record_system(self.results / "results.json", system, scores,
                      {**run, "skipped_utts": self.skipped_utterances()})

    def decode(self, system: str, test_set: str, cfg: DecoderConfig | None = None,
               column: str | None = None, features: "Experiment | None" = None
               ) -> tuple[float, WerResult]:
        """Decode one test set with one system: returns (seconds, result).

        ``column`` names the result (default: the test set); ``features`` is the experiment
        whose feature archives the system reads (default: this one). The result is not
        recorded: the caller gathers a system's results and calls :meth:`record`. A
        speaker-adapted system adapts to the test set's speakers (``trans.npz`` in the decode
        folder).
        """
        model = self.load_system(system)
        data = self.data_dir(test_set)
        feats = (features or self).load_features(test_set, model)
        column = column or test_set
        out = self.system_dir(system) / f"decode_{column}"
        start = time.perf_counter()
        refs = {u: data.text[u] for u in data.utts if u in feats}   # skipped ones: not scored
        result = decode_and_score(model, feats, refs, out, str(out), cfg, self.progress,
                                  graph_cache=self.graph_cache, utt2spk=data.utt2spk)
        return time.perf_counter() - start, result

