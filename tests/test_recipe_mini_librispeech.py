"""The mini LibriSpeech recipe offline: verified downloads from a local server, unpacking,
data preparation with dev-clean-2 split by speaker, and the lang stage on a published LM.

The served files are stand-ins shaped like OpenSLR's: ``train-clean-5.tar.gz`` and
``dev-clean-2.tar.gz`` (``LibriSpeech/<subset>/<speaker>/<chapter>/``) built from a few
speakers of the synthetic sotu corpus, a small ``librispeech-lexicon.txt`` (CMUdict with
stress, one training word left out) and a small gzipped trigram ARPA. Training is not run
here (the sotu recipe's test covers it).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from asr.data import corpora
from asr.data.corpora import fetch
from asr.data.datadir import DataDir
from asr.data.download import download
from asr.errors import DataError
from asr.lm import train_kneser_ney, write_arpa
from asr.lvcsr import LmConfig, LvcsrSettings, arpa_counts, arpa_words
from asr.pronunciations import LexiconConfig, cmudict_pronunciations
from conftest import load_recipe, serving

LEFT_OUT = None        # the training word the served lexicon lacks (set by the fixture)


def _digest(path: Path, name: str) -> str:
    return hashlib.new(name, path.read_bytes()).hexdigest()


def _subset_tar(path: Path, subset: str, speakers: list[Path]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for speaker in speakers:
            tar.add(speaker, arcname=f"LibriSpeech/{subset}/{speaker.name}")
        readme = path.parent / "README.TXT"
        readme.write_text("mini LibriSpeech stand-in\n")
        tar.add(readme, arcname="LibriSpeech/README.TXT")


def _words(speakers: list[Path]) -> list[list[str]]:
    return [line.split()[1:] for speaker in speakers for trans in speaker.glob("*/*.trans.txt")
            for line in trans.read_text().splitlines()]


@pytest.fixture(scope="module")
def served(tmp_path_factory, sotu_slice):
    """A folder shaped like OpenSLR's files (speaker 1 trains, 2 and 3 are dev-clean-2)."""
    speakers = sorted(p for p in (sotu_slice / "LibriSpeech" / "dev").iterdir() if p.is_dir())
    assert len(speakers) == 3
    out = tmp_path_factory.mktemp("served")
    _subset_tar(out / "train-clean-5.tar.gz", "train-clean-5", speakers[:1])
    _subset_tar(out / "dev-clean-2.tar.gz", "dev-clean-2", speakers[1:])
    train_words, all_words = _words(speakers[:1]), _words(speakers)
    prons = cmudict_pronunciations(keep_stress=True)
    vocab = sorted({w for ws in all_words for w in ws if w in prons})
    global LEFT_OUT
    LEFT_OUT = sorted({w for ws in train_words for w in ws if w in prons})[0]
    (out / "librispeech-lexicon.txt").write_text("".join(
        f"{w}\t{' '.join(p)}\n" for w in vocab if w != LEFT_OUT for p in prons[w]))
    arpa = out / "3gram.arpa"
    write_arpa(train_kneser_ney([" ".join(ws) for ws in all_words], 3, vocab=vocab,
                                unk="<UNK>"), arpa)
    with open(arpa, "rb") as src, gzip.open(out / "3-gram.pruned.1e-7.arpa.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    arpa.unlink()
    return out


def _manifest(path: Path, served: Path, base_url: str, wrong: dict[str, str] = {}) -> Path:
    """The recipe's entries with checksums of the served files (``wrong``: entry -> the
    checksum to spoil); train-clean-5 carries an md5 only, dev-clean-2 both, as in the
    project's manifest, the LM files sha256."""
    real = json.loads(corpora.MANIFEST.read_text())
    entries = {}
    for name in ("train-clean-5", "dev-clean-2", "librispeech-lexicon",
                 "librispeech-3gram-pruned", "librispeech-4gram"):
        entry = {k: v for k, v in real[name].items() if k in ("archive", "corpus_dir")}
        entry["url"] = f"{base_url}/{entry['archive']}"
        file = served / entry["archive"]
        for algorithm in ("sha256", "md5"):
            if algorithm in real[name]:
                entry[algorithm] = _digest(file, algorithm) if file.is_file() else "0" * (
                    64 if algorithm == "sha256" else 32)
        if name in wrong:
            value = entry[wrong[name]]
            entry[wrong[name]] = ("1" if value[0] == "0" else "0") + value[1:]
        entries[name] = entry
    path.write_text(json.dumps(entries, indent=2))
    return path


def test_manifest_entries_carry_md5_or_sha256_as_published():
    manifest = corpora.load_manifest()
    assert set(manifest["train-clean-5"]) >= {"md5", "md5_source"}
    assert "sha256" not in manifest["train-clean-5"]         # none found: md5 only
    assert manifest["dev-clean-2"]["md5"] == "6d7ab67ac6a1d2c993d050e16d61080d"
    assert "not yet checked" in manifest["dev-clean-2"]["sha256_source"]
    assert manifest["train-clean-5"]["corpus_dir"] == "LibriSpeech/train-clean-5"


@pytest.mark.parametrize("entry, algorithm", [("train-clean-5", "md5"),
                                              ("dev-clean-2", "md5"),
                                              ("dev-clean-2", "sha256"),
                                              ("librispeech-3gram-pruned", "sha256")])
def test_a_wrong_checksum_is_refused_naming_the_file(served, tmp_path, entry, algorithm):
    with serving(served) as url:
        manifest = _manifest(tmp_path / "corpora.json", served, url, {entry: algorithm})
        with pytest.raises(DataError, match=f"{algorithm} mismatch") as info:
            fetch(entry, tmp_path / "dl", manifest, progress=False, timeout=5)
    archive = json.loads(manifest.read_text())[entry]["archive"]
    assert str(tmp_path / "dl" / archive) in str(info.value)
    assert not (tmp_path / "dl" / archive).exists()            # the download was removed
    assert not (tmp_path / "dl" / entry).exists()              # and nothing unpacked


def test_md5_alone_verifies_and_neither_is_refused(served, tmp_path):
    source = served / "librispeech-lexicon.txt"
    dest = download(source.as_uri(), tmp_path / "lex.txt", None, progress=False,
                    md5=_digest(source, "md5"))
    assert dest.read_bytes() == source.read_bytes()
    with pytest.raises(DataError, match="no sha256 or md5 .* refusing to download unverified"):
        download(source.as_uri(), tmp_path / "other.txt", None, progress=False)
    with pytest.raises(DataError, match="expected a md5 of 32 hex digits"):
        download(source.as_uri(), tmp_path / "other.txt", None, progress=False, md5="abc")
    manifest = tmp_path / "bad.json"
    manifest.write_text(json.dumps({"x": {"url": "https://example.org/x", "archive": "x"}}))
    with pytest.raises(DataError, match="corpus 'x' lacks sha256 or md5"):
        corpora.load_manifest(manifest)


@pytest.fixture
def recipe_run(served, tmp_path, monkeypatch):
    """Stages 0-1 of the recipe, downloading from the local server."""
    recipe = load_recipe("mini_librispeech")
    with serving(served) as url:
        monkeypatch.setattr(corpora, "MANIFEST", _manifest(tmp_path / "corpora.json", served,
                                                           url))
        argv = ["--stop-stage", "1", "--data", str(tmp_path / "data"), "--exp",
                str(tmp_path / "exp"), "--results", str(tmp_path / "results"), "--no-progress"]
        assert recipe.main(argv) == 0
    return recipe, tmp_path


def test_recipe_downloads_unpacks_splits_and_builds_lang(recipe_run):
    recipe, root = recipe_run
    downloads = root / "data" / "downloads" / "mini_librispeech"
    assert (downloads / "train-clean-5").is_dir() and (downloads / "dev-clean-2").is_dir()
    assert not (downloads / "4-gram.arpa.gz").exists()        # rescoring is off by default
    data = root / "data" / "mini_librispeech"
    train, dev, test = (DataDir.load(data / name) for name in ("train", "dev", "test"))
    assert len(train.spk2utt) == 1 and len(dev.spk2utt) == 1 and len(test.spk2utt) == 1
    dev_clean_2 = sorted(p.name for p in (downloads / "dev-clean-2").iterdir())
    assert sorted(dev.spk2utt) == dev_clean_2[0::2] and sorted(test.spk2utt) == dev_clean_2[1::2]
    assert not set(dev.utts) & set(test.utts) and len(dev) + len(test) == 50
    lm = root / "exp" / "mini_librispeech" / "lm"
    assert arpa_counts(lm / "3gram.arpa")[0] > 0              # unpacked from the .gz
    lexicon = {line.split()[0] for line in (data / "lang" / "lexicon.txt").read_text().splitlines()}
    assert LEFT_OUT not in lexicon and "<UNK>" in lexicon and len(lexicon) > 20
    assert LEFT_OUT in (root / "exp" / "mini_librispeech" / "lang" / "oov_train.txt").read_text()
    assert "<UNK>" in {w for ws in DataDir.load(data / "train").text.values() for w in ws}
    info = json.loads((lm / "lm.json").read_text())
    assert set(info["models"]) == {"3"} and "3-gram.pruned.1e-7.arpa.gz" in info["description"]
    assert set(info["models"]["3"]["sets"]) == {"dev", "test"}


def test_offline_corpus_folder_is_checked(recipe_run, tmp_path):
    recipe, root = recipe_run
    s = LvcsrSettings(train="train-clean-5", dev="dev-clean-2", test="dev-clean-2",
                      split_speakers=True, lm_arpa="3-gram.pruned.1e-7.arpa.gz",
                      lm=LmConfig(order=3, rescore_order=0),
                      lexicon=LexiconConfig(source="librispeech-lexicon.txt"))
    downloads = root / "data" / "downloads" / "mini_librispeech"
    assert recipe.find_corpus(downloads, Path("unused"), s) == downloads
    corpus = tmp_path / "offline"
    (corpus / "LibriSpeech").mkdir(parents=True)
    for name in ("train-clean-5", "dev-clean-2"):
        (corpus / "LibriSpeech" / name).symlink_to(downloads / name)
    with pytest.raises(DataError, match="LibriSpeech: has no 3-gram.pruned.1e-7.arpa.gz; "
                                        "expected it beside the subsets"):
        recipe.find_corpus(corpus, Path("unused"), s)
    for name in ("3-gram.pruned.1e-7.arpa.gz", "librispeech-lexicon.txt"):
        shutil.copy(downloads / name, corpus / "LibriSpeech" / name)
    assert recipe.find_corpus(corpus, Path("unused"), s) == corpus / "LibriSpeech"


def test_settings_refuse_tuning_on_test_and_unpaired_rescoring():
    with pytest.raises(ValueError, match="tuning on the test set"):
        LvcsrSettings(dev="dev-clean-2", test="dev-clean-2")
    with pytest.raises(ValueError, match="rescore_arpa"):
        LvcsrSettings(lm_arpa="3-gram.arpa.gz")              # rescore_order 4 by default


def test_arpa_words_ranks_unigrams(tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=5\n\n\\1-grams:\n-1.0\t<s>\t-0.5\n-0.5\t</s>\n"
                    "-2.0\t<UNK>\n-0.3\tTHE\n-1.5\tCAT\n\n\\end\\\n")
    assert arpa_counts(arpa) == [5]
    assert arpa_words(arpa) == {"THE", "CAT"} and arpa_words(arpa, 1) == {"THE"}
