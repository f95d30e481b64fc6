"""Data: Kaldi-style data directories and the corpora the recipes prepare into them.

========================  ==============================================================
module                    what it holds
========================  ==============================================================
``asr.data.datadir``      :class:`DataDir` (wav.scp, text, utt2spk, spk2utt), validation
                          with line-numbered errors, :func:`fix_data_dir`
``asr.data.download``     :func:`download` verified by sha256
``asr.data.archive``      :func:`extract_tar` / :func:`extract_archive`, refusing members
                          that would land outside the destination
``asr.data.corpora``      :func:`locate_corpus`: a local copy or a download per
                          ``data/corpora.json``
``asr.data.yesno``        :func:`prepare_yesno`
``asr.data.librispeech``  :func:`prepare_librispeech`: one subset in LibriSpeech's layout
                          (``<speaker>/<chapter>/*.flac``, ``*.trans.txt``)
``asr.data.fsdd``         :func:`prepare_fsdd_isolated`, FSDD file listing and splits
``asr.data.connected``    :func:`prepare_fsdd_connected`: digit strings from FSDD
``asr.data.noisy``        :func:`prepare_noisy`: white, pink and babble noise at set SNRs;
                          :func:`prepare_noisy_copies` for multi-condition training
``asr.data.speed``        :func:`prepare_speed_perturbed`: copies at other speeds
========================  ==============================================================

>>> corpus = locate_corpus("fsdd", corpus_dir=args.corpus)              # doctest: +SKIP
>>> prepare_fsdd_connected(corpus, "data/fsdd_connected", seed=0)        # doctest: +SKIP
>>> prepare_noisy("data/fsdd_connected/test", "data/fsdd_connected",
...               recordings_for_babble="data/fsdd_connected/train")    # doctest: +SKIP
"""
from asr.data.archive import extract_archive, extract_tar, extract_zip
from asr.data.connected import DigitString, plan_fsdd_connected, prepare_fsdd_connected, render_string
from asr.data.corpora import load_manifest, locate_corpus
from asr.data.datadir import DataDir, copy_id, copy_source, fix_data_dir
from asr.data.download import download, sha256_of
from asr.data.fsdd import (DIGIT_WORDS, FSDD_SPEAKERS, Recording, fsdd_recordings,
                           prepare_fsdd_isolated, split_recordings)
from asr.data.librispeech import prepare_librispeech, read_librispeech
from asr.data.noisy import NOISE_KINDS, make_noise, prepare_noisy, prepare_noisy_copies
from asr.data.speed import prepare_speed_perturbed, speed_perturb
from asr.data.yesno import YESNO_WORDS, prepare_yesno, yesno_recordings

__all__ = [
    "DataDir", "copy_id", "copy_source", "fix_data_dir",
    "download", "sha256_of", "extract_tar", "extract_zip", "extract_archive",
    "load_manifest", "locate_corpus",
    "YESNO_WORDS", "yesno_recordings", "prepare_yesno",
    "read_librispeech", "prepare_librispeech",
    "DIGIT_WORDS", "FSDD_SPEAKERS", "Recording", "fsdd_recordings", "split_recordings",
    "prepare_fsdd_isolated",
    "DigitString", "plan_fsdd_connected", "render_string", "prepare_fsdd_connected",
    "NOISE_KINDS", "make_noise", "prepare_noisy", "prepare_noisy_copies",
    "prepare_speed_perturbed", "speed_perturb",
]
