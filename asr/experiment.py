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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import numpy as np
from tqdm import tqdm

from asr.data import DataDir
from asr.decoder import Decoder, DecoderConfig
from asr.evaluate import decode_and_score, decode_with, write_decode
from asr.errors import AudioError, DataError
from asr.features import (FeatureConfig, apply_pipeline, compute_archive,
                          compute_archive_in_memory, merge_archives, read_archive,
                          write_archive)
from asr.features.archive import INDEX_NAME, SKIPPED_NAME
from asr.fileio import atomic_dir
from asr.graph.hclg import load_cached_graph
from asr.jobs import Executor, split_data
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

    def make_features(self, name: str, executor: Executor | None = None) -> None:
        """Compute the base features (MFCC or fbank) of one data set into an archive.

        With ``skip_bad`` an utterance whose audio cannot be used is left out, logged and
        listed in the archive's ``skipped`` file instead of stopping the run.

        With an ``executor`` of ``nj > 1`` jobs the set is split by utterance (base features
        know no speakers; Kaldi's ``make_mfcc.sh`` splits ``wav.scp`` the same way), each job
        writes the archive of its part, and the parts are merged into the one archive a
        single job writes, byte for byte.
        """
        data = self.data_dir(name)
        out = self.feat_dir(name)
        if executor is None:
            compute_archive({u: str(p) for u, p in data.wavs.items()}, self.features, out,
                            progress=self.progress, skip_bad=self.skip_bad)
            return
        inner_progress = self.progress and executor.in_process
        if executor.nj == 1:
            executor.map(_features_job, [(str(data.path.resolve()), self.features,
                                          str(out.resolve()), self.skip_bad, inner_progress,
                                          True)], desc=f"features {name}")
            return
        parts = split_data(data.path, executor.nj, per_utt=True)
        scratch = out.parent / f".{out.name}.split{executor.nj}"
        shutil.rmtree(scratch, ignore_errors=True)
        tasks = [(str(part.path.resolve()), self.features, str((scratch / str(k)).resolve()),
                  self.skip_bad, inner_progress, False)
                 for k, part in enumerate(parts, start=1)]
        skipped: dict[str, str] = {}
        for part_skipped in executor.map(_features_job, tasks, desc=f"features {name}"):
            skipped.update(part_skipped)
        if skipped and len(skipped) == len(data):
            raise AudioError(out, f"none of the {len(data)} audio files could be used; the "
                             f"first error: {skipped[min(skipped)]}")
        if skipped:
            log.warning("%s: skipped %d of %d utterances whose audio could not be used "
                        "(listed in %s)", out, len(skipped), len(data), out / SKIPPED_NAME)
        merge_archives([scratch / str(k) for k in range(1, len(parts) + 1)], out,
                       self.features, skipped=skipped_text(skipped) if self.skip_bad else None)
        shutil.rmtree(scratch, ignore_errors=True)

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

    def alignments(self, system: str, name: str, executor: Executor | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Forced alignments of data set ``name`` by ``system``, as Kaldi's ``exp/<gmm>_ali``.

        A speaker-adapted system aligns as ``align_fmllr.sh`` does (``align_adapted``). Kept
        in ``<system>/ali_<name>/`` (``targets.npz``, ``trans.npz``), which a retrained
        system's directory no longer holds, so the hybrids trained on them align once.
        With an ``executor`` the set is split by speaker into ``executor.nj`` parts (at most
        one per speaker), one job each (:func:`align_job`); every utterance and speaker is
        aligned and adapted as in one job, so the targets and transforms are the same.

        Returns
        -------
        targets : utt -> (T,) int64 pdf ids (utterances that failed to align are absent).
        transforms : speaker -> fMLLR W (D, D+1) (empty for a speaker-independent system).
        """
        from asr.nnet import load_targets, save_targets
        from asr.transforms.fmllr import load_transforms, save_transforms

        folder = self.system_dir(system) / f"ali_{name.replace('/', '_')}"
        if not (folder / "targets.npz").is_file():
            data = self.data_dir(name)
            parts = ([data.utts] if executor is None else
                     [p.utts for p in split_data(data.path, min(executor.nj, len(data.spk2utt)))])
            tasks = [AlignJob(str(self.system_dir(system).resolve()),
                              str(self.feat_dir(name).resolve()), str(data.path.resolve()),
                              utts, self.skip_bad,
                              self.progress and (executor is None or executor.in_process))
                     for utts in parts]
            targets: dict[str, np.ndarray] = {}
            transforms: dict[str, np.ndarray] = {}
            done = (map(align_job, tasks) if executor is None else
                    executor.map(align_job, tasks, desc=f"align {system} {name}"))
            for part in done:
                targets.update(part["targets"])
                transforms.update(part["transforms"])
            with atomic_dir(folder) as tmp:
                save_targets(tmp / "targets.npz", {u: targets[u] for u in sorted(targets)})
                save_transforms(tmp / "trans.npz", transforms)
        return load_targets(folder / "targets.npz"), load_transforms(folder / "trans.npz")

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
               column: str | None = None, features: "Experiment | None" = None,
               executor: Executor | None = None) -> tuple[float, WerResult]:
        """Decode one test set with one system: returns (seconds, result).

        ``column`` names the result (default: the test set); ``features`` is the experiment
        whose feature archives the system reads (default: this one). The result is not
        recorded: the caller gathers a system's results and calls :meth:`record`. A
        speaker-adapted system adapts to the test set's speakers (``trans.npz`` in the decode
        folder).

        With an ``executor`` the test set is split into ``executor.nj`` parts (by speaker;
        by utterance when it has fewer speakers than jobs) and each job decodes its part;
        hypotheses, scores and transforms are the same as from one job (see
        :func:`decode_job`).
        """
        if executor is not None:
            return self._decode_jobs(system, test_set, cfg, column, features, executor)
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

    def _decode_jobs(self, system: str, test_set: str, cfg: DecoderConfig | None,
                     column: str | None, features: "Experiment | None", executor: Executor
                     ) -> tuple[float, WerResult]:
        data = self.data_dir(test_set)
        column = column or test_set
        out = self.system_dir(system) / f"decode_{column}"
        start = time.perf_counter()
        # the graph is built (or found) here, once: the jobs read its file
        graph_file = self.load_system(system).graph(cfg, cache=self.graph_cache).path
        graph_seconds = time.perf_counter() - start
        by_utterance = executor.nj > len(data.spk2utt)
        parts = split_data(data.path, executor.nj, per_utt=by_utterance)
        feat_dir = (features or self).feat_dir(test_set)
        tasks = [DecodeJob(str(self.system_dir(system).resolve()), str(feat_dir.resolve()),
                           str(data.path.resolve()), part.utts, cfg,
                           str(graph_file.resolve()), self.skip_bad,
                           self.progress and executor.in_process)
                 for part in parts]
        decode_start = time.perf_counter()
        hyps: dict[str, list[str]] = {}
        transforms: dict[str, np.ndarray] = {}
        frames = 0
        for part in executor.map(decode_job, tasks, desc=f"decode {system} {column}"):
            hyps.update(part["hyps"])
            transforms.update(part["transforms"])
            frames += part["frames"]
        refs = {u: data.text[u] for u in data.utts if u in hyps}   # skipped ones: not scored
        result = write_decode(out, str(out), refs, {u: hyps[u] for u in sorted(hyps)},
                              transforms, graph_seconds, time.perf_counter() - decode_start,
                              frames)
        return time.perf_counter() - start, result


def skipped_text(skipped: dict[str, str]) -> str:
    """The ``skipped`` file of an archive: ``<utt-id> <error>`` per line, sorted."""
    return "".join(f"{u} {' '.join(skipped[u].split())}\n" for u in sorted(skipped))


def _features_job(task: tuple) -> dict[str, str]:
    """One job of :meth:`Experiment.make_features`: the archive of one part of a data set.

    ``task``: (part's data directory, FeatureConfig, archive folder, skip_bad, progress,
    whole set). Returns utterance id -> error of each utterance skipped as bad.
    """
    data_path, cfg, out, skip_bad, progress, whole = task
    data = DataDir.load(data_path)
    wavs = {u: str(p) for u, p in data.wavs.items()}
    if whole:       # one job: exactly compute_archive, its checks and messages included
        compute_archive(wavs, cfg, out, progress=progress, skip_bad=skip_bad)
        return {}
    skipped: dict[str, str] = {}
    feats = compute_archive_in_memory(wavs, cfg, progress, skip_bad, skipped)
    write_archive(out, feats, cfg, skipped=skipped_text(skipped) if skip_bad else None)
    return skipped


@dataclass
class AlignJob:
    """One job of :meth:`Experiment.alignments`: the utterances ``utts`` (whole speakers)
    of a data set."""

    system_dir: str
    feat_dir: str
    data_dir: str
    utts: list[str]
    skip_bad: bool
    progress: bool


def align_job(job: AlignJob) -> dict:
    """Alignments of one part: ``{"targets": utt -> (T,) pdf ids, "transforms": speaker ->
    fMLLR W}`` (``asr.gmm.sat.align_adapted``: its speakers' transforms, then the adapted
    alignment)."""
    from asr.gmm.sat import align_adapted
    from asr.nnet import pdf_targets

    data = DataDir.load(job.data_dir)
    raw = _part_features(job.feat_dir, job.data_dir, job.utts, job.skip_bad)
    utts = [Utterance(u, raw[u], data.text[u]) for u in job.utts if u in raw]
    aligned, transforms = align_adapted(AsrSystem.load(job.system_dir), utts,
                                        {u.utt: data.utt2spk[u.utt] for u in utts},
                                        progress=job.progress)
    return {"targets": pdf_targets(aligned), "transforms": transforms}


def _part_features(feat_dir: str, data_dir: str, utts: list[str], skip_bad: bool
                   ) -> dict[str, np.ndarray]:
    """Base features of ``utts`` from the archive; a missing one is a DataError naming the
    archive unless ``skip_bad`` (then it is left out)."""
    raw = read_archive(feat_dir, utts=utts)
    missing = sorted(set(utts) - set(raw))
    if missing and not skip_bad:
        raise DataError(Path(feat_dir) / INDEX_NAME,
                        f"lacks features of {len(missing)} utterance(s) of "
                        f"{Path(data_dir) / 'wav.scp'} (e.g. {missing[0]!r}); rerun the "
                        "features stage, or pass --skip-bad-utts to leave them out")
    return raw


@dataclass
class DecodeJob:
    """One job of :meth:`Experiment.decode` (or, with ``lattices``, of
    ``asr.lvcsr.decode_lattices``): the utterances ``utts`` of a test set."""

    system_dir: str
    feat_dir: str
    data_dir: str
    utts: list[str]
    cfg: DecoderConfig | None
    graph_file: str               # the cached HCLG.npz (``DecodingGraph.path``)
    skip_bad: bool
    progress: bool
    lattices: bool = False


def decode_job(job: DecodeJob) -> dict:
    """Hypotheses of one part of a test set: ``{"hyps", "transforms", "frames"}``; with
    ``job.lattices``, its lattices instead: ``{"lattices", "words", "seconds",
    "transforms", "frames"}`` (``seconds``: adaptation, scoring and search in this job).

    The features of every speaker the part touches are read and normalised whole, so
    per-speaker CMVN and a speaker-adapted system's fMLLR see exactly what one job sees
    (a speaker shared by two parts is adapted in both, to the same transform); only the
    part's own utterances are decoded.
    """
    data = DataDir.load(job.data_dir)
    speakers = {data.utt2spk[u] for u in job.utts}
    utts = [u for u in data.utts if data.utt2spk[u] in speakers]
    raw = _part_features(job.feat_dir, job.data_dir, utts, job.skip_bad)
    model = AsrSystem.load(job.system_dir)
    utt2spk = {u: data.utt2spk[u] for u in raw}
    feats = model.model_input({u: raw[u] for u in utts if u in raw}, utt2spk)
    decoder = Decoder(load_cached_graph(job.graph_file), job.cfg or model.decoding)
    transforms: dict[str, np.ndarray] = {}
    if job.lattices:
        start = time.perf_counter()
        feats, transforms = model.adapt(feats, utt2spk, decoder, job.progress)
        out = {"lattices": {}, "words": decoder.graph.words}
        for utt in tqdm(sorted(set(job.utts) & set(feats)), desc="decode lattices",
                        disable=not job.progress, leave=False):
            scores = model.model.log_likelihoods(feats[utt])
            out["lattices"][utt] = decoder.search.decode_lattice(scores)[1]
        out["seconds"] = time.perf_counter() - start
        done = out["lattices"]
    else:
        out = {"hyps": decode_with(model, decoder, feats, job.progress, utt2spk, transforms,
                                   only=job.utts)}
        done = out["hyps"]
    own = {data.utt2spk[u] for u in done}
    out.update(transforms={s: w for s, w in transforms.items() if s in own},
               frames=sum(len(feats[u]) for u in done))
    return out
