"""Tensor decompositions of trained dense weights, in NumPy (float64): the math behind ``init="hooi"``.

* :func:`tucker_hooi`: HOSVD followed by HOOI (tensorly's ``tensorly.decomposition.tucker``); core
  dims larger than a mode are zero-padded.
* :func:`cp_als`: CP by alternating least squares (tensorly's ``parafac``).
* :func:`balance`: rescale core and factors to one entry RMS (the product is unchanged), so that
  Adam's per-parameter steps see balanced magnitudes.
* :func:`scada_als`: SCADA-Tucker has no closed form for a core shared across layers: start from the
  HOOI core of the largest layer and run alternating least squares (each factor given the rest; then
  the shared core from the normal equations summed over layers).

Nothing here knows about torch or about :class:`~adt.exporter.factorize.TuckerWeight`: the
factorization module turns these arrays into parameters.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["MAX_JOINT_CORE", "tucker_hooi", "cp_als", "balance", "scada_als"]

# The joint SCADA core update solves a (prod k) x (prod k) system; beyond this size only the
# factors are refitted (the core stays the largest layer's HOOI core).
MAX_JOINT_CORE = 4096


def _pad(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float64)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def tucker_hooi(t: np.ndarray, ranks: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Tucker of ``t`` with tensorly (HOSVD init, then HOOI); ranks above a mode size are padded."""
    import tensorly as tl
    from tensorly.decomposition import tucker

    # a mode's rank is bounded by its size and by the product of the other sizes
    eff = [min(k, n, t.size // n) for k, n in zip(ranks, t.shape)]
    if list(eff) == list(t.shape):  # full rank: HOSVD is exact, HOOI has nothing to improve
        core, factors = tucker(tl.tensor(t), rank=eff, init="svd", n_iter_max=1)
    else:
        # HOOI gains little over HOSVD after a few sweeps; 25 caps the cost on big layers
        core, factors = tucker(tl.tensor(t), rank=eff, init="svd", n_iter_max=25, tol=1e-8)
    core = _pad(np.asarray(core, dtype=np.float64), ranks)
    factors = [_pad(np.asarray(f, dtype=np.float64), (n, k)) for f, n, k in zip(factors, t.shape, ranks)]
    return core, factors


def cp_als(t: np.ndarray, rank: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """CP of ``t`` with ``rank`` terms: ``(weights (r,), factors (n_i, r))`` (tensorly ``parafac``)."""
    import tensorly as tl
    from tensorly.decomposition import parafac

    if t.ndim == 2 and rank <= min(t.shape):
        # a matrix's best rank-r CP is its truncated SVD (Eckart-Young); ALS from the SVD has nothing to
        # improve, and tensorly's error update can go NaN on an exact fit
        u, sv, vt = np.linalg.svd(np.asarray(t, dtype=np.float64), full_matrices=False)
        return sv[:rank].copy(), [u[:, :rank].copy(), vt[:rank].T.copy()]
    kw = dict(rank=rank, init="svd" if rank <= min(t.shape) else "random", n_iter_max=200, tol=1e-10,
              random_state=0, normalize_factors=True)
    try:
        cp = parafac(tl.tensor(t), **kw)
    except np.linalg.LinAlgError:
        # more terms than the tensor can tell apart (rank above what its modes identify) make ALS's
        # normal equations singular; a tiny ridge (the Gram matrices of normalized factors are O(1))
        # keeps them solvable and changes the fit by no more than the ridge
        cp = parafac(tl.tensor(t), l2_reg=1e-6, **kw)
    return np.asarray(cp.weights, dtype=np.float64), [np.asarray(f, dtype=np.float64) for f in cp.factors]


def balance(core: np.ndarray, factors: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rescale factors and core to one entry RMS; the Tucker product is unchanged."""
    rms = [math.sqrt(float(np.mean(f * f))) for f in factors]
    rc = math.sqrt(float(np.mean(core * core)))
    if rc == 0 or min(rms) == 0:
        return core, factors
    g = math.exp((math.log(rc) + sum(math.log(r) for r in rms)) / (len(rms) + 1))
    return core * (g / rc), [f * (g / r) for f, r in zip(factors, rms)]


def balance_cp(weights: np.ndarray, factors: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rescale each CP term so that its weight and its factor columns have one entry RMS; the CP
    product is unchanged. CP-ALS returns unit columns and puts every term's scale in its weight, which
    can be 100x the others' (degenerate, cancelling terms): one quantizer then spends its levels on a
    few weights, and Adam's steps, the same size for every entry, move the big ones too little and the
    columns too much."""
    w = np.asarray(weights, dtype=np.float64)
    rms = [np.sqrt(np.mean(np.asarray(f, dtype=np.float64) ** 2, axis=0)) for f in factors]  # per term
    if np.any(w == 0) or any(np.any(r == 0) for r in rms):
        return weights, factors
    g = np.exp((np.log(np.abs(w)) + sum(np.log(r) for r in rms)) / (len(factors) + 1))
    return np.sign(w) * g, [f * (g / r) for f, r in zip(factors, rms)]


def _mode_dot_all(t: np.ndarray, mats: Sequence[np.ndarray], skip: int | None = None) -> np.ndarray:
    """``t x_0 mats[0] ... x_{d-1} mats[d-1]`` (mats[j]: (rows, t.shape[j])), leaving mode ``skip``."""
    for j, m in enumerate(mats):
        if j == skip:
            continue
        t = np.moveaxis(np.tensordot(m, t, axes=([1], [j])), 0, j)
    return t


def _unfold(t: np.ndarray, j: int) -> np.ndarray:
    return np.moveaxis(t, j, 0).reshape(t.shape[j], -1)


def scada_als(targets: Sequence[np.ndarray], ranks: Sequence[int],
              sweeps: int = 20) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """One shared core and per-target factors fitted to the reshaped dense ``targets`` by alternating
    least squares, started from the HOOI of the largest target. Returns ``(core, factors per target)``
    with one scale on the core (RMS 1) and the rest absorbed by each target's factors.

    Every ALS step solves its block exactly, so the summed squared error never increases; like all
    Tucker ALS it can converge slowly, hence a fixed number of ``sweeps``."""
    ranks = tuple(ranks)
    big = max(range(len(targets)), key=lambda i: targets[i].size)
    core, _ = tucker_hooi(targets[big], ranks)
    factors = []
    for t in targets:  # HOSVD-style start: leading left singular vectors of each unfolding
        fs = []
        for j, k in enumerate(ranks):
            u = np.linalg.svd(_unfold(t, j), full_matrices=False)[0]
            fs.append(_pad(u[:, :k], (t.shape[j], k)))
        factors.append(fs)
    joint = math.prod(ranks) <= MAX_JOINT_CORE
    for _ in range(sweeps):
        for t, fs in zip(targets, factors):
            for j in range(len(ranks)):
                y = _unfold(_mode_dot_all(core, fs, skip=j), j)  # (k_j, rest)
                gram = y @ y.T
                ridge = 1e-10 * max(np.trace(gram), 1e-30)
                fs[j] = np.linalg.solve(gram + ridge * np.eye(len(gram)), y @ _unfold(t, j).T).T
        if joint:
            p = math.prod(ranks)
            lhs = np.zeros((p, p))
            rhs = np.zeros(p)
            for t, fs in zip(targets, factors):
                k = np.ones((1, 1))
                for f in fs:
                    k = np.kron(k, f.T @ f)
                lhs += k
                rhs += _mode_dot_all(t, [f.T for f in fs]).reshape(-1)
            ridge = 1e-10 * max(np.trace(lhs), 1e-30)
            core = np.linalg.solve(lhs + ridge * np.eye(p), rhs).reshape(ranks)
    # one scale for the shared core; each layer's factors absorb the rest
    rc = math.sqrt(float(np.mean(core * core))) or 1.0
    scaled = [[f * rc ** (1.0 / len(fs)) for f in fs] for fs in factors]
    return core / rc, scaled
