"""Diagonal GMMs and GMM-HMM training (model, statistics and update kept apart)."""
from asr.gmm.diag_gmm import DiagGmm, flat_start
from asr.gmm.model import GmmAcousticModel
from asr.gmm.stats import GmmStats
from asr.gmm.train import GmmTrainConfig, TrainResult, train_gmm_hmm
from asr.gmm.update import mle_update, split_gaussians

__all__ = ["DiagGmm", "GmmAcousticModel", "GmmStats", "GmmTrainConfig", "TrainResult",
           "flat_start", "mle_update", "split_gaussians", "train_gmm_hmm"]
