#!/usr/bin/env python
"""sotu: large-vocabulary read speech in LibriSpeech's layout (synthetic voices, real text).

    python recipes/sotu/run.py --corpus DIR [--stage N] [--stop-stage M] [--set ...]

DIR is the folder ``shared/tools/synth-sotu DIR`` wrote (it holds ``LibriSpeech/``).
Stages: 0 data, 1 lang + LMs, 2 features, 3 monophone, 4 triphone, 5 hybrid DNN,
6 graphs, 7 decode dev and test (lattices, dev-chosen LM weight, 4-gram rescoring),
8 results (``results/sotu/RESULTS.md``). See ``asr.lvcsr``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from asr.errors import DataError
from asr.lvcsr import LvcsrSettings, run_lvcsr
from asr.recipe import run_recipe


def find_corpus(corpus: Path | None, _downloads: Path) -> Path:
    """sotu is built locally (no download): ``DIR/LibriSpeech``."""
    if corpus is None:
        raise DataError(None, "sotu is synthesised, not downloaded: build it with "
                              "shared/tools/synth-sotu DIR and pass --corpus DIR")
    root = corpus / "LibriSpeech" if (corpus / "LibriSpeech").is_dir() else corpus
    for name in ("train", "dev", "test"):
        if not (root / name).is_dir():
            raise DataError(root, f"has no {name}/ subset: pass the folder synth-sotu wrote")
    return root


def notes(s: LvcsrSettings) -> str:
    return ("**The speech is synthetic**: State of the Union sentences (real text) read by "
            "espeak-ng voices, in LibriSpeech's layout. Train: 40 speakers x 40 sentences; "
            "dev and test: 8 speakers x 25 sentences each, speakers and speeches disjoint. "
            "The LM text (`lm-norm.txt`) holds none of the dev or test speeches. Results on "
            "real speech (LibriSpeech) come from `recipes/mini_librispeech`.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_lvcsr("sotu", __doc__.splitlines()[0], Path(__file__).with_name("settings.toml"),
                     find_corpus, argv, notes)


if __name__ == "__main__":
    sys.exit(run_recipe(main))   # an AsrError ends it in one line; --debug: traceback
