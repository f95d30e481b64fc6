#!/usr/bin/env python
"""mini LibriSpeech: real read speech (OpenSLR 31) with LibriSpeech's lexicon and LMs (OpenSLR 11).

    python recipes/mini_librispeech/run.py [--corpus DIR] [--stage N] [--stop-stage M] [--set ...]

Without --corpus the files are downloaded into ``data/downloads/mini_librispeech/``, each
verified by the checksums ``data/corpora.json`` gives: ``train-clean-5`` (about 332 MB),
``dev-clean-2`` (about 126 MB), ``librispeech-lexicon.txt``, ``3-gram.pruned.1e-7.arpa.gz``
(G) and, only when the settings rescore with it, ``4-gram.arpa.gz`` (over a gigabyte).
Offline, DIR is a folder holding ``train-clean-5/`` and ``dev-clean-2/`` (the archives'
``LibriSpeech/`` folder, or the folder holding it) and the LM files beside the subsets.

Mini LibriSpeech has no test set. dev-clean-2's speakers, sorted, alternate into dev (1st,
3rd, ...) and test (2nd, 4th, ...): LM weights are chosen on dev and test is scored at that
choice, on speakers dev never saw. Training: train-clean-5. Stages: 0 data, 1 lang + LMs,
2 features, 3 monophone, 4 triphone, 5 hybrid DNN, 6 graphs, 7 decode dev and test,
8 results (``results/mini_librispeech/RESULTS.md``). See ``asr.lvcsr``.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from asr.data.corpora import fetch
from asr.data.librispeech import read_librispeech
from asr.errors import DataError
from asr.lvcsr import LvcsrSettings, run_lvcsr
from asr.pronunciations import CMUDICT
from asr.recipe import recipe_arguments, resolve_settings, run_recipe

SETTINGS = Path(__file__).with_name("settings.toml")
# What a file or subset the settings name is called in data/corpora.json.
MANIFEST_ENTRIES = {"train-clean-5": "train-clean-5", "dev-clean-2": "dev-clean-2",
                    "librispeech-lexicon.txt": "librispeech-lexicon",
                    "3-gram.pruned.1e-7.arpa.gz": "librispeech-3gram-pruned",
                    "4-gram.arpa.gz": "librispeech-4gram"}


def needed(s: LvcsrSettings) -> tuple[list[str], list[str]]:
    """The subsets and the files (lexicon, LMs) the settings read from the corpus folder."""
    subsets = sorted({s.train, s.dev, s.test})
    files = [s.lm_arpa] + [name for name in (s.rescore_arpa, s.lexicon.source)
                           if name and name != CMUDICT]
    return subsets, files


def find_corpus(corpus: Path | None, downloads: Path, s: LvcsrSettings,
                progress: bool = True) -> Path:
    """The folder holding the subsets and files the settings need: ``corpus`` (or its
    ``LibriSpeech/``), or ``<downloads>/mini_librispeech`` after verified downloads."""
    subsets, files = needed(s)
    if corpus is not None:
        root = corpus / "LibriSpeech" if (corpus / "LibriSpeech" / s.train).is_dir() else corpus
        for name in subsets:
            if not (root / name).is_dir():
                raise DataError(root, f"has no {name}/ subset; expected the folder holding "
                                      f"{', '.join(subsets)} (unpacked from OpenSLR 31)")
        for name in files:
            if not (root / name).is_file():
                raise DataError(root, f"has no {name}; expected it beside the subsets "
                                      "(OpenSLR 11)")
        return root
    root = downloads / "mini_librispeech"
    for name in subsets + files:
        if name not in MANIFEST_ENTRIES:
            raise DataError(None, f"{name} is not downloadable (data/corpora.json has "
                                  f"{', '.join(MANIFEST_ENTRIES)}); pass --corpus DIR")
        check = read_librispeech if name in subsets else None
        fetch(MANIFEST_ENTRIES[name], root, check=check, progress=progress)
    return root


def notes(s: LvcsrSettings) -> str:
    split = (f"dev and test are the two speaker halves of {s.dev} (its speakers, sorted, "
             "alternate: 1st, 3rd, ... dev; 2nd, 4th, ... test), since mini LibriSpeech has "
             "no test set; " if s.split_speakers else "")
    rescoring = f", lattices rescored with `{s.rescore_arpa}`" if s.rescore_arpa else ""
    return (f"Real read speech: mini LibriSpeech (OpenSLR 31), trained on {s.train}; {split}"
            f"LM weights are chosen on dev. G is LibriSpeech's `{s.lm_arpa}` (OpenSLR 11)"
            f"{rescoring}; pronunciations from `{s.lexicon.source}`.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    description = __doc__.splitlines()[0]
    # The settings say which LM files to fetch (the 4-gram only when it rescores).
    args = recipe_arguments(description, SETTINGS).parse_args(argv)
    s = resolve_settings(args, LvcsrSettings)
    return run_lvcsr("mini_librispeech", description, SETTINGS,
                     functools.partial(find_corpus, s=s, progress=not args.no_progress),
                     argv, notes)


if __name__ == "__main__":
    sys.exit(run_recipe(main))   # an AsrError ends it in one line; --debug: traceback
