"""The classic peer row of the results tables: one hmmlearn ``GMMHMM`` per word.

An isolated-word utterance is given the word whose model scores it highest (forward
log-likelihood, no language model, no decoding graph). Features are the project's own
(``asr.features``), so the row differs from the others only in the acoustic model::

    cfg = HmmlearnBaselineConfig(num_states=5, num_mix=4)          # a recipe's [hmmlearn] table
    clf = WordHmmClassifier(cfg).fit({"YES": [f1, f2], "NO": [f3]})  # features (T, D) each
    clf.predict(f4)                                                  # "YES"
    hyps = clf.predict_many({"u4": f4})                              # {"u4": ["YES"]}
    compute_wer(refs, hyps, "exp/hmmlearn/decode_test")              # asr.scoring
    clf.save("exp/hmmlearn"); WordHmmClassifier.load("exp/hmmlearn")

Training, per word
------------------
1. Left-to-right topology (``left_to_right = true``): start in state 0; each state keeps a
   self-loop of 0.5 and moves on with 0.5; the last state is absorbing. Baum-Welch never
   turns a zero probability into a non-zero one, so the topology survives training.
   hmmlearn has no final state: an utterance may end in any state.
2. Flat start, as HTK's ``HInit`` and Kaldi's ``align-equal`` do: each training utterance is
   cut into ``num_states`` equal segments; state ``s`` pools the frames of segment ``s``;
   k-means on those frames (scipy's ``kmeans2``, k-means++, seeded) gives its ``num_mix``
   means, their pooled covariance every component's covariance, and the weights start
   uniform. (hmmlearn's own initialisation, ``init_params="mcw"``, clusters all frames of
   a word without regard to time, which suits an ergodic model but not a left-to-right
   one: on the FSDD conventional split one word's model became NaN, a Gaussian having lost
   all its frames.)
3. ``n_iter`` Baum-Welch iterations of hmmlearn, updating everything
   (``params="stmcw"``, ``init_params=""``; ``"st"`` when ergodic, whose start and
   transition probabilities hmmlearn draws from ``seed``).
4. One change to plain maximum likelihood, through hmmlearn's own prior parameters: every
   covariance gets one frame's worth of ``VAR_FLOOR`` x the variance of the word's frames
   (``_covariance_prior``). Without it a Gaussian that loses all its frames gets 0 / 0 for
   a variance and the whole model turns NaN (5 states x 4 Gaussians on 20 utterances a
   word did).

Models are saved as arrays (``models.npz``: ``startprob_``, ``transmat_``, ``means_``,
``covars_``, ``weights_`` of each word) and JSON (``baseline.json``: settings and words);
never pickled.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from hmmlearn.base import BaseHMM
from hmmlearn.hmm import GMMHMM
from scipy.cluster.vq import kmeans2
from tqdm import tqdm

from asr.data import DataDir
from asr.errors import DataError, ModelError
from asr.features import FeatureConfig, apply_pipeline, compute_archive_in_memory
from asr.fileio import write_json
from asr.models import load_arrays, read_json, save_arrays

__all__ = ["HmmlearnBaselineConfig", "WordHmmClassifier", "feats_by_word", "run_baseline"]

MODEL_TYPE = "hmmlearn-gmmhmm"
_ARRAYS = ("startprob_", "transmat_", "means_", "covars_", "weights_")
COVARIANCE_TYPES = ("diag", "spherical", "full", "tied")
# Covariance prior of every Gaussian, as a fraction of the variance of the word's frames
# (HTK's and Kaldi's variance floor is also 0.01 of the global variance).
VAR_FLOOR = 0.01


@dataclass
class HmmlearnBaselineConfig:
    """Settings of the per-word GMM-HMM baseline (a recipe's ``[hmmlearn]`` table).

    num_states : HMM states per word.
    num_mix : Gaussians per state.
    n_iter : Baum-Welch iterations (hmmlearn stops earlier only if the log-likelihood
        gains less than its ``tol``, 0.01).
    covariance_type : ``"diag"``, ``"spherical"``, ``"full"`` or ``"tied"`` (hmmlearn's).
    left_to_right : left-to-right topology (see the module docstring); False: ergodic.
    seed : seeds k-means and, when ergodic, the initial start and transition probabilities.
    """

    num_states: int = 5
    num_mix: int = 4
    n_iter: int = 20
    covariance_type: str = "diag"
    left_to_right: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_states < 1 or self.num_mix < 1 or self.n_iter < 1:
            raise ValueError(f"num_states, num_mix and n_iter must be >= 1, got "
                             f"{self.num_states}, {self.num_mix} and {self.n_iter}")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, "
                             f"got {self.covariance_type!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")


class _PresetGMMHMM(GMMHMM):
    """hmmlearn's ``GMMHMM`` minus the k-means of its ``_init``.

    ``GMMHMM._init`` runs k-means on every ``fit`` even when ``init_params`` leaves the
    mixtures alone and its result is thrown away; here the mixtures are always preset, so
    only the base class's initialisation (feature count; start and transition
    probabilities named in ``init_params``) runs. Baum-Welch is hmmlearn's, unchanged.
    """

    def _init(self, X, lengths=None):
        BaseHMM._init(self, X, lengths)


@contextlib.contextmanager
def _quiet_hmmlearn() -> Iterator[None]:
    """Hide what is expected of hmmlearn here: ``log(0)`` of a Gaussian whose weight fell to
    zero (its log-weight is rightly -inf) and "Model is not converging" for rounding-level
    dips of the log-likelihood."""
    log = logging.getLogger("hmmlearn")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with np.errstate(divide="ignore"):
            yield
    finally:
        log.setLevel(level)


def _covariance_prior(cfg: HmmlearnBaselineConfig, floor: np.ndarray) -> dict:
    """hmmlearn's covariance prior worth one frame of variance ``floor`` (D,), per type.

    Each Gaussian's update becomes ``(sum of squares + floor) / (occupancy + 1)``: the
    maximum-likelihood estimate when the Gaussian has many frames, ``floor`` when it has
    none (where plain EM would divide 0 by 0). In hmmlearn's parametrisation the shape
    parameter cancels the rest of the denominator and the scale carries the floor.
    """
    dim = len(floor)
    if cfg.covariance_type == "diag":          # inverse gamma: alpha, beta per dimension
        return {"covars_prior": -1.0, "covars_weight": floor / 2}
    if cfg.covariance_type == "spherical":
        return {"covars_prior": -1.0, "covars_weight": dim * floor.mean() / 2}
    if cfg.covariance_type == "full":          # inverse Wishart: psi, nu
        return {"covars_prior": np.diag(floor), "covars_weight": -(dim + 1.0)}
    # tied: one covariance per state, its occupancy summed over the state's Gaussians
    return {"covars_prior": np.diag(floor), "covars_weight": -(cfg.num_mix + dim + 0.0)}


def _left_to_right(num_states: int) -> tuple[np.ndarray, np.ndarray]:
    """``startprob`` (S,) = [1, 0, ...]; ``transmat`` (S, S): 0.5 stay, 0.5 on, last absorbing."""
    startprob = np.zeros(num_states)
    startprob[0] = 1.0
    transmat = np.zeros((num_states, num_states))
    for s in range(num_states - 1):
        transmat[s, s] = transmat[s, s + 1] = 0.5
    transmat[-1, -1] = 1.0
    return startprob, transmat


class WordHmmClassifier:
    """One hmmlearn ``GMMHMM`` per word; an utterance gets the best-scoring word.

    Attributes set by ``fit`` or ``load``
    -------------------------------------
    words_ : list[str]
        The words, sorted; index ``i`` of every score vector is ``words_[i]``.
    models_ : dict[str, GMMHMM]
        Word -> its trained model.
    n_features_ : int
        Feature dimension ``D``.
    """

    def __init__(self, config: HmmlearnBaselineConfig | None = None):
        self.config = config if config is not None else HmmlearnBaselineConfig()

    def _new_model(self, floor: np.ndarray | None = None) -> _PresetGMMHMM:
        """An untrained model; ``floor`` (D,) sets its covariance prior (``_covariance_prior``)."""
        cfg = self.config
        prior = {} if floor is None else _covariance_prior(cfg, floor)
        return _PresetGMMHMM(n_components=cfg.num_states, n_mix=cfg.num_mix,
                             covariance_type=cfg.covariance_type, n_iter=cfg.n_iter,
                             random_state=cfg.seed, params="stmcw",
                             init_params="" if cfg.left_to_right else "st", **prior)

    def _flat_start(self, model: GMMHMM, word: str, seqs: Sequence[np.ndarray]) -> None:
        """Set ``means_``, ``covars_``, ``weights_`` from equal segments of each utterance."""
        cfg = self.config
        num_states, num_mix, dim = cfg.num_states, cfg.num_mix, seqs[0].shape[1]
        pooled: list[list[np.ndarray]] = [[] for _ in range(num_states)]
        for x in seqs:
            bounds = np.linspace(0, len(x), num_states + 1).round().astype(int)
            for s in range(num_states):
                pooled[s].append(x[bounds[s]:bounds[s + 1]])
        means = np.empty((num_states, num_mix, dim))
        covs = np.empty((num_states, dim, dim))
        for s in range(num_states):
            frames = np.concatenate(pooled[s]).astype(np.float64)
            if len(frames) < max(num_mix, 2):
                raise ValueError(f"word {word!r}: state {s} gets {len(frames)} frame(s) from "
                                 f"{len(seqs)} utterance(s); at least {max(num_mix, 2)} are "
                                 f"needed (num_mix={num_mix}): lower num_states or num_mix, "
                                 f"or add training utterances")
            # ``seed=`` (not ``rng=``, scipy >= 1.15 only) takes a Generator in every scipy
            means[s], _ = kmeans2(frames, num_mix, minit="++",
                                  seed=np.random.default_rng([cfg.seed, s]))
            covs[s] = np.atleast_2d(np.cov(frames.T)) + model.min_covar * np.eye(dim)
        model.means_ = means
        model.weights_ = np.full((num_states, num_mix), 1.0 / num_mix)
        if cfg.covariance_type == "diag":
            variances = np.diagonal(covs, axis1=1, axis2=2)
            model.covars_ = np.repeat(variances[:, None, :], num_mix, axis=1)
        elif cfg.covariance_type == "spherical":
            variances = np.diagonal(covs, axis1=1, axis2=2).mean(axis=1)
            model.covars_ = np.repeat(variances[:, None], num_mix, axis=1)
        elif cfg.covariance_type == "full":
            model.covars_ = np.repeat(covs[:, None], num_mix, axis=1)
        else:  # tied: one covariance per state, shared by its Gaussians
            model.covars_ = covs

    def fit(self, feats_by_word: Mapping[str, Sequence[np.ndarray]],
            progress: bool = False) -> "WordHmmClassifier":
        """Train one model per word.

        Parameters
        ----------
        feats_by_word : word -> its training utterances, each (T, D) features, ``D`` the
            same for all.
        progress : show a progress bar over the words.

        Raises
        ------
        ValueError
            If there are no words, a word has no utterance, the shapes disagree, a state
            would start with too few frames, or training diverges (non-finite parameters).
        """
        if not feats_by_word:
            raise ValueError("no training words")
        cfg = self.config
        dims = {np.shape(x)[1] if np.ndim(x) == 2 else None
                for seqs in feats_by_word.values() for x in seqs}
        if len(dims) != 1 or None in dims:
            raise ValueError(f"every utterance must be a (T, D) array with one D for all; "
                             f"found dimensions {sorted(map(str, dims))}")
        self.n_features_ = dims.pop()
        self.words_ = sorted(feats_by_word)
        self.models_ = {}
        for word in tqdm(self.words_, desc="hmmlearn", unit="word", disable=not progress):
            seqs = [np.asarray(x, dtype=np.float64) for x in feats_by_word[word]]
            if not seqs:
                raise ValueError(f"word {word!r} has no training utterance")
            model = self._new_model(VAR_FLOOR * np.concatenate(seqs).var(axis=0))
            if cfg.left_to_right:
                model.startprob_, model.transmat_ = _left_to_right(cfg.num_states)
            self._flat_start(model, word, seqs)
            with _quiet_hmmlearn():
                model.fit(np.concatenate(seqs), [len(x) for x in seqs])
            bad = [name for name in _ARRAYS if not np.all(np.isfinite(getattr(model, name)))]
            if bad:
                raise ValueError(f"word {word!r}: training gave non-finite {', '.join(bad)} "
                                 f"(a state lost all its frames); lower num_states or "
                                 f"num_mix, or add training utterances")
            self.models_[word] = model
        return self

    def word_log_likelihoods(self, feats: np.ndarray) -> np.ndarray:
        """(num_words,) float64: ``log p(feats | word)`` of each word in ``words_`` order.

        ``feats`` is (T, D); the scores are forward (total, not Viterbi) log-likelihoods.
        """
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_ or len(x) == 0:
            raise ValueError(f"expected features of shape (T >= 1, {self.n_features_}), got "
                             f"{x.shape}")
        with _quiet_hmmlearn():
            return np.array([self.models_[w].score(x) for w in self.words_])

    def predict(self, feats: np.ndarray) -> str:
        """The word whose model scores (T, D) ``feats`` highest (ties: the first in ``words_``)."""
        return self.words_[int(np.argmax(self.word_log_likelihoods(feats)))]

    def predict_many(self, feats: Mapping[str, np.ndarray],
                     progress: bool = False) -> dict[str, list[str]]:
        """Utterance id -> one-word hypothesis ``[word]``, ready for ``asr.scoring.compute_wer``."""
        return {utt: [self.predict(feats[utt])]
                for utt in tqdm(sorted(feats), desc="hmmlearn decode", unit="utt",
                                disable=not progress)}

    def save(self, directory: str | Path) -> None:
        """Write ``baseline.json`` and ``models.npz`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"{i}_{name}": getattr(self.models_[word], name)
                  for i, word in enumerate(self.words_) for name in _ARRAYS}
        save_arrays(directory / "models.npz", arrays)
        write_json(directory / "baseline.json",
                   {"type": MODEL_TYPE, "config": dataclasses.asdict(self.config),
                    "words": self.words_, "n_features": self.n_features_})

    @classmethod
    def load(cls, directory: str | Path) -> "WordHmmClassifier":
        """Rebuild a classifier written by ``save``; never unpickles.

        Raises
        ------
        ModelError
            Naming the file, if a file is missing, unreadable or inconsistent.
        """
        directory = Path(directory)
        meta_path, arrays_path = directory / "baseline.json", directory / "models.npz"
        meta = read_json(meta_path)
        if meta.get("type") != MODEL_TYPE:
            raise ModelError(meta_path, f"expected type {MODEL_TYPE!r}, got {meta.get('type')!r}")
        try:
            clf = cls(HmmlearnBaselineConfig(**meta["config"]))
            words, n_features = [str(w) for w in meta["words"]], int(meta["n_features"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(meta_path, f"bad settings or words: {exc}") from None
        arrays = load_arrays(arrays_path)
        clf.words_, clf.n_features_, clf.models_ = words, n_features, {}
        for i, word in enumerate(words):
            model = clf._new_model()
            model.n_features = n_features
            try:
                for name in _ARRAYS:
                    setattr(model, name, arrays[f"{i}_{name}"])
                model._check()  # hmmlearn's own validation of shapes and sums
            except KeyError as exc:
                raise ModelError(arrays_path, f"no array {exc} for word {word!r}") from None
            except ValueError as exc:
                raise ModelError(arrays_path, f"word {word!r}: {exc}") from None
            clf.models_[word] = model
        return clf


def feats_by_word(feats: Mapping[str, np.ndarray], text: Mapping[str, Sequence[str]],
                  path: str | Path | None = None) -> dict[str, list[np.ndarray]]:
    """Group utterance features by their one-word transcript (utterances in sorted order).

    Raises
    ------
    DataError
        Naming ``path`` (the ``text`` file) when an utterance has no transcript or more or
        fewer than one word: the baseline only classifies isolated words.
    """
    grouped: dict[str, list[np.ndarray]] = {}
    for utt in sorted(feats):
        words = text.get(utt)
        if words is None or len(words) != 1:
            raise DataError(path, f"utterance {utt!r}: expected a one-word transcript for "
                                  f"isolated-word classification, got {words!r}")
        grouped.setdefault(words[0], []).append(feats[utt])
    return grouped


def run_baseline(train: DataDir, test: DataDir, features: FeatureConfig,
                 cfg: HmmlearnBaselineConfig, model_dir: str | Path | None = None,
                 progress: bool = False) -> tuple[dict[str, list[str]], float, float]:
    """Train on ``train``, classify every utterance of ``test``: a recipe stage's work.

    Features are computed in memory with ``features`` (CMVN with each set's own
    ``utt2spk``). The two times are wall-clock seconds of the model alone, features
    excluded (every system shares them): fitting the word models, and scoring ``test``.

    Returns
    -------
    (hyps, seconds_train, seconds_decode)
        ``hyps``: test utterance id -> ``[word]``, for ``asr.scoring.compute_wer``.
    """
    def load_feats(data: DataDir) -> dict[str, np.ndarray]:
        raw = compute_archive_in_memory(data.wavs, features, progress)
        return apply_pipeline(raw, features, data.utt2spk)

    text_path = train.path / "text" if train.path is not None else None
    grouped = feats_by_word(load_feats(train), train.text, text_path)
    start = time.perf_counter()
    clf = WordHmmClassifier(cfg).fit(grouped, progress)
    seconds_train = time.perf_counter() - start
    if model_dir is not None:
        clf.save(model_dir)
    test_feats = load_feats(test)
    start = time.perf_counter()
    hyps = clf.predict_many(test_feats, progress)
    seconds_decode = time.perf_counter() - start
    return hyps, seconds_train, seconds_decode
