"""Maximum-likelihood update of diagonal GMMs, and mixture growth by splitting."""
from __future__ import annotations

import numpy as np

from asr.gmm.diag_gmm import DiagGmm
from asr.gmm.stats import GmmStats


def mle_update(gmm: DiagGmm, stats: GmmStats, var_floor: np.ndarray,
               min_occ: float = 3.0) -> DiagGmm:
    """New parameters from statistics.

    Gaussians with occupancy below ``min_occ`` keep their means and variances; weights are
    re-normalised within each pdf (with a small floor); variances never fall below
    ``var_floor`` (D,).
    """
    occ = stats.occ
    ok = occ >= min_occ
    means = gmm.means.copy()
    variances = gmm.variances.copy()
    safe = np.where(ok, occ, 1.0)[:, None]
    new_means = stats.first / safe
    means[ok] = new_means[ok]
    variances[ok] = np.maximum(stats.second[ok] / safe[ok] - new_means[ok] ** 2, var_floor)
    pdf_occ = np.bincount(gmm.gauss_pdf, weights=occ, minlength=gmm.num_pdfs)
    weights = np.where(pdf_occ[gmm.gauss_pdf] > 0,
                       occ / np.maximum(pdf_occ[gmm.gauss_pdf], 1e-10),
                       np.exp(gmm.log_weights))
    weights = np.maximum(weights, 1e-5)
    weights /= np.bincount(gmm.gauss_pdf, weights=weights)[gmm.gauss_pdf]
    return gmm.with_params(means, variances, np.log(weights), gmm.gauss_pdf)


def split_gaussians(gmm: DiagGmm, pdf_occ: np.ndarray, target: int, power: float = 0.2,
                    perturb: float = 0.2) -> DiagGmm:
    """Grow the mixtures towards ``target`` Gaussians in all.

    Each pdf's share is proportional to its occupancy to the power ``power`` (Kaldi's rule);
    a pdf grows by repeatedly splitting its heaviest Gaussian into two whose means move
    ``perturb`` standard deviations apart.
    """
    if target <= gmm.num_gauss:
        return gmm
    share = np.power(np.maximum(pdf_occ, 0.0), power)
    if share.sum() <= 0:
        return gmm
    want = np.maximum(np.floor(target * share / share.sum() + 0.5).astype(int), 1)
    means, variances, logw, owner = [], [], [], []
    for p in range(gmm.num_pdfs):
        sl = slice(gmm.offsets[p], gmm.offsets[p + 1])
        m, v, w = list(gmm.means[sl]), list(gmm.variances[sl]), list(np.exp(gmm.log_weights[sl]))
        while len(w) < want[p]:
            k = int(np.argmax(w))
            delta = perturb * np.sqrt(v[k])
            w[k] /= 2.0
            m.append(m[k] + delta)
            v.append(v[k].copy())
            w.append(w[k])
            m[k] = m[k] - delta
        means += m
        variances += v
        logw += list(np.log(w))
        owner += [p] * len(w)
    return gmm.with_params(np.array(means), np.array(variances), np.array(logw), np.array(owner))
