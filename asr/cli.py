"""The ``asr`` command.

    asr decode --model MODEL_DIR --data DATA_DIR --out OUT_DIR [--grammar G] [--beam B] ...
    asr score REF_TEXT HYP_TEXT [--name NAME]
    asr transcribe --model MODEL_DIR FILE.wav [FILE.wav ...]
    asr info MODEL_DIR
    asr models
    asr train-hybrid --data DATA_DIR --feats FEATS_DIR --targets TARGETS.npz --base GMM_DIR
                     --out OUT_DIR [--transforms TRANS.npz] [--train-dir DIR]
                     [--settings FILE.toml] [--set KEY=VALUE]

``train-hybrid`` trains on several processes when torchrun starts it, one per GPU (NCCL) or
on the CPU (gloo): ``torchrun --nproc-per-node 2 -m asr.cli train-hybrid ...``.

An error in the input ends the command with one line naming the file and line at fault;
``asr --debug ...`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import dataclasses
import json
import sys
from pathlib import Path

from asr.errors import AsrError, error_line


def _decoder_overrides(args, system):
    changes = {k: getattr(args, k) for k in ("grammar", "beam", "max_active", "acoustic_scale",
                                             "lm_weight", "word_penalty")
               if getattr(args, k) is not None}
    return dataclasses.replace(system.decoding, **changes)


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grammar", help="'loop', 'single' or an ARPA file (default: the model's)")
    p.add_argument("--beam", type=float)
    p.add_argument("--max-active", dest="max_active", type=int)
    p.add_argument("--acoustic-scale", dest="acoustic_scale", type=float)
    p.add_argument("--lm-weight", dest="lm_weight", type=float)
    p.add_argument("--word-penalty", dest="word_penalty", type=float)
    p.add_argument("--graph-cache", dest="graph_cache", type=Path, default=_default_cache(),
                   help="folder that keeps decoding graphs between runs (default: %(default)s)")


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "asr" / "graphs"


def cmd_decode(args) -> int:
    from asr.data import DataDir
    from asr.evaluate import decode_features
    from asr.features import compute_archive_in_memory
    from asr.fileio import write_text
    from asr.scoring import compute_wer, write_text_file
    from asr.system import AsrSystem

    system = AsrSystem.load(args.model)
    data = DataDir.load(args.data)
    raw = compute_archive_in_memory({u: str(p) for u, p in data.wavs.items()}, system.features,
                                    progress=not args.no_progress)
    feats = system.model_input(raw, data.utt2spk)
    out = Path(args.out)
    # A speaker-adapted system adapts to the data directory's speakers: out/trans.npz.
    hyps = decode_features(system, feats, _decoder_overrides(args, system),
                           progress=not args.no_progress, graph_cache=args.graph_cache,
                           utt2spk=data.utt2spk, transforms_out=out / "trans.npz")
    write_text_file(out / "hyp.txt", hyps)
    if any(data.text.values()):
        result = compute_wer(data.text, hyps, name=str(out))
        write_text(out / "wer", result.line() + "\n")
        print(result.line())
    return 0


def cmd_score(args) -> int:
    from asr.scoring import score_files
    print(score_files(args.ref, args.hyp, name=args.name or "").line())
    return 0


def cmd_transcribe(args) -> int:
    from asr.audio import read_wav
    from asr.features import compute_features
    from asr.system import AsrSystem

    system = AsrSystem.load(args.model)
    decoder = system.decoder(_decoder_overrides(args, system), cache=args.graph_cache)
    for path in args.files:
        wav, _ = read_wav(path, expected_rate=system.features.sample_rate)
        # A single file is its own speaker for per-speaker CMVN and for fMLLR.
        feats = system.model_input({"u": compute_features(wav, system.features)}, {"u": "u"})
        feats, _ = system.adapt(feats, {"u": "u"}, decoder)
        words = decoder.decode(system.model.log_likelihoods(feats["u"])).words
        print(f"{path} {' '.join(words)}")
    return 0


def cmd_info(args) -> int:
    from asr.system import AsrSystem
    system = AsrSystem.load(args.model)
    print(json.dumps({"model_type": system.model.model_type, "num_pdfs": system.model.num_pdfs,
                      "phones": len(system.lexicon.phones), "words": len(system.lexicon.words),
                      "features": dataclasses.asdict(system.features),
                      "transform": None if system.transform is None else
                      [system.transform.dim, system.transform.input_dim],
                      "cross_word": system.tree.cross_word,
                      "adaptation": None if system.adaptation is None else
                      {**system.adaptation.settings(), "models": {
                          name: m.model_type for name, m in system.adaptation.models().items()}},
                      "decoding": dataclasses.asdict(system.decoding)}, indent=2))
    return 0


def cmd_models(args) -> int:
    from asr.models import registered_models
    print("\n".join(registered_models()))
    return 0


def cmd_train_hybrid(args) -> int:
    import logging
    import tomllib

    from asr.errors import SettingsError
    from asr.nnet import NnetConfig
    from asr.nnet.hybrid import train_hybrid_from_files
    from asr.settings import from_dict, parse_override

    values, text = {}, ""
    if args.settings is not None:
        try:
            text = args.settings.read_text(encoding="utf-8")
            values = dict(tomllib.loads(text).get("dnn", {}))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(args.settings, f"cannot read settings: {exc}") from None
    for item in args.set:
        key, value = parse_override(item)
        values[key.removeprefix("dnn.")] = value
    cfg = from_dict(NnetConfig, values, path=args.settings, text=text, table="dnn")
    rank = f" rank {os.environ['RANK']}" if "RANK" in os.environ else ""
    logging.basicConfig(level=logging.WARNING if os.environ.get("ASR_QUIET") else logging.INFO,
                        format=f"%(asctime)s{rank} %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    train_dir = args.train_dir or args.out.with_name(args.out.name + "_train")
    train_hybrid_from_files(args.data, args.feats, args.targets, args.base, cfg, train_dir,
                            args.out, progress=not args.no_progress,
                            transforms_path=args.transforms)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("decode", help="decode a Kaldi data directory; writes OUT/hyp.txt")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--no-progress", action="store_true")
    _add_search_options(p)
    p.set_defaults(func=cmd_decode)
    p = sub.add_parser("score", help="print the %%WER line of a hypothesis text file")
    p.add_argument("ref", type=Path)
    p.add_argument("hyp", type=Path)
    p.add_argument("--name", default="")
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("transcribe", help="print the words of each WAV file")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("files", nargs="+", type=Path)
    _add_search_options(p)
    p.set_defaults(func=cmd_transcribe)
    p = sub.add_parser("info", help="describe a model directory")
    p.add_argument("model", type=Path)
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("models", help="list the registered acoustic model types")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("train-hybrid", help="train a hybrid DNN-HMM on a GMM system's "
                       "targets; under torchrun, on every process with DDP")
    p.add_argument("--data", required=True, type=Path,
                   help="the training data directory (utt2spk for per-speaker CMVN)")
    p.add_argument("--feats", required=True, type=Path,
                   help="the network's feature archive (feats.npy, feats.index, config.json)")
    p.add_argument("--targets", required=True, type=Path,
                   help=".npz of per-utterance pdf ids (asr.nnet.save_targets)")
    p.add_argument("--base", required=True, type=Path,
                   help="the GMM system whose tree, transitions and lexicon the hybrid uses")
    p.add_argument("--out", required=True, type=Path, help="where the hybrid system is saved")
    p.add_argument("--transforms", type=Path,
                   help="the base tri3b's fMLLR transforms of the training speakers (.npz): "
                        "the network reads its fMLLR features (--feats: the base's archive)")
    p.add_argument("--train-dir", dest="train_dir", type=Path,
                   help="settings, checkpoint and history (default: OUT_train); a run "
                        "resumes from its checkpoint")
    p.add_argument("--settings", type=Path, help="a TOML file whose [dnn] table sets the "
                   "network (as in a recipe's settings.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one network setting, e.g. --set epochs=10 --set device=cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_hybrid)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AsrError as exc:
        if args.debug:
            raise
        print(error_line(exc, "asr"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
