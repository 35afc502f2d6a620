"""Compiled core of the width fit (:func:`.measure.fit_width`): model, residual and optimiser in numba.

Model
-----
The averaged cross-section ``P`` (an ``n x n`` grid with coordinates ``g`` mm along both
axes, step ``h``) is fitted by ``b - c M(d, u0, v0)`` with ``M`` the disk of diameter ``d``
centred at ``(u0, v0)`` -- pixel value ``clip(0.5 + (d/2 - r) / h, 0, 1)``, ``r`` the
distance of the pixel centre to the disk centre -- convolved with the point-spread
``kernel`` (odd size, centred; ``"same"`` output as ``scipy.signal.fftconvolve``, here as
a direct sum over the disk's non-zero pixels).  ``b`` and ``c`` enter linearly: for each
``M`` they are the least-squares line of ``P`` on ``M`` (``c = -cov(M, P) / var(M)``) clipped
to ``[0, 3]`` (variable projection); the residual is ``b - c M - P``.

Optimiser
---------
``scipy.optimize.least_squares(method="trf", jac="2-point", x_scale=..., bounds=...)``
with the default tolerances (``ftol = xtol = gtol = 1e-8``) and the exact trust-region
solver, transcribed step for step for this problem (scipy 1.17 ``trf_bounds``,
``select_step`` and the helpers of ``_lsq/common.py``): the Coleman-Li scaling, the
SVD-based trust-region subproblem, the reflective step selection and the radius update
are the same operations, and the Jacobian takes scipy's forward-difference steps
(:func:`.measure._forward_steps`).  The residual is rounded as the numpy code of the scipy
path rounds it (for a float32 cross-section -- the median of float32 samples -- the tissue
level ``b`` comes out in float32).  Only the model's rounding differs (a direct sum instead
of the FFT, other summation orders: ~1e-16), so the fit follows scipy's iterations and
ends at the same optimum to ~1e-9 mm, except where the iterations branch differently on a
flat cost surface (a forward-difference step of 1.5e-8 magnifies the rounding).  The
Jacobian at the final point, which scipy computes but does not use, is skipped.

The optimiser is adapted from SciPy (``scipy/optimize/_lsq/trf.py`` and ``common.py``),
BSD 3-Clause License, Copyright (c) 2001-2002 Enthought, Inc. and 2003-2025 SciPy
Developers; :func:`.measure.fit_width` keeps scipy's own ``least_squares`` as
``solver="scipy"`` and the tests compare the two.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_EPS = float(np.finfo(np.float64).eps)
_FD_REL_STEP = _EPS ** 0.5


@njit(cache=True, fastmath=True)
def render_blurred_disk(d, u0, v0, g, h, kernel, full, out):
    """``out[i, j]`` = (disk * kernel)(g[i], g[j]) ("same" convolution, see the module docstring).

    ``full``: work array of the full convolution, ``(n + k - 1)`` square for ``n = g.size``
    and a ``k x k`` kernel; each non-zero disk pixel adds the weighted kernel to it
    (fixed-length inner loops, vectorised), ``out`` is its centre.
    """
    n = g.size
    k = kernel.shape[0]
    half = (k - 1) // 2
    full[:, :] = 0.0
    for p in range(n):
        du = g[p] - u0
        if abs(du) > 0.5 * d + h:          # the whole row is 0 (a pixel needs r < d/2 + h/2)
            continue
        for q in range(n):
            w = 0.5 + (0.5 * d - math.hypot(du, g[q] - v0)) / h
            if w <= 0.0:
                continue
            if w > 1.0:
                w = 1.0
            for ki in range(k):
                row = full[p + ki]
                krow = kernel[ki]
                for kj in range(k):
                    row[q + kj] += w * krow[kj]
    for i in range(n):          # element by element: a slice assignment compiles numba's shape-error path
        for j in range(n):
            out[i, j] = full[half + i, half + j]


@njit(cache=True)
def _linear_bc(m, dev_p, mean_p, single):
    """(b, c) of the least-squares line ``target ~ b - c m`` (both clipped to [0, 3]);
    ``mean_p``: the target's mean, ``dev_p``: target - mean_p; ``single``: ``b`` rounded to
    float32 as numpy computes it for a float32 target (a float32 ``mean_p`` plus a float)."""
    n = m.size
    mean_m = 0.0
    for i in range(n):
        mean_m += m.flat[i]
    mean_m /= n
    var = 0.0
    cov = 0.0
    for i in range(n):
        dm = m.flat[i] - mean_m
        var += dm * dm
        cov += dm * dev_p.flat[i]
    c = -cov / var if var > 1e-12 else 0.0
    c = min(max(c, 0.0), 3.0)
    if single:
        b = float(np.float32(mean_p) + np.float32(c * mean_m))
    else:
        b = mean_p + c * mean_m
    b = min(max(b, 0.0), 3.0)
    return b, c


@njit(cache=True)
def _residual(x, g, h, kernel, target, mean_p, dev_p, single, work, f):
    """Fill ``f`` with the residual at ``x = (d, u0, v0)``; returns (b, c).  ``work``: the
    (n + k - 1) square convolution buffer and the (n, n) model image."""
    full, model = work
    render_blurred_disk(x[0], x[1], x[2], g, h, kernel, full, model)
    b, c = _linear_bc(model, dev_p, mean_p, single)
    n = model.shape[1]
    for i in range(model.shape[0]):
        for j in range(n):
            f[i * n + j] = b - c * model[i, j] - target[i, j]
    return b, c


@njit(cache=True)
def _forward_step(x, lo, hi):
    """scipy's 2-point step in a box for one variable (see :func:`.measure._forward_steps`)."""
    h = _FD_REL_STEP * (1.0 if x >= 0 else -1.0) * max(1.0, abs(x))
    lower_dist = x - lo
    upper_dist = hi - x
    if abs(h) <= max(lower_dist, upper_dist):
        if not (lo <= x + h <= hi):
            h = -h
    else:
        h = upper_dist if upper_dist >= lower_dist else -lower_dist
    return h


@njit(cache=True)
def _jacobian(x, f0, g, h, kernel, target, mean_p, dev_p, single, lb, ub, work, f1, jac):
    """Forward-difference Jacobian (m, 3) at ``x`` with residual ``f0``."""
    xs = x.copy()
    for k in range(x.size):
        step = _forward_step(x[k], lb[k], ub[k])
        for q in range(x.size):
            xs[q] = x[q]
        xs[k] = x[k] + step
        _residual(xs, g, h, kernel, target, mean_p, dev_p, single, work, f1)
        dx = xs[k] - x[k]
        for i in range(f0.size):
            jac[i, k] = (f1[i] - f0[i]) / dx


# ----------------------------------------------------------------------------- scipy's trf helpers
@njit(cache=True)
def _norm(v):
    return math.sqrt(np.dot(v, v))


@njit(cache=True)
def _cl_scaling(x, g, lb, ub):
    """Coleman-Li scaling vector v and its derivative dv (``_lsq.common.CL_scaling_vector``)."""
    v = np.ones_like(x)
    dv = np.zeros_like(x)
    for i in range(x.size):
        if g[i] < 0 and np.isfinite(ub[i]):
            v[i] = ub[i] - x[i]
            dv[i] = -1.0
        if g[i] > 0 and np.isfinite(lb[i]):
            v[i] = x[i] - lb[i]
            dv[i] = 1.0
    return v, dv


@njit(cache=True)
def _in_bounds(x, lb, ub):
    for i in range(x.size):
        if not (x[i] >= lb[i] and x[i] <= ub[i]):
            return False
    return True


@njit(cache=True)
def _step_size_to_bound(x, s, lb, ub):
    """(min step t >= 0 with x + t s on a bound, hits: -1 / 0 / 1 per variable)."""
    steps = np.full(x.size, np.inf)
    for i in range(x.size):
        if s[i] != 0:
            steps[i] = max((lb[i] - x[i]) / s[i], (ub[i] - x[i]) / s[i])
    min_step = steps.min()
    hits = np.zeros(x.size)
    for i in range(x.size):
        if steps[i] == min_step:
            hits[i] = np.sign(s[i])
    return min_step, hits


@njit(cache=True)
def _intersect_trust_region(x, s, delta):
    """Roots t of ||x + s t|| = delta (negative, positive)."""
    a = np.dot(s, s)
    if a == 0:
        raise ValueError("`s` is zero.")
    b = np.dot(x, s)
    c = np.dot(x, x) - delta ** 2
    if c > 0:
        raise ValueError("`x` is not within the trust region.")
    d = math.sqrt(b * b - a * c)
    q = -(b + math.copysign(d, b))
    t1 = q / a
    t2 = c / q
    if t1 < t2:
        return t1, t2
    return t2, t1


@njit(cache=True)
def _quadratic_1d(jh, g, s, diag, s0, with_s0):
    """(a, b, c) of f(t) = 0.5 (s0 + s t)^T (J^T J + diag) (s0 + s t) + g^T (s0 + s t)."""
    v = jh @ s
    a = np.dot(v, v)
    a += np.dot(s * diag, s)
    a *= 0.5
    b = np.dot(g, s)
    c = 0.0
    if with_s0:
        u = jh @ s0
        b += np.dot(u, v)
        c = 0.5 * np.dot(u, u) + np.dot(g, s0)
        b += np.dot(s0 * diag, s)
        c += 0.5 * np.dot(s0 * diag, s0)
    return a, b, c


@njit(cache=True)
def _minimize_quadratic_1d(a, b, lb, ub, c):
    """Minimum (t, value) of t (a t + b) + c over [lb, ub] (the first of equal values)."""
    t_best = lb
    y_best = lb * (a * lb + b) + c
    y = ub * (a * ub + b) + c
    if y < y_best:
        t_best, y_best = ub, y
    if a != 0:
        ext = -0.5 * b / a
        if lb < ext < ub:
            y = ext * (a * ext + b) + c
            if y < y_best:
                t_best, y_best = ext, y
    return t_best, y_best


@njit(cache=True)
def _evaluate_quadratic(jh, g, s, diag):
    js = jh @ s
    q = np.dot(js, js) + np.dot(s * diag, s)
    return 0.5 * q + np.dot(s, g)


@njit(cache=True)
def _solve_lsq_trust_region(n, m, uf, s, v, delta, initial_alpha):
    """Trust-region subproblem from the SVD (``_lsq.common.solve_lsq_trust_region``, rtol 0.01, 10 iterations)."""
    suf = s * uf
    full_rank = s[-1] > _EPS * m * s[0] if m >= n else False
    if full_rank:
        p = -(v @ (uf / s))
        if _norm(p) <= delta:
            return p, 0.0
    alpha_upper = _norm(suf) / delta
    alpha_lower = 0.0
    if full_rank:
        denom = s ** 2
        p_norm = _norm(suf / denom)
        phi = p_norm - delta
        phi_prime = -np.sum(suf ** 2 / denom ** 3) / p_norm
        alpha_lower = -phi / phi_prime
    if not full_rank and initial_alpha == 0:
        alpha = max(0.001 * alpha_upper, (alpha_lower * alpha_upper) ** 0.5)
    else:
        alpha = initial_alpha
    for _ in range(10):
        if alpha < alpha_lower or alpha > alpha_upper:
            alpha = max(0.001 * alpha_upper, (alpha_lower * alpha_upper) ** 0.5)
        denom = s ** 2 + alpha
        p_norm = _norm(suf / denom)
        phi = p_norm - delta
        phi_prime = -np.sum(suf ** 2 / denom ** 3) / p_norm
        if phi < 0:
            alpha_upper = alpha
        ratio = phi / phi_prime
        alpha_lower = max(alpha_lower, alpha - ratio)
        alpha -= (phi + delta) * ratio / delta
        if abs(phi) < 0.01 * delta:
            break
    p = -(v @ (suf / (s ** 2 + alpha)))
    p *= delta / _norm(p)
    return p, alpha


@njit(cache=True)
def _select_step(x, jh, diag_h, g_h, p, p_h, d, delta, lb, ub, theta):
    """Trust-region-reflective choice among the (truncated) step, its reflection and the gradient step."""
    if _in_bounds(x + p, lb, ub):
        return p, p_h, -_evaluate_quadratic(jh, g_h, p_h, diag_h)
    p_stride, hits = _step_size_to_bound(x, p, lb, ub)
    r_h = p_h.copy()
    for i in range(r_h.size):
        if hits[i] != 0:
            r_h[i] *= -1
    r = d * r_h
    p = p * p_stride
    p_h = p_h * p_stride
    x_on_bound = x + p
    _, to_tr = _intersect_trust_region(p_h, r_h, delta)
    to_bound, _ = _step_size_to_bound(x_on_bound, r, lb, ub)
    r_stride = min(to_bound, to_tr)
    if r_stride > 0:
        r_stride_l = (1 - theta) * p_stride / r_stride
        r_stride_u = theta * to_bound if r_stride == to_bound else to_tr
    else:
        r_stride_l = 0.0
        r_stride_u = -1.0
    if r_stride_l <= r_stride_u:
        a, b, c = _quadratic_1d(jh, g_h, r_h, diag_h, p_h, True)
        r_stride, r_value = _minimize_quadratic_1d(a, b, r_stride_l, r_stride_u, c)
        r_h = r_h * r_stride + p_h
        r = r_h * d
    else:
        r_value = np.inf
    p = p * theta
    p_h = p_h * theta
    p_value = _evaluate_quadratic(jh, g_h, p_h, diag_h)
    ag_h = -g_h
    ag = d * ag_h
    to_tr = delta / _norm(ag_h)
    to_bound, _ = _step_size_to_bound(x, ag, lb, ub)
    ag_stride = theta * to_bound if to_bound < to_tr else to_tr
    a, b, _c = _quadratic_1d(jh, g_h, ag_h, diag_h, ag_h, False)
    ag_stride, ag_value = _minimize_quadratic_1d(a, b, 0.0, ag_stride, 0.0)
    ag_h = ag_h * ag_stride
    ag = ag * ag_stride
    if p_value < r_value and p_value < ag_value:
        return p, p_h, -p_value
    if r_value < p_value and r_value < ag_value:
        return r, r_h, -r_value
    return ag, ag_h, -ag_value


@njit(cache=True)
def _strictly_feasible(x, lb, ub, rstep):
    """``_lsq.common.make_strictly_feasible`` (rstep 0: the next float inside a bound)."""
    x_new = x.copy()
    for i in range(x.size):
        if rstep == 0:
            lower = x[i] <= lb[i]
            upper = x[i] >= ub[i]
        else:
            lower_dist = x[i] - lb[i]
            upper_dist = ub[i] - x[i]
            lower = np.isfinite(lb[i]) and lower_dist <= min(upper_dist, rstep * max(1.0, abs(lb[i])))
            upper = np.isfinite(ub[i]) and upper_dist <= min(lower_dist, rstep * max(1.0, abs(ub[i])))
        if upper:
            x_new[i] = np.nextafter(ub[i], lb[i]) if rstep == 0 else ub[i] - rstep * max(1.0, abs(ub[i]))
        elif lower:
            x_new[i] = np.nextafter(lb[i], ub[i]) if rstep == 0 else lb[i] + rstep * max(1.0, abs(lb[i]))
        if x_new[i] < lb[i] or x_new[i] > ub[i]:
            x_new[i] = 0.5 * (lb[i] + ub[i])
    return x_new


@njit(cache=True, nogil=True)
def fit_blurred_disk(target, mean_p, dev_p, single, g, h, kernel, x0, lb, ub, x_scale, max_nfev):
    """Least-squares fit of ``b - c M(d, u0, v0)`` to ``target`` (see the module docstring).

    ``mean_p``: the mean of ``target``, ``dev_p``: ``target - mean_p`` (as the caller rounds
    them: a float32 cross-section has a float32 mean and deviations); ``single``: the
    cross-section is float32 (see :func:`_linear_bc`).

    Returns ``(x, b, c, status, nfev)``: the parameters, the linear coefficients at ``x``,
    scipy's termination status (0: ``max_nfev`` reached, 1-4: converged; -1: residual not
    finite at the start, where scipy raises) and the number of residual evaluations.
    """
    ftol = 1e-8
    xtol = 1e-8
    gtol = 1e-8
    n = x0.size
    npix = target.size
    m = npix
    work = (np.empty((target.shape[0] + kernel.shape[0] - 1, target.shape[1] + kernel.shape[1] - 1)),
            np.empty(target.shape))
    x = _strictly_feasible(x0, lb, ub, 1e-10)
    x_start = x.copy()
    f = np.empty(m)
    b, c = _residual(x, g, h, kernel, target, mean_p, dev_p, single, work, f)
    if not np.all(np.isfinite(f)):
        return x, b, c, -1, 1
    nfev = 1
    jac = np.empty((m, n))
    f1 = np.empty(m)
    _jacobian(x, f, g, h, kernel, target, mean_p, dev_p, single, lb, ub, work, f1, jac)
    cost = 0.5 * np.dot(f, f)
    grad = jac.T @ f
    scale = x_scale
    scale_inv = 1.0 / x_scale
    v, dv = _cl_scaling(x, grad, lb, ub)
    for i in range(n):
        if dv[i] != 0:
            v[i] *= scale_inv[i]
    delta = _norm(x_start * scale_inv / v ** 0.5)
    if delta == 0:
        delta = 1.0
    j_aug = np.zeros((m + n, n))
    jh = np.empty((m, n))
    f_aug = np.zeros(m + n)
    f_new = np.empty(m)
    alpha = 0.0
    status = -2
    b_new, c_new, cost_new = b, c, cost
    x_new = x
    while True:
        v, dv = _cl_scaling(x, grad, lb, ub)
        g_norm = np.max(np.abs(grad * v))
        if g_norm < gtol:
            status = 1
        if status != -2 or nfev == max_nfev:
            break
        for i in range(n):
            if dv[i] != 0:
                v[i] *= scale_inv[i]
        d = v ** 0.5 * scale
        diag_h = grad * dv * scale
        g_h = d * grad
        for i in range(m):         # element by element (slice assignments compile numba's shape-error path)
            f_aug[i] = f[i]
        for i in range(m):
            for k in range(n):
                j_aug[i, k] = jac[i, k] * d[k]
        j_aug[m:, :] = 0.0
        for k in range(n):
            j_aug[m + k, k] = diag_h[k] ** 0.5
        for i in range(m):
            for k in range(n):
                jh[i, k] = j_aug[i, k]
        u_svd, s_svd, vt = np.linalg.svd(j_aug, full_matrices=False)
        v_svd = np.ascontiguousarray(vt.T)
        uf = u_svd.T @ f_aug
        theta = max(0.995, 1 - g_norm)
        actual_reduction = -1.0
        while actual_reduction <= 0 and nfev < max_nfev:
            p_h, alpha = _solve_lsq_trust_region(n, m, uf, s_svd, v_svd, delta, alpha)
            p = d * p_h
            step, step_h, predicted_reduction = _select_step(x, jh, diag_h, g_h, p, p_h, d, delta, lb, ub, theta)
            x_new = _strictly_feasible(x + step, lb, ub, 0.0)
            b_new, c_new = _residual(x_new, g, h, kernel, target, mean_p, dev_p, single, work, f_new)
            nfev += 1
            step_h_norm = _norm(step_h)
            if not np.all(np.isfinite(f_new)):
                delta = 0.25 * step_h_norm
                continue
            cost_new = 0.5 * np.dot(f_new, f_new)
            actual_reduction = cost - cost_new
            # update_tr_radius
            if predicted_reduction > 0:
                ratio = actual_reduction / predicted_reduction
            elif predicted_reduction == actual_reduction == 0:
                ratio = 1.0
            else:
                ratio = 0.0
            delta_new = delta
            if ratio < 0.25:
                delta_new = 0.25 * step_h_norm
            elif ratio > 0.75 and step_h_norm > 0.95 * delta:
                delta_new = delta * 2.0
            # check_termination
            step_norm = _norm(step)
            ftol_ok = actual_reduction < ftol * cost and ratio > 0.25
            xtol_ok = step_norm < xtol * (xtol + _norm(x))
            if ftol_ok and xtol_ok:
                status = 4
            elif ftol_ok:
                status = 2
            elif xtol_ok:
                status = 3
            if status != -2:
                break
            alpha *= delta / delta_new
            delta = delta_new
        if actual_reduction > 0:
            x = x_new
            for i in range(m):
                f[i] = f_new[i]
            b, c, cost = b_new, c_new, cost_new
            if status != -2:
                break       # scipy computes the Jacobian here too, but only to stop at once
            _jacobian(x, f, g, h, kernel, target, mean_p, dev_p, single, lb, ub, work, f1, jac)
            grad = jac.T @ f
    if status == -2:
        status = 0
    return x, b, c, status, nfev
