"""One EM job: label a part's frames, accumulate statistics speaker by speaker.

A GMM training pass runs :func:`run_pass` once per part of the data (one speaker split),
in-process or through an ``asr.jobs.Executor``. Each job reads its utterances itself
(``asr.gmm.source``), one speaker at a time, and

1. labels every frame (the E-step): forward-backward over the utterance's training graph
   (``"baum-welch"``), a forced alignment (``"align"``), or the alignment an earlier pass
   of the same run saved (``"saved"``); scores are computed only for the pdfs the
   utterance's graph uses;
2. adds the statistics, as asked: GMM (``GmmStats``), transition counts, feature moments,
   decision-tree contexts (``ContextStats``), LDA, MLLT; or estimates fMLLR transforms of
   its speakers (whole speakers are in one part). GMM and MLLT statistics of a block's
   labelled frames are gathered over its utterances and added in one vectorised call;
   the others are added per utterance;
3. saves its part's alignments (``ali.<k>.npz`` in the pass's folder) atomically.

Every block's statistics (one speaker's utterances, or in a source without speakers a fixed
group of utterances, ``UtteranceSource.blocks``; added in float64 in a fixed order) are
rounded once onto the fixed-point grid of ``asr.exact`` and summed exactly, so the
driver's totals are the same bits for any number of jobs and any engine. A job returns a
:class:`PassResult`: plain arrays, no features.

Glossary of ids: pdf ids are those of the labelling system's tree (``PassTask.label``)
for tree, LDA and fMLLR statistics, and of the trained GMM for GMM and MLLT statistics
(one tree in both, except in the passes that grow a new tree); transition ids are
``2 * transition state + (0 self-loop, 1 forward)``; frames count from 0 per utterance.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr.decoder.decoder import TrainingAligner
from asr.exact import ExactSum, from_fixed, to_fixed
from asr.gmm.diag_gmm import DiagGmm
from asr.gmm.source import FeatureView, UtteranceSource
from asr.gmm.stats import GmmStats, gaussian_statistics
from asr.hmm.forward_backward import forward_backward
from asr.hmm.graph import Graph, training_graph
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextStats, ContextTree
from asr.lexicon import Lexicon

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Labeller:
    """How a job labels frames: a model, its HMMs, the features it scores, and the mode.

    mode : ``"baum-welch"`` (posteriors), ``"align"`` (a new forced alignment, saved),
        ``"saved"`` (the alignment saved by an earlier pass in ``ali_dir``), or ``"none"``
        (no labels: feature moments only; the model may be None).
    """

    gmm: DiagGmm | None
    view: FeatureView
    lexicon: Lexicon | None
    tree: ContextTree | None
    tm: TransitionModel | None
    mode: str = "align"
    silence_prob: float = 0.5
    acoustic_scale: float = 0.1
    beam: float = 10.0
    retry_beam: float = 40.0
    min_posterior: float = 1e-5
    cross_word: bool | None = None    # training graphs' contexts (None: the tree's)


@dataclass(eq=False)
class MlltRequest:
    """MLLT statistics under the labeller's model and features; ``silence`` (num_pdfs,)
    bool, whose frames weigh ``silence_weight``."""

    silence: np.ndarray
    silence_weight: float


@dataclass(eq=False)
class FmllrRequest:
    """One fMLLR transform per speaker under the labeller's model: posteriors on the
    labeller's (adapted) features, statistics on ``si_view``'s; ``previous`` speaker ->
    W (D, D+1) starts each estimate (None: identity)."""

    si_view: FeatureView
    silence: np.ndarray
    silence_weight: float
    min_count: float
    passes: int
    previous: dict[str, np.ndarray] | None = None


@dataclass(eq=False)
class LdaRequest:
    """LDA statistics of ``view``'s features, classes = the labeller's pdfs."""

    view: FeatureView
    num_classes: int
    silence_phone: int
    silence_weight: float


@dataclass(eq=False)
class PassTask:
    """One job of one pass: a part of the data and what to compute on it.

    gmm, gmm_view : accumulate GMM statistics of this model on these features (labels from
        ``label``), with transition counts; None: no GMM statistics.
    two_feats_view : with ``gmm``: Gaussian posteriors on ``gmm_view``, statistics of this
        view's features (the SAT alignment model, Kaldi's ``gmm-acc-stats-twofeats``).
    moments_view, tree_view : feature moments / tree context statistics of these features.
    """

    part: int
    source: UtteranceSource
    label: Labeller
    ali_dir: str
    gmm: DiagGmm | None = None
    gmm_view: FeatureView | None = None
    two_feats_view: FeatureView | None = None
    moments_view: FeatureView | None = None
    tree_view: FeatureView | None = None
    mllt: MlltRequest | None = None
    fmllr: FmllrRequest | None = None
    lda: LdaRequest | None = None


@dataclass(eq=False)
class PassResult:
    """What a job returns: exact sums (``asr.exact``) and small per-speaker results.

    sums : ExactSum of the statistics asked for (see :func:`run_pass`).
    tree : context key (left, phone, right, state) -> (3, 1 + 2D) int64 limbs.
    utts, failed : utterances seen, and those with no path through their graph.
    transforms, aux : speaker -> fMLLR W (D, D+1), and its auxiliary history per frame.
    """

    sums: ExactSum
    tree: dict[tuple[int, int, int, int], np.ndarray] = field(default_factory=dict)
    utts: int = 0
    failed: list[str] = field(default_factory=list)
    transforms: dict[str, np.ndarray] = field(default_factory=dict)
    aux: dict[str, list[float]] = field(default_factory=dict)
    tree_block: ContextStats | None = None       # the current speaker's, in float64

    def flush_tree(self) -> None:
        """Add the current speaker's tree statistics to the exact sums."""
        if self.tree_block is None or not self.tree_block.stats:
            return
        keys = list(self.tree_block.stats)
        fixed = to_fixed(np.stack([self.tree_block.stats[k] for k in keys]))
        for i, key in enumerate(keys):
            if key in self.tree:
                self.tree[key] += fixed[:, i]
            else:
                self.tree[key] = fixed[:, i].copy()
        self.tree_block = None

    def merge(self, other: "PassResult") -> "PassResult":
        self.flush_tree()
        other.flush_tree()
        self.sums.merge(other.sums)
        for key, limbs in other.tree.items():
            if key in self.tree:
                self.tree[key] = self.tree[key] + limbs
            else:
                self.tree[key] = limbs
        self.utts += other.utts
        self.failed += other.failed
        self.transforms.update(other.transforms)
        self.aux.update(other.aux)
        return self

    def gmm_stats(self, num_gauss: int, dim: int) -> GmmStats:
        stats = GmmStats(num_gauss, dim)
        stats.occ, stats.first, stats.second = (self.sums.total(k)
                                                for k in ("occ", "first", "second"))
        stats.log_likelihood = float(self.sums.total("gmm_ll"))
        stats.frames = float(self.sums.total("gmm_frames"))
        return stats

    def context_stats(self) -> ContextStats:
        """The tree statistics, keys in sorted order."""
        self.flush_tree()
        first = next(iter(self.tree.values()), np.zeros((3, 1), dtype=np.int64))
        stats = ContextStats((first.shape[1] - 1) // 2)
        for key in sorted(self.tree):
            stats.stats[key] = from_fixed(self.tree[key])
        return stats

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(frames, mean (D,), variance (D,)) of the moments' features."""
        n = float(self.sums.total("mom_n"))
        mean = self.sums.total("mom_sum") / max(n, 1.0)
        return n, mean, np.maximum(self.sums.total("mom_sq") / max(n, 1.0) - mean ** 2, 0.0)


def ali_path(ali_dir: str | Path, part: int) -> Path:
    return Path(ali_dir) / f"ali.{part}.npz"


def load_alignments(ali_dir: str | Path, part: int) -> dict[str, np.ndarray]:
    """utt -> (T,) node path, of one part (empty when the part has none yet)."""
    return {utt: rec[0] for utt, rec in _load_records(ali_dir, part).items()}


def _load_records(ali_dir: str | Path, part: int
                  ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """utt -> (node path, pdf of each frame, transition state of each frame), each (T,)."""
    path = ali_path(ali_dir, part)
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        arrays = [np.asarray(data[k], dtype=np.int64) for k in ("path", "pdf", "tstate")]
        return {str(utt): tuple(a[lo:hi] for a in arrays)
                for utt, lo, hi in zip(data["utts"], bounds[:-1], bounds[1:])}


def _save_alignments(ali_dir: str | Path, part: int,
                     records: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """One part's alignments as one ``.npz`` (written atomically): ``utts`` (U,), their
    ``lengths`` (U,), and the concatenated node ``path``, ``pdf`` and ``tstate`` per frame."""
    from asr.models import save_arrays

    Path(ali_dir).mkdir(parents=True, exist_ok=True)
    utts = sorted(records)
    cat = {k: (np.concatenate([records[u][i] for u in utts]) if utts
               else np.zeros(0)).astype(np.int32)
           for i, k in enumerate(("path", "pdf", "tstate"))}
    save_arrays(ali_path(ali_dir, part), {"utts": np.array(utts, dtype=str),
                                          "lengths": np.array([len(records[u][0])
                                                               for u in utts], dtype=np.int64),
                                          **cat})


def _shapes(task: PassTask, dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"label_ll": (), "label_frames": ()}
    if task.gmm is not None:
        g, d = task.gmm.num_gauss, dims["gmm"]
        shapes.update(occ=(g,), first=(g, d), second=(g, d), gmm_ll=(), gmm_frames=(),
                      tcounts=(2 * task.label.tm.num_tstates,))
    if task.moments_view is not None:
        d = dims["moments"]
        shapes.update(mom_n=(), mom_sum=(d,), mom_sq=(d,))
    if task.mllt is not None:
        d = dims["label"]
        shapes.update(mllt_beta=(), mllt_G=(d, d, d))
    if task.lda is not None:
        c, d = task.lda.num_classes, dims["lda"]
        shapes.update(lda_counts=(c,), lda_first=(c, d), lda_second=(d, d))
    return shapes


def run_pass(task: PassTask) -> PassResult:
    """Run one job (module-level, so that any engine can import it); see the module."""
    label = task.label
    ali_dir = task.ali_dir
    saved = _load_records(ali_dir, task.part) if label.mode == "saved" else {}
    new_paths: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    # a saved alignment holds the pdfs and transition states along it: no graph needed
    need_graph = label.mode != "saved" or task.tree_view is not None or task.lda is not None
    graphs = _TrainingGraphs(label) if need_graph else None
    result: PassResult | None = None
    for block in task.source.blocks():
        batch = _Batch()
        for spk, utts in block:
            result = _speaker_pass(task, spk, utts, saved, new_paths, graphs, batch, result)
        batch.flush(task, result.sums)
        result.sums.flush()          # one block (a speaker): rounded once, summed exactly
        result.flush_tree()
    if label.mode == "align":
        _save_alignments(ali_dir, task.part, new_paths)
    if result is None:
        result = PassResult(ExactSum({}))
    return result


def _speaker_pass(task: PassTask, spk: str, utts, saved: dict, new_paths: dict,
                  graphs: "_TrainingGraphs | None", batch: "_Batch",
                  result: "PassResult | None") -> "PassResult":
    """Label and accumulate one speaker's utterances into the current block (``batch`` and
    the staged sums); estimate its fMLLR transform if asked. Returns the result (made on
    the first speaker, when the features' dimensions are known)."""
    label = task.label
    raw = {u: f for u, f, _ in utts}
    feats = label.view.apply(spk, raw)
    views = {"gmm": task.gmm_view, "two": task.two_feats_view,
             "moments": task.moments_view, "tree": task.tree_view,
             "lda": None if task.lda is None else task.lda.view,
             "si": None if task.fmllr is None else task.fmllr.si_view}
    applied = {k: (feats if v is label.view else v.apply(spk, raw))
               for k, v in views.items() if v is not None}
    if result is None:
        dims = {"label": next(iter(feats.values())).shape[1]}
        dims.update({k: next(iter(v.values())).shape[1] for k, v in applied.items()})
        result = PassResult(ExactSum(_shapes(task, dims)))
    targets = {}
    for utt, _, words in utts:
        if label.mode == "none":
            result.utts += 1
            _moments(result.sums, applied["moments"][utt])
            continue
        made = None if graphs is None else graphs[words]
        graph = None if made is None else made.graph
        labels = _label(label, made, feats[utt], saved.get(utt), result, utt)
        result.utts += 1
        if labels is None:
            continue
        frames, nodes, pdfs, weights, tcounts = labels
        if label.mode == "align":
            new_paths[utt] = (nodes, pdfs, graph.tstate[nodes])
        mine = {k: v[utt] for k, v in applied.items()}
        _accumulate(task, result, graph, frames, nodes, pdfs, weights, mine)
        batch.add(task, frames, pdfs, weights, tcounts, feats[utt], mine)
        if batch.frames >= _BATCH_FRAMES:
            batch.flush(task, result.sums)
        if task.fmllr is not None:
            targets[utt] = (frames, pdfs, weights * np.where(
                task.fmllr.silence[pdfs], task.fmllr.silence_weight, 1.0))
    if task.fmllr is not None:
        _speaker_fmllr(task, result, spk, targets, applied["si"])
    return result


def graph_log_likelihoods(gmm: DiagGmm, graph: Graph, feats: np.ndarray
                          ) -> tuple[Graph, np.ndarray]:
    """Score only the K pdfs a training graph uses: (the graph with its pdfs renumbered
    0..K-1, (T, K) log-likelihoods). An utterance's graph uses a few hundred of a triphone
    system's thousands of pdfs; its node paths are the same in either graph."""
    local, used = _local_graph(graph)
    return local, gmm.log_likelihoods(feats, pdfs=used)


def _local_graph(graph: Graph) -> tuple[Graph, np.ndarray]:
    """(the graph with its pdfs renumbered 0..K-1, the K pdfs it uses in order)."""
    used = np.unique(graph.pdf)
    return dataclasses.replace(graph, pdf=np.searchsorted(used, graph.pdf).astype(
        graph.pdf.dtype)), used


class _TrainingGraph:
    """One transcript's training graph and what labelling with it needs, each made on first
    use: the graph with its pdfs renumbered 0..K-1 over those it uses, the labelling
    GMM's Gaussians of those pdfs, and the aligner's search."""

    def __init__(self, graph: Graph, label: Labeller):
        self.graph, self.label = graph, label
        self._local: Graph | None = None
        self._scorer = self._aligner = None

    def scores(self, feats: np.ndarray) -> tuple[Graph, np.ndarray]:
        """(the local graph, (T, K) log-likelihoods of the pdfs it uses)."""
        if self._local is None:
            self._local, used = _local_graph(self.graph)
            self._scorer = self.label.gmm.subset(used)
        return self._local, self._scorer.log_likelihoods(feats)

    def align(self, loglik: np.ndarray) -> np.ndarray | None:
        """The best node path (T,) for ``loglik`` from :meth:`scores`, or None."""
        if self._aligner is None:
            label = self.label
            self._aligner = TrainingAligner(self._local, label.tm, label.acoustic_scale,
                                            label.beam, label.retry_beam)
        return self._aligner(loglik)


class _TrainingGraphs:
    """A job's training graphs by transcript, the ``size`` last used kept: a corpus of
    isolated words repeats a few transcripts thousands of times, a corpus of sentences
    none (then each is made once per pass, as without them)."""

    def __init__(self, label: Labeller, size: int = 64):
        self.label, self.size = label, size
        self._made: OrderedDict[tuple[str, ...], _TrainingGraph] = OrderedDict()

    def __getitem__(self, words: list[str]) -> _TrainingGraph:
        key = tuple(words)
        made = self._made.pop(key, None)
        if made is None:
            label = self.label
            made = _TrainingGraph(training_graph(words, label.lexicon, label.tree, label.tm,
                                                 label.silence_prob, label.cross_word), label)
        self._made[key] = made
        if len(self._made) > self.size:
            self._made.popitem(last=False)
        return made


def _label(label: Labeller, made: _TrainingGraph | None, feats: np.ndarray, saved,
           result: PassResult, utt: str):
    """(frames, nodes, pdfs, weights, transition counts) of one utterance's labels, each
    (K,) but the counts (num_tids,); None when it has no path (listed in
    ``result.failed``) or no saved alignment. ``made`` may be None with a saved one."""
    num_tids = 2 * label.tm.num_tstates
    if label.mode == "saved":
        if saved is None or len(saved[0]) != len(feats):
            return None
        path, pdfs, tstates = saved
    else:
        graph = made.graph
        local, loglik = made.scores(feats)
        if label.mode == "baum-welch":
            post = forward_backward(local, label.tm, loglik)
            if not np.isfinite(post.log_likelihood):
                result.failed.append(utt)
                return None
            t, n = np.nonzero(post.node_posteriors > label.min_posterior)
            result.sums.stage("label_ll", np.array(post.log_likelihood))
            result.sums.stage("label_frames", np.array(float(len(feats))))
            return (t, n, graph.pdf[n].astype(np.int64), post.node_posteriors[t, n],
                    post.transition_counts(graph, num_tids))
        path = made.align(loglik)
        if path is None:
            result.failed.append(utt)
            return None
        pdfs, tstates = graph.pdf[path].astype(np.int64), graph.tstate[path]
    result.sums.stage("label_frames", np.array(float(len(feats))))
    return (np.arange(len(path)), path, pdfs, np.ones(len(path)),
            _tstate_transition_counts(path, tstates, num_tids))


def _tstate_transition_counts(path: np.ndarray, tstates: np.ndarray, num_tids: int
                              ) -> np.ndarray:
    """:func:`path_transition_counts` from the transition state of each frame (T,)."""
    tids = 2 * tstates[:-1] + (path[1:] != path[:-1])
    counts = np.bincount(tids, minlength=num_tids).astype(np.float64)
    counts[2 * tstates[-1] + 1] += 1.0
    return counts


def path_transition_counts(graph: Graph, path: np.ndarray, num_tids: int) -> np.ndarray:
    """Count of each transition id along a node path (the exit after the last frame included)."""
    return _tstate_transition_counts(path, graph.tstate[path], num_tids)


_BATCH_FRAMES = 65536     # labelled rows gathered before GMM and MLLT statistics are added


class _Batch:
    """One block's labelled rows (or up to ``_BATCH_FRAMES`` of them), gathered over its
    utterances so that GMM and MLLT statistics are added in one vectorised call each."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}
        self.tcounts: np.ndarray | None = None
        self.frames = 0

    def add(self, task: PassTask, frames: np.ndarray, pdfs: np.ndarray, weights: np.ndarray,
            tcounts: np.ndarray, label_feats: np.ndarray, feats: dict[str, np.ndarray]) -> None:
        rows = {}
        if task.gmm is not None:
            rows.update(gmm_x=feats["gmm"][frames], pdfs=pdfs, weights=weights)
            if task.two_feats_view is not None:
                rows["two_x"] = feats["two"][frames]
            self.tcounts = tcounts if self.tcounts is None else self.tcounts + tcounts
        if task.mllt is not None:
            w = weights * np.where(task.mllt.silence[pdfs], task.mllt.silence_weight, 1.0)
            keep = w > 0
            rows.update(mllt_x=label_feats[frames[keep]], mllt_pdfs=pdfs[keep],
                        mllt_w=w[keep])
        for key, value in rows.items():
            self.parts.setdefault(key, []).append(value)
        self.frames += len(frames)

    def flush(self, task: PassTask, sums: ExactSum) -> None:
        """Stage the gathered rows' statistics into the current block of ``sums``."""
        if self.frames == 0:
            return
        cat = {key: np.concatenate(parts) for key, parts in self.parts.items()}
        if task.gmm is not None:
            if task.two_feats_view is not None:
                # posteriors on the adapted features, statistics of the SI ones
                rows, occ, first, second, _ = gaussian_statistics(
                    task.gmm, cat["gmm_x"], cat["pdfs"], cat["weights"], cat["two_x"])
                # the SI log-likelihood under the final model, for the log line only
                loglik = gaussian_statistics(task.gmm, cat["two_x"], cat["pdfs"],
                                             cat["weights"])[4]
            else:
                rows, occ, first, second, loglik = gaussian_statistics(
                    task.gmm, cat["gmm_x"], cat["pdfs"], cat["weights"])
            sums.stage("occ", occ, rows)
            sums.stage("first", first, rows)
            sums.stage("second", second, rows)
            sums.stage("gmm_ll", np.array(loglik))
            sums.stage("gmm_frames", np.array(float(cat["weights"].sum())))
            nz = np.flatnonzero(self.tcounts)
            sums.stage("tcounts", self.tcounts[nz], nz)
        if task.mllt is not None:
            from asr.transforms import accumulate_mllt

            mllt = accumulate_mllt(task.label.gmm, cat["mllt_x"], cat["mllt_pdfs"],
                                   weights=cat["mllt_w"])
            sums.stage("mllt_beta", np.array(mllt.beta))
            sums.stage("mllt_G", mllt.G)
        self.clear()


def _accumulate(task: PassTask, result: PassResult, graph: Graph, frames: np.ndarray,
                nodes: np.ndarray, pdfs: np.ndarray, weights: np.ndarray,
                feats: dict[str, np.ndarray]) -> None:
    """Add one utterance's moments, tree and LDA statistics (GMM and MLLT ones go through
    :class:`_Batch`)."""
    sums = result.sums
    if task.moments_view is not None:
        _moments(sums, feats["moments"])
    if task.tree_view is not None:
        if result.tree_block is None:
            result.tree_block = ContextStats(feats["tree"].shape[1])
        result.tree_block.accumulate(graph.context[nodes], feats["tree"][frames])
    if task.lda is not None:
        from asr.transforms import accumulate_lda

        w = weights * np.where(graph.context[nodes, 1] == task.lda.silence_phone,
                               task.lda.silence_weight, 1.0)
        lda = accumulate_lda(feats["lda"][frames], pdfs, weights=w,
                             num_classes=task.lda.num_classes)
        sums.stage("lda_counts", lda.counts)
        sums.stage("lda_first", lda.first)
        sums.stage("lda_second", lda.second)


def _moments(sums: ExactSum, feats: np.ndarray) -> None:
    x = feats.astype(np.float64)
    sums.stage("mom_n", np.array(float(len(x))))
    sums.stage("mom_sum", x.sum(axis=0))
    sums.stage("mom_sq", (x * x).sum(axis=0))


def _speaker_fmllr(task: PassTask, result: PassResult, spk: str, targets: dict,
                   si_feats: dict[str, np.ndarray]) -> None:
    from asr.adaptation import speaker_transforms

    req = task.fmllr
    previous = None if req.previous is None else {s: w for s, w in req.previous.items()
                                                  if s == spk}
    transforms, aux = speaker_transforms(task.label.gmm, si_feats, targets,
                                         {spk: list(si_feats)}, req.min_count, req.passes,
                                         previous=previous)
    result.transforms.update(transforms)
    result.aux.update(aux)


def run_passes(tasks: list[PassTask], executor=None, desc: str = "pass") -> PassResult:
    """Run one pass's jobs (in this process without an executor) and sum their results."""
    if executor is None:
        results = [run_pass(t) for t in tasks]
    else:
        results = executor.map(run_pass, tasks, desc=desc)
    total = results[0]
    for r in results[1:]:
        total.merge(r)
    return total
