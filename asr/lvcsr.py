"""Large-vocabulary recipes on corpora in LibriSpeech's layout, stage by stage.

Every such recipe (sotu, mini LibriSpeech, any LibriSpeech subset) runs the same stages;
its ``run.py`` only says where the corpus and LM text are and which subsets play train,
dev and test. Paths follow :mod:`asr.experiment`, plus::

    data/<corpus>/lang/lexicon.txt      the lexicon (dictionary words of LM text + train)
    exp/<corpus>/lang/oov_<set>.txt     OOV report of each set against the lexicon
    exp/<corpus>/lm/<n>gram.arpa        Kneser-Ney LMs: decoding (G) and rescoring orders
    exp/<corpus>/lm/lm.json             their sizes, perplexity and OOV rate on dev and test
    exp/<corpus>/<system>/graph.json    the HCLG's states, arcs, build seconds, peak memory
    exp/<corpus>/<system>/decode_<set>/ hyp.txt, per_utt, wer, wer_<LMWT>_<WIP> per weight,
                                        timing, choice.json (the dev-chosen weights)

A recipe may also take a published LM instead of training one (``lm_arpa``, e.g.
LibriSpeech's ``3-gram.pruned.1e-7.arpa.gz``, unpacked once to ``exp/<corpus>/lm/``; the
lexicon then covers its unigrams, and ``rescore_arpa`` optionally rescores), and may split
one subset by speaker into dev and test (``split_speakers``), as mini LibriSpeech does with
dev-clean-2. See :func:`prepare_arpa_lang` and :func:`split_by_speaker`.

Decoding follows Kaldi's scoring: each set is decoded once into lattices, whose best path
is then taken for every LM weight (LMWT, the inverse acoustic scale) and word insertion
penalty of the sweep. The weights with the fewest dev errors are chosen, and test is
reported at dev's choice. A second, higher-order LM rescores the same lattices.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from asr.data import DataDir, prepare_speed_perturbed
from asr.data.datadir import copy_source
from asr.data.download import sha256_of
from asr.data.librispeech import prepare_librispeech
from asr.decoder import DecoderConfig
from asr.errors import DataError, SettingsError
from asr.experiment import DecodeJob, Experiment, decode_job
from asr.features import FeatureConfig
from asr.fileio import atomic_dir, write_json, write_text
from asr.gmm.lda_mllt import LdaMlltConfig
from asr.gmm.sat import SatConfig
from asr.gmm.systems import HmmConfig
from asr.gmm.train import GmmTrainConfig
from asr.jobs import ClusterConfig, Executor, InProcessExecutor, split_data
from asr.lexicon import Lexicon
from asr.nnet.config import NnetConfig
from asr.oov import count_oov, map_oov
from asr.pronunciations import (UNK, LexiconConfig, build_lexicon, load_pronunciations,
                                write_lexicon)
from asr.scoring import WerResult, compute_wer, per_utterance, write_details, write_text_file
from asr.settings import from_dict

log = logging.getLogger(__name__)

FRAME_SHIFT_S = 0.01


@dataclass
class LmConfig:
    """The n-gram LMs: ``order`` builds G, ``rescore_order`` rescores lattices (0: none)."""

    order: int = 3
    rescore_order: int = 4
    prune: float = 0.0          # relative-entropy pruning of the decoding LM only

    def __post_init__(self):
        if not 1 <= self.order <= 5 or not 0 <= self.rescore_order <= 5:
            raise ValueError("LM orders must lie in 1..5 (rescore_order 0: no rescoring)")


@dataclass
class SweepConfig:
    """Kaldi's scoring sweep: LM weights (LMWT = 1 / acoustic scale) and word insertion
    penalties, scored on dev; test is reported at dev's best."""

    lm_weights: list[float] = field(default_factory=lambda: [7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
                                                             13.0, 14.0, 15.0, 17.0])
    word_penalties: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])

    def __post_init__(self):
        if not self.lm_weights or min(self.lm_weights) <= 0 or not self.word_penalties:
            raise ValueError("the sweep needs positive LM weights and a word penalty list")


# ----------------------------------------------------------------------------- data, lang, LM

def prepare_subsets(corpus_dir: Path, subsets: dict[str, str], ex: Experiment,
                    split_speakers: bool = False) -> None:
    """Kaldi data directories ``data/<corpus>/<name>`` of ``corpus_dir/<subset>``; with
    ``split_speakers`` dev and test are the two speaker halves of one subset."""
    for name, subset in subsets.items():
        if not (split_speakers and name in ("dev", "test")):
            prepare_librispeech(corpus_dir / subset, ex.data / name)
    if split_speakers:
        split_by_speaker(corpus_dir / subsets["dev"], ex.data / "dev", ex.data / "test")


def lm_vocabulary_words(lm_text: Path, size: int = 0) -> set[str]:
    """The word types of an LM text (one sentence a line): all, or the ``size`` most frequent
    (ties broken alphabetically)."""
    from collections import Counter

    from asr.lm import read_sentences
    counts = Counter(w for sentence in read_sentences(lm_text) for w in sentence)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return set(words[:size] if size > 0 else words)


def prepare_lang(ex: Experiment, lm_text: Path, cfg: LexiconConfig, train: str,
                 eval_sets: list[str], vocab_size: int = 0,
                 vocabulary: set[str] | None = None) -> Lexicon:
    """The lexicon of the LM text's words (the ``vocab_size`` most frequent; 0: all) and the
    training transcripts' words.

    Words the dictionary lacks are reported, never dropped silently: in the training
    transcripts they become ``<UNK>`` (spoken noise), in the LM text they are left to the
    LM's ``<UNK>``, and each set's OOV report is written to ``exp/<corpus>/lang/``.
    """
    prons = load_pronunciations(cfg)
    train_data = ex.data_dir(train)
    words = ((lm_vocabulary_words(lm_text, vocab_size) if vocabulary is None else vocabulary)
             | {w for ws in train_data.text.values() for w in ws})
    lexicon, missing = build_lexicon(sorted(words), prons, cfg)
    log.info("lexicon: %d words, %d phones; %d words of the LM text and training "
             "transcripts have no pronunciation", len(lexicon.words), len(lexicon.phones),
             len(missing))
    write_lexicon(ex.data / "lang" / "lexicon.txt", lexicon)
    lang = ex.exp / "lang"
    write_text(lang / "missing_pronunciations.txt", "".join(f"{w}\n" for w in missing))
    mapped, report = map_oov(train_data, lexicon.words, lang / f"oov_{train}.txt", cfg.unk_word)
    if report.counts:
        mapped.save(ex.data / train)
    for name in eval_sets:
        report = count_oov(ex.data_dir(name), lexicon.words)
        write_text(lang / f"oov_{name}.txt",
                   "".join(f"{w} {c}\n" for w, c in report.counts.most_common()))
        log.info("%s", report.summary())
    return lexicon


def load_lexicon(ex: Experiment) -> Lexicon:
    return Lexicon.load(ex.data / "lang" / "lexicon.txt")


def lm_path(ex: Experiment, order: int) -> Path:
    return ex.exp / "lm" / f"{order}gram.arpa"


def train_lms(ex: Experiment, lm_text: Path, lexicon: Lexicon, cfg: LmConfig,
              eval_sets: list[str]) -> dict:
    """Train the decoding and rescoring LMs over the lexicon's words (others -> ``<UNK>``);
    report n-gram counts, perplexity and OOV rate on each evaluation set's transcripts."""
    from asr.lm import train_kneser_ney, write_arpa

    vocab = [w for w in lexicon.words if w != UNK]
    info: dict = {"text": str(lm_text), "vocabulary": len(vocab), "models": {}}
    for order, prune in ((cfg.order, cfg.prune), (cfg.rescore_order, 0.0)):
        if order == 0 or str(order) in info["models"]:
            continue
        start = time.perf_counter()
        lm = train_kneser_ney(lm_text, order, vocab=vocab, unk=UNK, prune=prune)
        write_arpa(lm, lm_path(ex, order))
        info["models"][str(order)] = {
            "ngrams": [int(len(k)) for k in lm.keys], "prune": prune,
            "seconds": round(time.perf_counter() - start, 1),
            "sets": lm_report(ex, lm, eval_sets, f"{order}-gram")}
    write_json(ex.exp / "lm" / "lm.json", info)
    return info


def lm_report(ex: Experiment, lm, eval_sets: list[str], name: str) -> dict:
    """Perplexity and OOV rate of ``lm`` on each evaluation set's transcripts (logged)."""
    from asr.lm import perplexity

    report = {}
    for set_name in eval_sets:
        ppl = perplexity(lm, list(ex.data_dir(set_name).text.values()), unk=False,
                         unk_word=UNK)
        report[set_name] = {"perplexity": round(ppl.perplexity, 1),
                            "oov_rate": round(100.0 * ppl.oovs / max(ppl.words, 1), 2),
                            "words": ppl.words, "oovs": ppl.oovs}
        log.info("%s on %s: perplexity %.1f, OOV %.2f%%", name, set_name, ppl.perplexity,
                 report[set_name]["oov_rate"])
    return report


# ----------------------------------------------------------------------------- graphs

def _build_graph(system_dir: str, cfg: dict, cache: str) -> dict:
    """Child process: build (or read) one system's HCLG; its size, seconds, peak memory."""
    from asr.system import AsrSystem

    started = time.time()
    start = time.perf_counter()
    graph = AsrSystem.load(system_dir).graph(DecoderConfig(**cfg), cache=Path(cache))
    return {"states": graph.fst.num_states, "arcs": graph.fst.num_arcs,
            "seconds": round(time.perf_counter() - start, 1),
            "peak_mib": round(_peak_rss_kib() / 1024),
            # written by this call, not read from the cache (other builds may run beside it)
            "built": graph.path is not None and graph.path.stat().st_mtime >= started}


def _peak_rss_kib() -> int:
    """This process's peak resident set (KiB) since it started its program: Linux's VmHWM
    (``ru_maxrss`` would also count the memory of the parent it was forked from)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def build_graphs(ex: Experiment, systems: list[str], cfg: DecoderConfig, parallel: int = 1
                 ) -> dict[str, dict]:
    """Build each system's HCLG into the graph cache, up to ``parallel`` at once, each in a
    fresh process (so that its time and peak resident memory are the build's own: with
    ``parallel`` builds, memory peaks at about that many graphs), and record them in
    ``<system>/graph.json``; a graph read from the cache keeps the figures of the build
    recorded there. Returns system -> its record."""
    workers = max(1, min(parallel, len(systems)))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = {system: pool.submit(_build_graph, str(ex.system_dir(system)),
                                       dataclasses.asdict(cfg), str(ex.graph_cache))
                   for system in systems}
        infos = {system: future.result() for system, future in futures.items()}
    for system, info in infos.items():
        info["grammar"] = cfg.grammar
        record = ex.system_dir(system) / "graph.json"
        if not info.pop("built") and record.is_file():
            # read from the cache: the time and memory of the build that made it still hold
            old = json.loads(record.read_text(encoding="utf-8"))
            if all(old.get(k) == info[k] for k in ("states", "arcs", "grammar")):
                info.update(seconds=old["seconds"], peak_mib=old["peak_mib"])
        write_json(record, info)
        log.info("%s graph: %d states, %d arcs, %.1f s, %d MiB peak", system, info["states"],
                 info["arcs"], info["seconds"], info["peak_mib"])
    return infos


# ----------------------------------------------------------------------------- decoding

@dataclass
class LatticeSet:
    """The lattices of one decoded set and what decoding them cost."""

    lattices: dict                 # utt -> asr.decoder.lattice.Lattice
    words: list[str]               # the graph's word symbols
    seconds: float                 # search + acoustic scoring (both passes when adapted)
    frames: int
    transforms: dict = field(default_factory=dict)   # speaker -> fMLLR W (adapted systems)


def decode_lattices(ex: Experiment, system: str, names: list[str], cfg: DecoderConfig,
                    features: Experiment | None = None, executor: Executor | None = None
                    ) -> dict[str, LatticeSet]:
    """Decode sets into lattices with ``system`` (its graph read from the cache).

    A speaker-adapted system (tri3b) first decodes each set's best paths and adapts to its
    speakers (``AsrSystem.adapt``); the lattices are those of the second pass. With an
    ``executor`` each set is split by speaker into ``executor.nj`` parts, one job each
    (``asr.experiment.DecodeJob``): the lattices and transforms are those of one job, and
    ``seconds`` adds up the jobs' times (one process's real-time factor).
    """
    executor = executor or InProcessExecutor(progress=False)
    # the graph is built (or found) here, once: the jobs read its file
    graph_file = ex.load_system(system).graph(cfg, cache=ex.graph_cache).path
    out = {}
    for name in names:
        data = ex.data_dir(name)
        parts = split_data(data.path, executor.nj, per_utt=executor.nj > len(data.spk2utt))
        tasks = [DecodeJob(str(ex.system_dir(system).resolve()),
                           str((features or ex).feat_dir(name).resolve()),
                           str(data.path.resolve()), part.utts, cfg,
                           str(graph_file.resolve()), ex.skip_bad,
                           ex.progress and executor.in_process, lattices=True)
                 for part in parts]
        lattices, transforms, seconds, frames, words = {}, {}, 0.0, 0, []
        for part in executor.map(decode_job, tasks, desc=f"decode {system} {name}"):
            lattices.update(part["lattices"])
            transforms.update(part["transforms"])
            seconds += part["seconds"]
            frames += part["frames"]
            words = part["words"]
        out[name] = LatticeSet({u: lattices[u] for u in sorted(lattices)}, words, seconds,
                               frames, transforms)
    return out


def rescore_lattices(lattices: LatticeSet, old_arpa: Path, new_arpa: Path) -> LatticeSet:
    """The same lattices with the decoding LM's scores replaced by another LM's."""
    from asr.decoder.lattice import rescore
    from asr.lm import read_arpa

    old, new = read_arpa(old_arpa), read_arpa(new_arpa)
    start = time.perf_counter()
    out = {utt: rescore(lat, old, new, words=lattices.words)
           for utt, lat in lattices.lattices.items()}
    return LatticeSet(out, lattices.words, time.perf_counter() - start, lattices.frames,
                      lattices.transforms)


def best_paths(lattices: LatticeSet, lm_weight: float, word_penalty: float
               ) -> dict[str, list[str]]:
    from asr.decoder.lattice import best_path

    hyps = {}
    for utt, lat in lattices.lattices.items():
        ids, _ = best_path(lat, acoustic_scale=1.0 / lm_weight, word_penalty=word_penalty)
        hyps[utt] = [lattices.words[w] for w in ids]
    return hyps


def _weights(lm_weight: float, word_penalty: float) -> str:
    return f"{lm_weight:g}_{word_penalty:g}"


def score_sweep(lattices: LatticeSet, refs: dict[str, list[str]], sweep: SweepConfig,
                out_dir: Path, name: str, chosen: tuple[float, float] | None = None
                ) -> tuple[WerResult, tuple[float, float]]:
    """Score every (LMWT, WIP) of the sweep into ``out_dir/wer_<LMWT>_<WIP>``; the result
    at ``chosen`` (a dev set's choice) or, when None, at the best of this set (dev)."""
    results, hyps_of = {}, {}
    for lmwt in sweep.lm_weights:
        for wip in sweep.word_penalties:
            hyps_of[lmwt, wip] = best_paths(lattices, lmwt, wip)
            results[lmwt, wip] = compute_wer(refs, hyps_of[lmwt, wip], name=name)
    if chosen is None:      # fewest errors; ties go to the weights listed first
        chosen = min(results, key=lambda k: results[k].errors)
    if chosen not in results:
        hyps_of[chosen] = best_paths(lattices, *chosen)
        results[chosen] = compute_wer(refs, hyps_of[chosen], name=name)
    result, hyps = results[chosen], hyps_of[chosen]
    audio = lattices.frames * FRAME_SHIFT_S
    with atomic_dir(out_dir) as tmp:
        for (lmwt, wip), r in sorted(results.items()):
            write_text(tmp / f"wer_{_weights(lmwt, wip)}", r.line() + "\n")
        write_text_file(tmp / "hyp.txt", hyps)
        write_details(tmp / "per_utt", per_utterance(refs, hyps))
        write_text(tmp / "wer", result.line() + "\n")
        write_json(tmp / "choice.json", {"lm_weight": chosen[0], "word_penalty": chosen[1]})
        if lattices.transforms:
            from asr.transforms.fmllr import save_transforms
            save_transforms(tmp / "trans.npz", lattices.transforms)
        write_text(tmp / "timing", f"decode_seconds {lattices.seconds:.3f}\n"
                                   f"frames {lattices.frames}\n"
                                   f"real_time_factor {lattices.seconds / audio:.4f}\n")
    log.info("%s (LMWT %g, WIP %g)", result.line(), *chosen)
    return result, chosen


def decode_dev_test(ex: Experiment, system: str, cfg: DecoderConfig, sweep: SweepConfig,
                    dev: str, test: str, features: Experiment | None = None,
                    rescore: tuple[Path, Path] | None = None, executor: Executor | None = None
                    ) -> dict[str, dict]:
    """Decode dev and test with ``system`` (as jobs of ``executor``, see
    :func:`decode_lattices`); choose the weights on dev, report test there.

    With ``rescore`` = (decoding ARPA, rescoring ARPA) the lattices are also rescored, as
    the row ``<system>_<n>gram``. Returns row name -> {"dev"/"test": WerResult, "weights",
    "rtf": test's real-time factor}.
    """
    rows: dict[str, dict] = {}
    decoded = decode_lattices(ex, system, [dev, test], cfg, features, executor)
    variants = {system: decoded}
    if rescore is not None:
        order = rescore[1].stem.split("gram")[0]
        variants[f"{system}_{order}gram"] = {s: rescore_lattices(lat, *rescore)
                                            for s, lat in decoded.items()}
    for row, sets in variants.items():
        refs = {s: {u: ex.data_dir(s).text[u] for u in sets[s].lattices} for s in sets}
        suffix = row[len(system):]
        out = {s: ex.system_dir(system) / f"decode_{s}{suffix}" for s in sets}
        dev_result, chosen = score_sweep(sets[dev], refs[dev], sweep, out[dev], str(out[dev]))
        test_result, _ = score_sweep(sets[test], refs[test], sweep, out[test], str(out[test]),
                                     chosen)
        audio = decoded[test].frames * FRAME_SHIFT_S
        rows[row] = {"dev": dev_result, "test": test_result, "weights": chosen,
                     "rtf": decoded[test].seconds / audio,
                     "rescore_rtf": (sets[test].seconds / audio) if suffix else None}
    return rows




# --------------------------------------------------------------- published LMs, speaker split

def split_by_speaker(subset_dir: Path, first: Path, second: Path) -> tuple[DataDir, DataDir]:
    """Split one LibriSpeech-layout subset into two data directories by speaker.

    The speakers, sorted as text (``spk2utt`` order), alternate: the 1st, 3rd, ... go to
    ``first`` (dev), the 2nd, 4th, ... to ``second`` (test), so no speaker is in both.
    """
    from asr.data.librispeech import read_librispeech
    from asr.errors import DataError

    data = read_librispeech(subset_dir)
    speakers = sorted(data.spk2utt)
    if len(speakers) < 2:
        raise DataError(subset_dir, f"has {len(speakers)} speaker; splitting it into dev and "
                                    "test by speaker needs at least 2")
    parts = []
    for out, group in ((first, speakers[0::2]), (second, speakers[1::2])):
        part = data.subset(u for spk in group for u in data.spk2utt[spk])
        part.save(out)
        parts.append(part)
    log.info("%s split by speaker: %d speakers to %s, %d to %s", subset_dir,
             len(speakers[0::2]), first, len(speakers[1::2]), second)
    return parts[0], parts[1]


def arpa_counts(path: Path) -> list[int]:
    """The n-gram counts an ARPA file's ``\\data\\`` header announces (plain text)."""
    from asr.errors import DataError

    counts, started = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\data\\":
                started = True
            elif started and line.startswith("ngram "):
                counts.append(int(line.split("=", 1)[1]))
            elif started and line:
                break
    if not counts:
        raise DataError(path, "no \\data\\ header with 'ngram N=count' lines: not an ARPA file")
    return counts


def arpa_words(path: Path, size: int = 0) -> set[str]:
    """An ARPA file's unigram words (``<s>``, ``</s>``, ``<unk>`` left out): all, or the
    ``size`` most probable (ties broken alphabetically)."""
    scored, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
            elif inside and line.startswith("\\"):
                break
            elif inside and line:
                fields = line.split()
                if fields[1] not in ("<s>", "</s>") and fields[1].lower() != "<unk>":
                    scored.append((-float(fields[0]), fields[1]))
    scored.sort()
    return {w for _, w in (scored[:size] if size > 0 else scored)}


def unpack_arpa(source: Path, dest: Path, order: int) -> Path:
    """Copy an ARPA LM (gzip-decompressed when it ends in ``.gz``) to ``dest`` and check that
    its order is ``order`` (the settings' ``lm.order`` or ``lm.rescore_order``)."""
    import gzip
    import shutil

    from asr.errors import DataError
    from asr.fileio import atomic_file

    if not source.is_file():
        raise DataError(source, "ARPA LM not found; expected the file the settings name, "
                                "relative to the corpus folder")
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as src, atomic_file(dest) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (OSError, EOFError) as exc:
        raise DataError(source, f"cannot read the ARPA LM: {exc}") from None
    counts = arpa_counts(dest)
    if len(counts) != order:
        raise DataError(source, f"is a {len(counts)}-gram LM; the settings give order {order}")
    return dest


def prepare_arpa_lang(ex: Experiment, corpus_dir: Path, s: "LvcsrSettings",
                      eval_sets: list[str]) -> Lexicon:
    """The lang stage with a published LM: ``s.lm_arpa`` (and ``s.rescore_arpa``) unpacked to
    ``exp/<corpus>/lm/<n>gram.arpa``, the lexicon of its unigram words (the ``vocab_size``
    most probable; 0: all) and the training words, pronounced by ``s.lexicon.source``
    (``cmudict`` or a file relative to the corpus folder); OOVs reported as
    :func:`prepare_lang` does. G keeps the n-grams whose words the lexicon has (arpa2fst
    skips the others, as Kaldi's ``format_lm.sh`` does). ``lm.json`` holds each LM's
    n-gram counts and its perplexity and OOV rate on the evaluation sets.
    """
    from asr.lm import read_arpa
    from asr.pronunciations import CMUDICT

    cfg = s.lexicon
    if cfg.source != CMUDICT and not Path(cfg.source).is_absolute():
        cfg = dataclasses.replace(cfg, source=str(corpus_dir / cfg.source))
    g = unpack_arpa(corpus_dir / s.lm_arpa, lm_path(ex, s.lm.order), s.lm.order)
    lexicon = prepare_lang(ex, g, cfg, "train", eval_sets,
                           vocabulary=arpa_words(g, s.vocab_size))
    lms = {s.lm.order: (s.lm_arpa, g)}
    if s.rescore_arpa:
        lms[s.lm.rescore_order] = (s.rescore_arpa, unpack_arpa(
            corpus_dir / s.rescore_arpa, lm_path(ex, s.lm.rescore_order), s.lm.rescore_order))
    info: dict = {"text": None, "vocabulary": len(lexicon.words), "models": {},
                  "description": "Published LMs: " + ", ".join(
                      f"`{name}` ({order}-gram)" for order, (name, _) in lms.items())
                  + f"; G keeps the n-grams over the lexicon's {len(lexicon.words):,} words."}
    for order, (name, path) in lms.items():
        lm = read_arpa(path)
        info["models"][str(order)] = {
            "source": name, "ngrams": [int(len(k)) for k in lm.keys], "prune": None,
            "seconds": 0.0, "sets": lm_report(ex, lm, eval_sets, name)}
    write_json(ex.exp / "lm" / "lm.json", info)
    return lexicon


# ----------------------------------------------------------------------------- the recipe

SYSTEMS = ("mono", "tri", "tri2b", "tri3b", "dnn", "dnn_fmllr")
HYBRIDS = ("dnn", "dnn_fmllr")


@dataclass
class LvcsrSettings:
    """Settings of a LibriSpeech-layout recipe (its ``settings.toml`` sets them)."""

    seed: int = 0
    train: str = "train"            # subset folders under the corpus folder
    dev: str = "dev"
    test: str = "test"
    lm_text: str = "lm-norm.txt"    # LM training text, relative to the corpus folder
    vocab_size: int = 0             # lexicon: the most frequent LM-text words (0: all) + train
    lm_arpa: str = ""               # a published ARPA LM (.arpa/.arpa.gz, relative to the corpus
                                    # folder) as G instead of one trained on lm_text ("": train)
    rescore_arpa: str = ""          # with lm_arpa: the ARPA LM that rescores lattices ("": none)
    split_speakers: bool = False    # dev and test name one subset, split by speaker (alternate)
    systems: list[str] = field(default_factory=lambda: ["mono", "tri", "dnn"])
    lexicon: LexiconConfig = field(default_factory=LexiconConfig)
    lm: LmConfig = field(default_factory=LmConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    hmm: HmmConfig = field(default_factory=HmmConfig)
    mono: GmmTrainConfig = field(default_factory=GmmTrainConfig)
    tri: GmmTrainConfig = field(default_factory=lambda: GmmTrainConfig(
        num_leaves=2000, max_gaussians=10000, num_iters=35, mixup_iters=25,
        realign_iters=[10, 20, 30]))
    tri2b: LdaMlltConfig = field(default_factory=lambda: LdaMlltConfig(
        num_leaves=2000, max_gaussians=10000))
    tri3b: SatConfig = field(default_factory=lambda: SatConfig(
        num_leaves=2000, max_gaussians=10000))
    dnn_features: FeatureConfig = field(default_factory=lambda: FeatureConfig(
        kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker"))
    cluster: ClusterConfig = field(default_factory=ClusterConfig)   # where --nj jobs run
    dnn: NnetConfig = field(default_factory=NnetConfig)
    # The fMLLR hybrid's network: [dnn] with these settings changed (e.g. model = "tdnn");
    # empty: the same network as the fbank hybrid's.
    dnn_fmllr: dict[str, Any] = field(default_factory=dict)
    # The hybrids also train on copies of train at these speeds (Kaldi's nnet recipes: 0.9,
    # 1.1), each copy's voice a speaker of its own, aligned by the last GMM; [] none.
    dnn_speed_factors: list[float] = field(default_factory=list)
    decode: DecoderConfig = field(default_factory=lambda: DecoderConfig(
        beam=13.0, max_active=7000, lattice_beam=6.0))
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # The hybrid's scores (log posterior - log prior) span a narrower range per frame than a
    # GMM's log-likelihoods: its search runs at its own acoustic scale, its sweep at lower LMWT.
    dnn_acoustic_scale: float = 0.25
    dnn_sweep: SweepConfig = field(default_factory=lambda: SweepConfig(
        lm_weights=[2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0]))

    def __post_init__(self):
        unknown = sorted(set(self.systems) - set(SYSTEMS))
        if unknown or "mono" not in self.systems:
            raise ValueError(f"systems must include 'mono' and be among "
                             f"{', '.join(SYSTEMS)}; got {self.systems}")
        if "dnn_fmllr" in self.systems and "tri3b" not in self.systems:
            raise ValueError("the hybrid on fMLLR features reads tri3b's adapted features: "
                             "systems with 'dnn_fmllr' need 'tri3b'")
        if "tri3b" in self.systems and "tri2b" not in self.systems:
            raise ValueError("tri3b (SAT) trains on the LDA+MLLT system's alignments and front "
                             "end: systems with 'tri3b' need 'tri2b'")
        if "tri2b" in self.systems and "tri" not in self.systems:
            raise ValueError("tri2b (LDA+MLLT) trains on the triphone system's alignments: "
                             "systems with 'tri2b' need 'tri'")
        if "dnn" in self.systems and "tri" not in self.systems:
            raise ValueError("the hybrid trains on a triphone system's alignments: "
                             "systems with 'dnn' need 'tri'")
        try:
            self.network("dnn_fmllr")
        except SettingsError as exc:
            raise ValueError(exc.message) from None
        if any(not 0.5 <= f <= 2.0 or f == 1.0 for f in self.dnn_speed_factors):
            raise ValueError(f"each of dnn_speed_factors must be in [0.5, 2] and not 1.0, "
                             f"got {self.dnn_speed_factors}")
        if self.split_speakers != (self.dev == self.test):
            raise ValueError("dev and test must be different subsets, or one subset with "
                             "split_speakers = true (tuning on the test set is not allowed)")
        if self.rescore_arpa and not self.lm_arpa:
            raise ValueError("rescore_arpa needs lm_arpa (a trained G rescores with "
                             "lm.rescore_order)")
        if self.lm_arpa and bool(self.rescore_arpa) != bool(self.lm.rescore_order):
            raise ValueError("with lm_arpa, set rescore_arpa and lm.rescore_order (its order) "
                             "together, or neither (no rescoring)")

    def network(self, hybrid: str) -> NnetConfig:
        """The network settings of ``hybrid`` (``"dnn"`` or ``"dnn_fmllr"``): ``dnn``, changed
        by ``dnn_fmllr`` for the hybrid on fMLLR features."""
        if hybrid == "dnn" or not self.dnn_fmllr:
            return self.dnn
        return from_dict(NnetConfig, {**dataclasses.asdict(self.dnn), **self.dnn_fmllr},
                         table="dnn_fmllr")


def run_lvcsr(corpus: str, description: str, settings_file: Path,
              find_corpus: Callable[[Path | None, Path], Path], argv: list[str],
              notes: Callable[[LvcsrSettings], str]) -> int:
    """The whole recipe of a LibriSpeech-layout corpus; ``find_corpus(--corpus, download
    folder)`` returns the folder holding the subsets and the LM text, ``notes(settings)``
    the corpus's paragraph of RESULTS.md.

    Stages: 0 data, 1 lang + LMs, 2 features, 3 monophone, 4 triphone (tri, then tri2b:
    LDA+MLLT, then tri3b: SAT with fMLLR, each with its own done-marker), 5 hybrids (on the
    last GMM's alignments, fMLLR-adapted for tri3b: ``dnn`` on fbank + CMVN, ``dnn_fmllr`` on
    tri3b's fMLLR features), 6 graphs, 7 decode (lattices, dev-chosen weights, rescoring;
    tri3b and dnn_fmllr adapted first, fMLLR per speaker; a system decoded before with the
    same model and settings is not decoded again unless ``--force``), 8 results.
    """
    from asr.gmm.lda_mllt import train_lda_mllt
    from asr.gmm.sat import adapted_utterances, train_sat
    from asr.gmm.systems import train_monophone, train_triphone
    from asr.nnet import train_hybrid
    from asr.recipe import (Stage, recipe_arguments, recipe_executor, resolve_settings,
                            run_record, run_stages, seed_everything, setup_logging,
                            write_settings)

    args = recipe_arguments(description, settings_file).parse_args(argv)
    s = resolve_settings(args, LvcsrSettings)
    run = run_record(corpus, argv, s)
    seed_everything(s.seed)
    ex = Experiment(corpus, args.data, args.exp, args.results, s.features,
                    progress=not args.no_progress, skip_bad=args.skip_bad_utts)
    ex_dnn = ex.with_features(s.dnn_features, "feats_dnn")
    setup_logging(ex.exp / "run.log")
    write_settings(ex.exp, s)
    sets = {"train": s.train, "dev": s.dev, "test": s.test}
    root: list[Path] = []
    gmms = [name for name in ("mono", "tri", "tri2b", "tri3b") if name in s.systems]
    executor: list = []         # the recipe's Executor (--nj, --cluster), once started

    def check():
        root.append(find_corpus(args.corpus, args.data / "downloads"))

    perturbed = ["train_sp"] if s.dnn_speed_factors and set(HYBRIDS) & set(s.systems) else []

    def data():
        prepare_subsets(root[0], sets, ex, s.split_speakers)
        if perturbed:
            prepare_speed_perturbed(ex.data_dir("train"), ex.data, "train_sp",
                                    s.dnn_speed_factors)

    def lang():
        if s.lm_arpa:           # a published LM: the vocabulary and G come from it
            prepare_arpa_lang(ex, root[0], s, ["dev", "test"])
            return
        lexicon = prepare_lang(ex, root[0] / s.lm_text, s.lexicon, "train", ["dev", "test"],
                               s.vocab_size)
        train_lms(ex, root[0] / s.lm_text, lexicon, s.lm, ["dev", "test"])

    def features():
        for name in [*sets, *perturbed]:
            ex.make_features(name, executor[0])
            if "dnn" in s.systems:
                ex_dnn.make_features(name, executor[0])

    def mono():
        lexicon = load_lexicon(ex)
        ex.data_dir("train").check_vocabulary(lexicon.words)
        system, _ = train_monophone(train_source(ex, "train"), lexicon, s.features, s.hmm,
                                    s.mono, s.decode, progress=ex.progress,
                                    executor=executor[0], work_dir=work_dir(ex, "mono"))
        system.save(ex.system_dir("mono"))

    def tri():
        if "tri" in s.systems:
            system, _ = train_triphone(train_source(ex, "train"), ex.load_system("mono"), s.tri,
                                       s.decode, progress=ex.progress, executor=executor[0],
                                       work_dir=work_dir(ex, "tri"))
            system.save(ex.system_dir("tri"))

    def adapted(name: str, train, previous: str):
        """tri2b (LDA+MLLT on tri's alignments) or tri3b (SAT on tri2b's): both train on
        the base features and keep their own feature transforms."""
        if name in s.systems:
            system, _ = train(train_source(ex, "train"), ex.load_system(previous),
                              getattr(s, name), None, s.decode, progress=ex.progress,
                              executor=executor[0], work_dir=work_dir(ex, name))
            system.save(ex.system_dir(name))

    def dnn(name: str):
        """The hybrid ``name`` on the last GMM's alignments (tri3b's: fMLLR-adapted)."""
        if name not in s.systems:
            return
        gmm = ex.load_system(gmms[-1])
        targets, utts = {}, []
        for data in ["train", *perturbed]:
            aligned, transforms = ex.alignments(gmms[-1], data, executor[0])
            targets.update(aligned)
            if name == "dnn":
                utts += ex_dnn.utterances(data)
            else:               # what tri3b's GMM scores: each speaker's fMLLR features
                utts += adapted_utterances(gmm, ex.utterances(data, raw=True),
                                           ex.data_dir(data).utt2spk, transforms)
        # validation keeps every copy of a recording on the side of its source
        sources = {u: copy_source(u) for data in perturbed for u in ex.data_dir(data).utts}
        train_hybrid(utts, targets, gmm, s.dnn_features if name == "dnn" else None,
                     s.network(name),
                     ex.system_dir(f"{name}_train"), ex.progress, sources or None
                     ).save(ex.system_dir(name))

    def graphs():
        # the hybrid shares its GMM's tree, so its graph; --nj graphs are built at once
        build_graphs(ex, gmms, _decode_cfg(ex, s), executor[0].nj)

    def decode():
        cfg = _decode_cfg(ex, s)
        rescore = ((lm_path(ex, s.lm.order), lm_path(ex, s.lm.rescore_order))
                   if s.lm.rescore_order else None)
        summary = {}
        for name in s.systems:
            hybrid = name in HYBRIDS
            system_cfg = (dataclasses.replace(cfg, acoustic_scale=s.dnn_acoustic_scale)
                          if hybrid else cfg)
            sweep = s.dnn_sweep if hybrid else s.sweep
            marker = ex.system_dir(name) / "decoded.json"
            key = _decode_key(ex, name, system_cfg, sweep, rescore,
                              ex_dnn if name == "dnn" else ex)
            done = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
            if done.get("key") == key and not args.force:
                log.info("%s: decoded before with this model and these settings; kept", name)
                summary.update(done["summary"])
                continue
            rows = decode_dev_test(ex, name, system_cfg, sweep, "dev", "test",
                                   ex_dnn if name == "dnn" else None, rescore, executor[0])
            mine = {}
            for row, r in rows.items():
                ex.record(row, {"dev": r["dev"], "test": r["test"]}, run)
                mine[row] = {"lm_weight": r["weights"][0], "word_penalty": r["weights"][1],
                             "rtf": round(r["rtf"], 4),
                             "rescore_rtf": None if r["rescore_rtf"] is None
                             else round(r["rescore_rtf"], 4)}
            write_json(marker, {"key": key, "summary": mine})
            summary.update(mine)
        write_json(ex.exp / "decode_summary.json", summary)

    def results():
        write_lvcsr_results(ex, s, gmms, notes(s))

    stages = [Stage(0, "data", data, check=check), Stage(1, "lang", lang),
              Stage(2, "features", features), Stage(3, "train_mono", mono),
              Stage(4, "train_tri", tri),
              Stage(4, "train_tri2b", lambda: adapted("tri2b", train_lda_mllt, "tri")),
              Stage(4, "train_tri3b", lambda: adapted("tri3b", train_sat, "tri2b")),
              Stage(5, "train_dnn", lambda: dnn("dnn")),
              Stage(5, "train_dnn_fmllr", lambda: dnn("dnn_fmllr")), Stage(6, "graphs", graphs),
              Stage(7, "decode", decode), Stage(8, "results", results)]
    with recipe_executor(args, s) as pool:
        executor.append(pool)
        run_stages(stages, ex.exp, args.stage, args.stop_stage, args.force,
                   clean=[ex.data, ex.results])
    return 0


def train_source(ex: Experiment, name: str):
    """A data set's base features as GMM training jobs read them: per job, from the feature
    archive (``asr.gmm.source.ArchiveSource``), so that the driver never holds them.

    Every utterance of the data set must have features, except (with ``skip_bad``) those the
    features stage skipped, which are left out (as ``Experiment.raw_features`` does).
    """
    from asr.features.archive import INDEX_NAME
    from asr.gmm.source import ArchiveSource

    data = ex.data_dir(name)
    index = ex.feat_dir(name) / INDEX_NAME
    try:
        present = {line.split()[0] for line in index.read_text(encoding="utf-8").splitlines()
                   if line.strip()}
    except OSError as exc:
        raise DataError(index, f"cannot read: {exc}; run the features stage") from None
    missing = sorted(set(data.utts) - present)
    if missing and not ex.skip_bad:
        raise DataError(index, f"lacks features of {len(missing)} utterance(s) of "
                        f"{data.path / 'text'} (e.g. {missing[0]!r}); rerun the features "
                        "stage, or pass --skip-bad-utts to leave them out")
    if missing:
        log.warning("%s: %d of %d utterances have no features and are left out (e.g. %s)",
                    name, len(missing), len(data), missing[0])
    return ArchiveSource(str(ex.feat_dir(name)), str(data.path))


def work_dir(ex: Experiment, system: str) -> Path:
    """Where a GMM system's training jobs keep their alignments (``ali.<k>.npz`` per part)."""
    return ex.exp / "train_jobs" / system


def _decode_key(ex: Experiment, system: str, cfg: DecoderConfig, sweep: SweepConfig,
                rescore: tuple[Path, Path] | None, features: Experiment) -> dict:
    """What decoding ``system`` on dev and test depends on: the search and sweep settings,
    and the sha256 of the model's manifest, the lexicon, the LMs, and each set's transcripts,
    speakers and feature archive index."""
    files = {"model": ex.system_dir(system) / "manifest.json",
             "lexicon": ex.data / "lang" / "lexicon.txt", "grammar": Path(cfg.grammar)}
    files.update({f"rescore_{k}": path for k, path in enumerate(rescore or ())})
    for name in ("dev", "test"):
        files.update({f"{name}_{f}": ex.data / name / f for f in ("text", "utt2spk")})
        files.update({f"{name}_{f}": features.feat_dir(name) / f
                      for f in ("feats.index", "config.json")})
    return {"decode": {**dataclasses.asdict(cfg), "grammar": None},
            "sweep": dataclasses.asdict(sweep),
            "sha256": {k: sha256_of(path) if path.is_file() else None
                       for k, path in sorted(files.items())}}


def _decode_cfg(ex: Experiment, s: LvcsrSettings) -> DecoderConfig:
    """The decode settings with G = the decoding LM."""
    return dataclasses.replace(s.decode, grammar=str(lm_path(ex, s.lm.order).resolve()))


def write_lvcsr_results(ex: Experiment, s: LvcsrSettings, gmms: list[str], notes: str) -> None:
    """RESULTS.md: WER table (dev, test), then the LMs, graphs, chosen weights and speed."""
    from asr.results import dev_choice_section, write_results_md

    lm = json.loads((ex.exp / "lm" / "lm.json").read_text(encoding="utf-8"))
    contexts = "cross-word" if s.tri.cross_word else "word-internal"
    speeds = ", ×".join(f"{f:g}" for f in s.dnn_speed_factors)
    perturbed = (f", on train and its copies at speed ×{speeds} (each a voice of its own)"
                 if speeds else "")

    def network(hybrid: str) -> str:
        cfg = s.network(hybrid)
        return (f"{cfg.model.upper()}, {cfg.num_layers} layers of {cfg.hidden_dim}, "
                f"{cfg.epochs} epochs")

    chain = {"mono": "mono: monophone", "tri": f"tri: {contexts} triphones on MFCC + deltas",
             "tri2b": "tri2b: LDA+MLLT over spliced MFCCs, on tri's alignments",
             "tri3b": "tri3b: speaker-adaptive training with fMLLR on tri2b's front end, "
                      "decoded with one fMLLR transform per test speaker (from the "
                      "speaker-independent first pass, then re-estimated from the adapted "
                      "pass)",
             "dnn": f"dnn: the hybrid ({network('dnn')}, fbank input), trained on "
                    f"{gmms[-1]}'s alignments" + (" (fMLLR-adapted)" if gmms[-1] == "tri3b"
                                                  else "") + perturbed,
             "dnn_fmllr": f"dnn_fmllr: the hybrid ({network('dnn_fmllr')}) on tri3b's fMLLR "
                          "features (LDA+MLLT, then one transform per speaker: at test time "
                          "tri3b's first estimate, re-estimated from the network's adapted "
                          "pass), trained on tri3b's alignments" + perturbed}
    systems = "; ".join(chain[n] for n in s.systems) + "."
    if s.lexicon.position_dependent:
        systems += (" Phones are word-position dependent (`_B`, `_I`, `_E`, `_S`); a base "
                    "phone's variants share one tree root (one set of monophone pdfs).")
    if s.lm.rescore_order:
        n = s.lm.rescore_order
        systems += f" Rows `<system>_{n}gram`: that system's lattices rescored with the {n}-gram."
    lines = ["## Systems", "", systems, "", "## Language models", "",
             lm.get("description") or
             f"Interpolated modified Kneser-Ney (`asr.lm`) on `{s.lm_text}` over the "
             f"lexicon's {lm['vocabulary']:,} words (others `<UNK>`).", "",
             "| order | n-grams | dev perplexity | dev OOV % | test perplexity | test OOV % |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for order, entry in lm["models"].items():
        d, t = entry["sets"]["dev"], entry["sets"]["test"]
        lines.append(f"| {order}-gram | {' / '.join(f'{n:,}' for n in entry['ngrams'])} | "
                     f"{d['perplexity']} | {d['oov_rate']} | {t['perplexity']} | "
                     f"{t['oov_rate']} |")
    lines += ["", f"## Decoding graphs (HCLG, {s.lm.order}-gram G)", "",
              "| system tree | states | arcs | build s | peak MiB |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in gmms:
        g = json.loads((ex.system_dir(name) / "graph.json").read_text(encoding="utf-8"))
        lines.append(f"| {name} | {g['states']:,} | {g['arcs']:,} | {g['seconds']} | "
                     f"{g['peak_mib']:,} |")
    summary = json.loads((ex.exp / "decode_summary.json").read_text(encoding="utf-8"))
    lines += ["", "## Chosen weights and speed", "",
              "LMWT (1 / acoustic scale) and word insertion penalty are chosen by the fewest "
              "errors on dev over the sweep "
              f"(GMMs: LMWT {', '.join(f'{w:g}' for w in s.sweep.lm_weights)}, decoded at "
              f"acoustic scale {s.decode.acoustic_scale:g}; hybrid: LMWT "
              f"{', '.join(f'{w:g}' for w in s.dnn_sweep.lm_weights)}, decoded at "
              f"{s.dnn_acoustic_scale:g}; WIP {', '.join(f'{w:g}' for w in s.sweep.word_penalties)}"
              "); test is scored at "
              "dev's choice. Real-time factor: decoding test into lattices (acoustic scoring "
              "included) over test's audio, one process; rescoring rows add the rescoring "
              "time.", "",
              "| system | LMWT | WIP | real-time factor | rescoring RTF |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for row, r in summary.items():
        rescoring = "" if r["rescore_rtf"] is None else f"{r['rescore_rtf']:.4f}"
        lines.append(f"| {row} | {r['lm_weight']:g} | {r['word_penalty']:g} | "
                     f"{r['rtf']:.4f} | {rescoring} |")
    rows = [n for name in s.systems for n in summary
            if n == name or re.fullmatch(re.escape(name) + r"_\d+gram", n)]
    hybrids = [h for h in HYBRIDS if h in s.systems]
    sections = ["\n".join(lines)]
    if len(hybrids) > 1:
        sections.append(dev_choice_section(ex.results / "results.json", hybrids, ["dev"]))
    write_results_md(ex.results / "results.json", ex.results / "RESULTS.md",
                     f"{ex.corpus}: word error rates", system_order=rows,
                     test_set_order=["dev", "test"], notes=notes, sections=sections)


__all__ = ["LatticeSet", "LmConfig", "LvcsrSettings", "SweepConfig", "arpa_counts", "arpa_words",
           "build_graphs", "decode_dev_test", "decode_lattices", "lm_path", "load_lexicon",
           "prepare_arpa_lang", "prepare_lang", "prepare_subsets", "rescore_lattices",
           "run_lvcsr", "score_sweep", "split_by_speaker", "train_lms", "unpack_arpa",
           "write_lvcsr_results"]
