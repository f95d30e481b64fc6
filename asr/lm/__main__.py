"""``python -m asr.lm``: train an ARPA model, or score a text with one.

    python -m asr.lm train [--order 3] [--vocab-size N | --vocab FILE] [--prune T] TEXT OUT.arpa
    python -m asr.lm ppl [--unk] LM.arpa TEXT
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from asr.errors import AsrError, error_line
from asr.lm.arpa import read_arpa, write_arpa
from asr.lm.kneser_ney import train_kneser_ney
from asr.lm.perplexity import perplexity
from asr.lm.text import read_sentences

PROG = "python -m asr.lm"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="interpolated modified Kneser-Ney model of a text")
    train.add_argument("text", type=Path, help="training text, one sentence a line")
    train.add_argument("output", type=Path, help="ARPA file to write")
    train.add_argument("--order", type=int, default=3)
    vocab = train.add_mutually_exclusive_group()
    vocab.add_argument("--vocab-size", type=int, default=None,
                       help="keep the N most frequent words; the rest become --unk")
    vocab.add_argument("--vocab", type=Path, default=None,
                       help="file of vocabulary words (the first field of each line)")
    train.add_argument("--unk", default="<unk>", help="the unknown-word symbol")
    train.add_argument("--prune", type=float, default=0.0,
                       help="relative-entropy pruning threshold (e.g. 1e-8; 0 = none)")
    ppl = sub.add_parser("ppl", help="perplexity and OOV rate of a text")
    ppl.add_argument("lm", type=Path)
    ppl.add_argument("text", type=Path)
    ppl.add_argument("--unk", action="store_true",
                     help="score OOV words as <unk> instead of excluding them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "train":
            words = args.vocab_size
            if args.vocab is not None:
                words = [s[0] for s in read_sentences(args.vocab)]
            start = time.perf_counter()
            lm = train_kneser_ney(args.text, args.order, words, args.unk, args.prune)
            write_arpa(lm, args.output)
            print(f"{args.output}: order {lm.order}, {lm.vocab_size} words, n-grams "
                  f"{lm.counts}, {time.perf_counter() - start:.1f} s")
        else:
            result = perplexity(read_arpa(args.lm), args.text, unk=args.unk)
            print(f"file {args.text}: {result.summary()}")
    except AsrError as exc:
        print(error_line(exc, PROG), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
