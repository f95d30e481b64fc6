"""Corpora in LibriSpeech's layout: ``<subset>/<speaker>/<chapter>/*.flac`` and ``*.trans.txt``.

Each chapter folder holds one transcript, ``<speaker>-<chapter>.trans.txt``, with one line
per recording, ``<speaker>-<chapter>-<NNNN> WORD WORD ...``, and the recording itself as
``<speaker>-<chapter>-<NNNN>.flac`` beside it. :func:`prepare_librispeech` turns one subset
(``train-clean-5``, ``dev-clean-2``, sotu's ``train``, ...) into a Kaldi data directory, as
Kaldi's ``egs/librispeech/s5/local/data_prep.sh`` does: the utterance id is the line's id,
the speaker is the LibriSpeech speaker id (the folder name), and ``wav.scp`` points at the
FLAC files themselves (:func:`asr.audio.read_wav` reads FLAC).

>>> prepare_librispeech("LibriSpeech/dev-clean-2", "data/dev_clean_2")   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

from asr.data.datadir import DataDir
from asr.errors import DataError
from asr.fileio import read_lines

__all__ = ["TRANSCRIPT_SUFFIX", "AUDIO_SUFFIX", "read_librispeech", "prepare_librispeech"]

TRANSCRIPT_SUFFIX = ".trans.txt"
AUDIO_SUFFIX = ".flac"


def _check_name(folder: Path, what: str) -> str:
    name = folder.name
    if "-" in name or name.split() != [name]:
        raise DataError(folder, f"{what} folder name {name!r} holds '-' or whitespace; expected "
                                f"a LibriSpeech {what} id such as 1272")
    return name


def _read_chapter(chapter: Path, speaker: str, wavs: dict, text: dict, utt2spk: dict) -> None:
    """Add one chapter's utterances; errors name its transcript and line."""
    name = f"{speaker}-{chapter.name}"
    trans = chapter / f"{name}{TRANSCRIPT_SUFFIX}"
    others = sorted(p.name for p in chapter.glob(f"*{TRANSCRIPT_SUFFIX}") if p != trans)
    if others:
        raise DataError(chapter / others[0], f"transcript in chapter folder {name} is not "
                                             f"named {trans.name}; expected one transcript "
                                             "<speaker>-<chapter>.trans.txt per chapter")
    if not trans.is_file():
        raise DataError(chapter, f"no transcript {trans.name}; expected one per chapter folder")
    lines = read_lines(trans, "transcript")
    audio = {p.name for p in chapter.iterdir() if p.name.endswith(AUDIO_SUFFIX)}
    listed = set()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            raise DataError(trans, f"empty line; expected '{name}-NNNN WORD ...'", number)
        utt, words = fields[0], fields[1:]
        stem, sep, index = utt.rpartition("-")
        if stem != name or not sep or not index:
            raise DataError(trans, f"utterance id '{utt}' does not belong in folder "
                                   f"{speaker}/{chapter.name}; expected '{name}-NNNN'", number)
        if utt in wavs:
            raise DataError(trans, f"utterance '{utt}' is listed twice; expected each "
                                   "recording once", number)
        if not words:
            raise DataError(trans, f"empty transcript for utterance '{utt}'; expected at least "
                                   "one word", number)
        flac = utt + AUDIO_SUFFIX
        if flac not in audio:
            raise DataError(trans, f"audio file {flac} of utterance '{utt}' does not exist in "
                                   f"{chapter}", number)
        listed.add(flac)
        wavs[utt], text[utt], utt2spk[utt] = chapter / flac, words, speaker
    unlisted = sorted(audio - listed)
    if unlisted:
        raise DataError(trans, f"audio file {unlisted[0]} has no line here; expected one "
                               f"line per recording ({len(unlisted)} unlisted)")


def read_librispeech(subset_dir: str | Path) -> DataDir:
    """Read one subset into an unsaved, validated :class:`DataDir`.

    Parameters
    ----------
    subset_dir : str or Path
        The subset folder, e.g. ``LibriSpeech/train-clean-5``, holding ``<speaker>/<chapter>/``.

    Raises
    ------
    DataError
        Naming the transcript and line of an id that does not belong in its folder, a
        repeated id, an empty transcript or a missing FLAC file; naming the transcript of a
        FLAC file it does not list; naming the folder that lacks a transcript, has a badly
        named speaker or chapter folder, or holds no recordings at all.
    """
    subset = Path(subset_dir)
    if not subset.is_dir():
        raise DataError(subset, "no such folder; expected a LibriSpeech subset folder holding "
                                "<speaker>/<chapter>/*.flac and *.trans.txt")
    wavs: dict[str, Path] = {}
    text: dict[str, list[str]] = {}
    utt2spk: dict[str, str] = {}
    for speaker_dir in sorted(p for p in subset.iterdir() if p.is_dir()):
        speaker = _check_name(speaker_dir, "speaker")
        for chapter in sorted(p for p in speaker_dir.iterdir() if p.is_dir()):
            _check_name(chapter, "chapter")
            _read_chapter(chapter, speaker, wavs, text, utt2spk)
    if not wavs:
        raise DataError(subset, "no recordings found; expected <speaker>/<chapter>/ folders "
                                f"with *{AUDIO_SUFFIX} and *{TRANSCRIPT_SUFFIX}")
    data = DataDir(wavs=wavs, text=text, utt2spk=utt2spk)
    data.validate()
    return data


def prepare_librispeech(subset_dir: str | Path, out_dir: str | Path) -> DataDir:
    """Write the Kaldi data directory of one subset (``wav.scp``, ``text``, ``utt2spk``,
    ``spk2utt``) into ``out_dir``, replacing it atomically.

    Returns
    -------
    DataDir
        As saved; raises :class:`DataError` as :func:`read_librispeech` does.
    """
    data = read_librispeech(subset_dir)
    data.save(out_dir)
    return data
