"""Initialising Tucker cores and factors: from scratch, or from a trained dense weight.

* ``scratch`` (the paper's setting: Glorot/Kaiming): core and factors are drawn uniformly with
  zero mean and chosen variances so that the REBUILT weight has the variance the ``scheme`` asks
  for (kaiming: 2/fan_in, glorot: 2/(fan_in+fan_out)). A rebuilt element is a sum of prod(k)
  products of one core entry and d factor entries, so Var(W) = prod(k) * Var(C) * prod_j Var(M_j);
  ADA-Tucker gives core and factors the same entry variance (balanced magnitudes suit Adam's
  per-parameter step size); SCADA-Tucker draws the shared core once and scales each layer's factors
  to that layer's target.
* ``hooi``: HOSVD followed by HOOI of the reshaped dense weight with tensorly's
  ``tensorly.decomposition.tucker`` (``parafac`` for CP plans); core dims larger than a mode are
  zero-padded. The orthonormal factors are then rescaled (exactly, the product is unchanged) to the
  same entry RMS as the core. SCADA-Tucker has no closed form for a core shared across layers:
  ADT starts from the HOOI core of the largest layer and runs alternating least squares (each
  factor given the rest; then the shared core from the normal equations summed over layers).
Every hooi init reports the relative reconstruction error ||W - W_tucker|| / ||W|| per layer.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .tucker import TuckerWeight, tucker_layers

# The joint SCADA core update solves a (prod k) x (prod k) system; beyond this size only the
# factors are refitted (the core stays the largest layer's HOOI core).
MAX_JOINT_CORE = 4096


def target_variance(shape: Sequence[int], scheme: str = "kaiming") -> float:
    """Weight variance of the ``scheme`` for a Linear/Conv weight of ``shape`` (out, in, *kernel)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in = shape[1] * receptive if len(shape) > 1 else shape[0]
    fan_out = shape[0] * receptive
    if scheme == "kaiming":
        return 2.0 / fan_in
    if scheme == "glorot":
        return 2.0 / (fan_in + fan_out)
    from .errors import PlanError
    raise PlanError(f"scratch init scheme must be 'kaiming' or 'glorot', got {scheme!r}")


def _uniform_(t: Tensor, var: float, generator: torch.Generator | None) -> None:
    a = math.sqrt(3.0 * var)
    with torch.no_grad():
        t.copy_((torch.rand(t.shape, generator=generator, dtype=torch.float64) * 2 - 1) * a)


def _terms(tw: TuckerWeight) -> int:
    """Number of core terms summed into one rebuilt element: prod(k), or r for CP."""
    return tw.core.shape[0] if tw.cp else math.prod(tw.core.shape)


def scratch_init_(tws: Sequence[TuckerWeight], modules: Sequence[nn.Module], scheme: str = "kaiming",
                  generator: torch.Generator | None = None) -> None:
    """Random init of ``tws`` (one per module; SCADA ones share a core) for the ``scheme`` variance."""
    targets = [target_variance(tuple(m.weight.shape), scheme) for m in modules]
    # entry variance s^2 giving Var(W) = target when core and all d factors share it
    balanced = [(t / _terms(tw)) ** (1.0 / (tw.order + 1)) for tw, t in zip(tws, targets)]
    core_var: dict[int, float] = {}
    by_core: dict[int, list[float]] = {}
    for tw, s2 in zip(tws, balanced):
        by_core.setdefault(id(tw.core), []).append(s2)
    for tw in tws:
        key = id(tw.core)
        if key not in core_var:
            core_var[key] = math.exp(sum(math.log(v) for v in by_core[key]) / len(by_core[key]))
            _uniform_(tw.core, core_var[key], generator)
    for tw, t in zip(tws, targets):
        fvar = (t / (_terms(tw) * core_var[id(tw.core)])) ** (1.0 / tw.order)
        for m in tw.factors:
            _uniform_(m, fvar, generator)


# --------------------------------------------------------------------------------------------------
# HOOI
# --------------------------------------------------------------------------------------------------
def _rel_error(tw: TuckerWeight, w: Tensor) -> float:
    with torch.no_grad():
        rebuilt = tw.dense()
        denom = torch.linalg.vector_norm(w.double())
        num = torch.linalg.vector_norm(rebuilt.double() - w.double())
    return float(num / denom) if denom > 0 else float(num)


def _balance(core: np.ndarray, factors: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rescale factors and core to one entry RMS; the Tucker product is unchanged."""
    rms = [math.sqrt(float(np.mean(f * f))) for f in factors]
    rc = math.sqrt(float(np.mean(core * core)))
    if rc == 0 or min(rms) == 0:
        return core, factors
    g = math.exp((math.log(rc) + sum(math.log(r) for r in rms)) / (len(rms) + 1))
    return core * (g / rc), [f * (g / r) for f, r in zip(factors, rms)]


def _pad(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float64)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def _hooi(t: np.ndarray, ranks: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
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


def _set(param: nn.Parameter, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(param.dtype))


def hooi_init_(tw: TuckerWeight, weight: Tensor) -> float:
    """Fit ``tw`` to the dense ``weight`` (HOSVD + HOOI; CP: parafac); return the relative error."""
    t = weight.detach().cpu().double().numpy().reshape(tw.reshape)
    if tw.cp:
        import tensorly as tl
        from tensorly.decomposition import parafac

        r = tw.core.shape[0]
        cp = parafac(tl.tensor(t), rank=r, init="svd" if r <= min(t.shape) else "random",
                     n_iter_max=200, tol=1e-10, random_state=0, normalize_factors=True)
        lam, factors = np.asarray(cp.weights, dtype=np.float64), [np.asarray(f, dtype=np.float64) for f in cp.factors]
        _set(tw.core, lam)
        for p, f in zip(tw.factors, factors):
            _set(p, f)
    else:
        core, factors = _balance(*_hooi(t, tw.core_dims))
        _set(tw.core, core)
        for p, f in zip(tw.factors, factors):
            _set(p, f)
    return _rel_error(tw, weight)


def _mode_dot_all(t: np.ndarray, mats: Sequence[np.ndarray], skip: int | None = None) -> np.ndarray:
    """``t x_0 mats[0] ... x_{d-1} mats[d-1]`` (mats[j]: (rows, t.shape[j])), leaving mode ``skip``."""
    for j, m in enumerate(mats):
        if j == skip:
            continue
        t = np.moveaxis(np.tensordot(m, t, axes=([1], [j])), 0, j)
    return t


def _unfold(t: np.ndarray, j: int) -> np.ndarray:
    return np.moveaxis(t, j, 0).reshape(t.shape[j], -1)


def scada_hooi_init_(tws: Sequence[TuckerWeight], weights: Sequence[Tensor], sweeps: int = 20) -> list[float]:
    """Fit one shared core and per-layer factors to the dense ``weights`` by alternating least
    squares, started from the HOOI of the largest layer; return per-layer relative errors.

    Every ALS step solves its block exactly, so the summed squared error never increases; like all
    Tucker ALS it can converge slowly, hence a fixed number of ``sweeps``."""
    ranks = tws[0].core_dims
    targets = [w.detach().cpu().double().numpy().reshape(tw.reshape) for tw, w in zip(tws, weights)]
    big = max(range(len(tws)), key=lambda i: targets[i].size)
    core, _ = _hooi(targets[big], ranks)
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
    _set(tws[0].core, core / rc)
    for tw, fs in zip(tws, factors):
        scale = rc ** (1.0 / len(fs))
        for p, f in zip(tw.factors, fs):
            _set(p, f * scale)
    return [_rel_error(tw, w) for tw, w in zip(tws, weights)]


def reconstruction_errors(model: nn.Module) -> dict[str, float | None]:
    """Module path -> relative reconstruction error recorded by the last hooi init (None: scratch)."""
    return {name: tw.init_error for name, _, tw in tucker_layers(model)}
