"""Float64 gradient checking along random directions (after chainer's
``gradient_check.check_backward``).

For a function ``y = f(x_1, ..., x_n)`` and its vector-Jacobian product, draw a
random upstream gradient ``u`` (shaped like ``y``) and a random direction
``v_i`` for every input, then check, **one input at a time**, that

    <vjp_i(u), v_i>  ==  <u, (f(.., x_i + eps v_i, ..) - f(.., x_i - eps v_i, ..)) / (2 eps)>

The left side is the analytic directional derivative, the right side the
central difference (error O(eps^2) + O(roundoff / eps)). A wrong gradient
is caught unless its error happens to be orthogonal to the random ``v_i``
(probability zero), so one direction per input suffices.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GradientCheckError", "check_backward"]


class GradientCheckError(AssertionError):
    pass


def _vdot(a, b):
    return float(np.vdot(np.asarray(a, dtype=np.float64).ravel(),
                         np.asarray(b, dtype=np.float64).ravel()))


def check_backward(func, vjp, inputs, *, wrt=None, eps=1e-5, rtol=1e-6, atol=1e-12, seed=0,
                   allow_zero=(), check_single=True):
    """Check ``vjp`` against central differences of ``func``.

    Parameters
    ----------
    func : callable
        ``func(**inputs) -> ndarray`` (float64).
    vjp : callable
        ``vjp(grad_output, wrt, **inputs) -> dict`` with one gradient per name
        in ``wrt``, each shaped like that input.
    inputs : dict of str -> float64 ndarray
        The point to check at (0-d arrays for scalars).
    wrt : sequence of str, optional
        The inputs to differentiate (default: all of ``inputs``); the others
        are held fixed.
    eps : float
        Finite-difference step (along a unit-variance direction).
    rtol, atol : float
        Pass when ``|analytic - numeric| <= atol + rtol * scale`` with
        ``scale = max(|analytic|, |numeric|, sum |g_i * v_i|)``; the last term
        keeps the test meaningful when the directional derivative cancels.
    allow_zero : sequence of str
        Inputs whose directional derivative may legitimately vanish; for all
        others a zero numeric derivative is reported (it would make the test
        vacuous).
    check_single : bool
        Also call ``vjp`` with ``wrt=(name,)`` for each input alone and require
        the same gradient as from the joint call (engines compute only what
        was asked; this exercises each of those paths).

    Returns
    -------
    dict
        name -> (analytic, numeric) directional derivatives.
    """
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    for k, v in inputs.items():
        if v.dtype != np.float64:
            raise TypeError(f"gradcheck input {k!r} must be float64, got {v.dtype}")
    names = tuple(inputs) if wrt is None else tuple(wrt)
    rng = np.random.default_rng(seed)

    y = np.asarray(func(**inputs))
    if y.dtype != np.float64:
        raise GradientCheckError(f"forward returned {y.dtype}, expected float64")
    if not np.isfinite(y).all():
        raise GradientCheckError("forward returned non-finite values at the check point")
    u = rng.standard_normal(y.shape)
    dirs = {k: rng.standard_normal(inputs[k].shape) for k in names}

    grads = vjp(u, names, **inputs)
    if set(grads) != set(names):
        raise GradientCheckError(f"vjp returned gradients for {sorted(grads)}, asked for "
                                 f"{sorted(names)}")
    for k in names:
        g = np.asarray(grads[k])
        if g.shape != inputs[k].shape:
            raise GradientCheckError(f"gradient for {k!r} has shape {g.shape}, input has "
                                     f"{inputs[k].shape}")
        if g.dtype != np.float64:
            raise GradientCheckError(f"gradient for {k!r} has dtype {g.dtype}, expected float64")
        if not np.isfinite(g).all():
            raise GradientCheckError(f"gradient for {k!r} has non-finite values")

    failures, result = [], {}
    for k in names:
        g = np.asarray(grads[k])
        v = dirs[k]
        analytic = _vdot(g, v)
        plus = dict(inputs)
        minus = dict(inputs)
        plus[k] = inputs[k] + eps * v
        minus[k] = inputs[k] - eps * v
        diff = (np.asarray(func(**plus)) - np.asarray(func(**minus))) / (2.0 * eps)
        numeric = _vdot(u, diff)
        result[k] = (analytic, numeric)
        scale = max(abs(analytic), abs(numeric), float(np.abs(g * v).sum()))
        err = abs(analytic - numeric)
        if not err <= atol + rtol * scale:
            failures.append(f"  {k}: analytic <vjp, v> = {analytic!r}, numeric = {numeric!r}, "
                            f"|diff| = {err:.3e} > tol {atol + rtol * scale:.3e}")
        elif k not in allow_zero and abs(numeric) <= atol:
            failures.append(f"  {k}: the output does not depend on it along a random "
                            f"direction (numeric = {numeric!r}); the check would be vacuous")
        if check_single and len(names) > 1:
            alone = vjp(u, (k,), **inputs)
            if set(alone) != {k}:
                failures.append(f"  {k}: vjp with wrt=({k!r},) returned {sorted(alone)}")
            else:
                ga = np.asarray(alone[k])
                tol = 1e-12 * max(1.0, float(np.abs(g).max(initial=0.0)))
                if ga.shape != g.shape:
                    failures.append(f"  {k}: vjp with wrt=({k!r},) gave shape {ga.shape}, the "
                                    f"joint call {g.shape}")
                elif not np.allclose(ga, g, rtol=1e-12, atol=tol):
                    failures.append(f"  {k}: vjp with wrt=({k!r},) differs from the joint call "
                                    f"(max |diff| {np.abs(ga - g).max():.3e})")
    if failures:
        raise GradientCheckError("gradient check failed for:\n" + "\n".join(failures))
    return result
