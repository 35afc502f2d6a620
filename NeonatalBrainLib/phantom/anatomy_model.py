"""Analytic neonatal brain anatomy in the brain frame.

Brain frame ("B"): millimetres, origin at the centre of the cerebral envelope,
+x patient's right, +y anterior, +z superior (RAS axes of an upright head).  The
head pose (rotation + offset) maps B into scanner RAS; see ``generator``.

Every structure is an implicit function evaluated point-wise, so any grid (and
any sub-sample of a voxel) is labelled by the same exact geometry:

* cerebrum: ellipsoid (half axes 47.5 x 57.5 x 40 mm at term), flattened below;
  cortical ribbon of constant thickness under the pial surface, which includes
  sulci (zero set of a sum of plane waves on the surface, given depth) and the
  interhemispheric fissure above the corpus callosum;
* lateral ventricles: C-shaped tubes of elliptical cross-section (frontal horn,
  body, atrium, occipital and temporal horns); third ventricle: midline slit;
* caudate (head ellipsoid + body tube along the ventricle wall), putamen,
  globus pallidus (medial to the putamen), thalamus, PLIC (slab between the
  lentiform nucleus and the thalamus), brainstem, cerebellum.

Sizes follow neonatal atlases roughly (term cerebrum ~ 9.5 x 11.5 x 8 cm; deep
grey matter at ~0.68 of adult MNI positions).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..anatomy import LABEL_VALUES
from .presets import Preset

#: Internal tissue codes beyond the anatomical labels (written as 0 to labels files).
SKULL = 101
SCALP = 102

L = LABEL_VALUES


def _sided(name: str, x: np.ndarray) -> np.ndarray:
    """Label value of ``name_left`` where x < 0 (patient's left), ``name_right`` elsewhere."""
    return np.where(x < 0, L[f"{name}_left"], L[f"{name}_right"]).astype(np.uint8)


def _smooth_curve(control: np.ndarray, step_mm: float = 0.4) -> np.ndarray:
    """Dense, smooth curve through control points (Catmull-Rom), resampled at ~step_mm."""
    c = np.asarray(control, float)
    ext = np.vstack([2 * c[0] - c[1], c, 2 * c[-1] - c[-2]])
    pts = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        n = max(4, int(np.linalg.norm(p2 - p1) / step_mm * 2))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        pts.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    pts.append(c[-1:])
    dense = np.vstack(pts)
    seg = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    t = np.linspace(0, s[-1], max(3, int(np.ceil(s[-1] / step_mm)) + 1))
    return np.stack([np.interp(t, s, dense[:, d]) for d in range(3)], axis=1)


class Tube:
    """Tube of elliptical cross-section around a dense curve.

    The cross-section at each curve sample has half-width ``half_w`` along the
    lateral direction (x axis projected perpendicular to the tangent, pointing
    away from the midline) and half-height ``half_h`` along tangent x lateral.
    """

    def __init__(self, points: np.ndarray, half_w, half_h, side: float = 1.0):
        self.points = np.asarray(points, float)
        m = len(self.points)
        self.half_w = np.broadcast_to(np.asarray(half_w, float), (m,)).copy()
        self.half_h = np.broadcast_to(np.asarray(half_h, float), (m,)).copy()
        tangent = np.gradient(self.points, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        lateral_ref = np.array([1.0 if side >= 0 else -1.0, 0.0, 0.0])
        lat = lateral_ref - (tangent @ lateral_ref)[:, None] * tangent
        norm = np.linalg.norm(lat, axis=1, keepdims=True)
        bad = norm[:, 0] < 1e-3
        if bad.any():
            alt = np.array([0.0, 0.0, 1.0])
            lat[bad] = alt - (tangent[bad] @ alt)[:, None] * tangent[bad]
            norm = np.linalg.norm(lat, axis=1, keepdims=True)
        self.tangent, self.lateral = tangent, lat / norm
        self.vertical = np.cross(self.tangent, self.lateral)
        self.step = float(np.median(np.linalg.norm(np.diff(self.points, axis=0), axis=1)))
        self.rmax = float(max(self.half_w.max(), self.half_h.max())) + self.step
        self.lo = self.points.min(0) - self.rmax
        self.hi = self.points.max(0) + self.rmax
        self.tree = cKDTree(self.points)

    def query(self, p: np.ndarray):
        """(indices of points inside the bounding box, nearest sample, normalised radius)."""
        sel = np.flatnonzero(np.all((p >= self.lo) & (p <= self.hi), axis=1))
        if sel.size == 0:
            return sel, sel, np.zeros(0)
        q = p[sel]
        d, idx = self.tree.query(q, distance_upper_bound=self.rmax)
        ok = np.isfinite(d)
        sel, idx, q = sel[ok], idx[ok], q[ok]
        o = q - self.points[idx]
        u = np.einsum("ij,ij->i", o, self.lateral[idx]) / self.half_w[idx]
        v = np.einsum("ij,ij->i", o, self.vertical[idx]) / self.half_h[idx]
        t = np.abs(np.einsum("ij,ij->i", o, self.tangent[idx]))
        t = np.maximum(t - 0.5 * self.step, 0.0) / np.minimum(self.half_w[idx], self.half_h[idx])
        return sel, idx, np.sqrt(u * u + v * v + t * t)

    def inside(self, p: np.ndarray) -> np.ndarray:
        out = np.zeros(len(p), bool)
        sel, _, r = self.query(p)
        out[sel[r <= 1.0]] = True
        return out


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    q = (p - np.asarray(centre, float)) / np.asarray(radii, float)
    return np.einsum("ij,ij->i", q, q) <= 1.0


@dataclass
class BrainModel:
    """The geometry of one synthetic neonate (all lengths in mm, brain frame)."""

    preset: Preset
    half_axes: np.ndarray            #: cerebral envelope half axes (x, y, z)
    s: np.ndarray                    #: per-axis scale relative to term
    ventricle: dict                  #: side -> Tube (lateral ventricle incl. horns)
    occipital: dict                  #: side -> Tube (occipital horn)
    caudate_body: dict               #: side -> Tube
    waves_k: np.ndarray              #: sulcal plane waves: wave vectors (n, 3) 1/mm
    waves_phase: np.ndarray
    depth_k: np.ndarray
    depth_phase: np.ndarray
    asym: float                      #: left/right size asymmetry of deep structures

    # ---------------------------------------------------------------- deep GM positions
    def deep(self, name: str, sign: float):
        """(centre, radii) in mm of an ellipsoidal deep structure on the side ``sign``."""
        s = self.s
        f = 1.0 + sign * self.asym
        table = {
            "thalamus": ((8.0, -11.0, 3.0), (7.0, 11.0, 7.5)),
            "globus_pallidus": ((13.8, -1.0, -0.5), (3.2, 6.8, 5.0)),
            "putamen": ((18.6, 1.5, 0.0), (4.2, 12.0, 8.5)),
            "caudate_head": ((9.2, 10.0, 6.0), (4.2, 7.5, 6.5)),
            "third_ventricle": ((0.0, -8.0, 2.0), (1.0, 10.0, 8.0)),
            "cerebellum": ((0.0, -42.0, -27.0), (30.0, 14.0, 11.0)),
        }
        c, r = table[name]
        c = np.array(c) * s
        c[0] *= sign if c[0] != 0 else 1.0
        r = np.array(r) * s * f
        if name == "third_ventricle":
            r[0] = 1.0 * self.preset.ventricle_scale ** 0.5
        return c, r

    def plic_segment(self, sign: float):
        s = self.s
        a = np.array([10.8 * sign, -4.5, 0.0]) * s
        b = np.array([18.8 * sign, -16.0, 0.0]) * s
        return a, b, 1.25 * s[0], (-5.0 * s[2], 8.0 * s[2])

    def brainstem_segment(self):
        s = self.s
        return np.array([0, -17.0, -10.0]) * s, np.array([0, -27.0, -42.0]) * s, 6.5 * s[0]

    # ---------------------------------------------------------------- envelope and cortex
    def envelope_depth(self, p: np.ndarray) -> np.ndarray:
        """Approximate distance (mm) below the cerebral envelope surface (negative outside)."""
        a, b, c = self.half_axes
        cz = np.where(p[:, 2] >= 0, c, 0.85 * c)
        a = a * (1.0 - 0.07 * p[:, 1] / b)
        qx, qy, qz = p[:, 0] / a, p[:, 1] / b, p[:, 2] / cz
        f = qx * qx + qy * qy + qz * qz
        g = 2.0 * np.sqrt((qx / a) ** 2 + (qy / b) ** 2 + (qz / cz) ** 2)
        return (1.0 - f) / np.maximum(g, 1e-6)

    def cerebellum_depth(self, p: np.ndarray) -> np.ndarray:
        c, r = self.deep("cerebellum", 1.0)
        q = (p - c) / r
        f = np.einsum("ij,ij->i", q, q)
        g = 2.0 * np.linalg.norm(q / r, axis=1)
        return (1.0 - f) / np.maximum(g, 1e-6)

    def sylvian(self) -> np.ndarray:
        """Sylvian fissure parameters (mm): insula |x|, y range, insular z range, cleft z at y=0, half width.

        The cleft from the insula to the lateral surface rises posteriorly (z = zs - 0.3 y).
        """
        s = self.s
        return np.array([31.0 * s[0], -16.0 * s[1], 10.0 * s[1], -9.0 * s[2], 6.0 * s[2], -1.0 * s[2],
                         0.8 if self.preset.gestational_age_weeks >= 36 else 1.6])

    def fissure_floor(self, y: np.ndarray) -> np.ndarray:
        """z (mm) of the bottom of the interhemispheric fissure (top of the corpus callosum)."""
        s = self.s
        ly = 30.0 * s[1]
        t = np.clip(1 - (y / ly) ** 2, 0, None)
        return np.where(np.abs(y) < ly, s[2] * (11.0 + 6.0 * np.sqrt(t)), -25.0 * s[2])

    # ---------------------------------------------------------------- labelling
    def tissue(self, p: np.ndarray) -> np.ndarray:
        """Tissue code per point: anatomical label value, SKULL, SCALP or 0 (air)."""
        p = np.ascontiguousarray(p, dtype=np.float64)
        cb_c, cb_r = self.deep("cerebellum", 1.0)
        bs_a, bs_b, bs_r = self.brainstem_segment()
        cortex_kernel = _cortex_kernel()
        out = cortex_kernel(
            p, np.asarray(self.half_axes, float), cb_c, cb_r, bs_a, bs_b, float(bs_r),
            float(self.preset.extracerebral_csf_mm), float(self.preset.cortex_thickness_mm),
            np.ascontiguousarray(self.waves_k), np.ascontiguousarray(self.waves_phase),
            np.ascontiguousarray(self.depth_k), np.ascontiguousarray(self.depth_phase),
            float(self.preset.sulcal_depth_mm), 30.0 * float(self.s[1]), float(self.s[2]), self.sylvian())
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        s = self.s
        deep_box = np.flatnonzero((np.abs(x) < 29 * s[0]) & (y > -50 * s[1]) & (y < 36 * s[1])
                                  & (z > -17 * s[2]) & (z < 21 * s[2]))
        q = p[deep_box]
        xq = q[:, 0]
        lab = out[deep_box]
        for sign in (-1.0, 1.0):
            side = "left" if sign < 0 else "right"
            on = (xq * sign) > 0
            c, r = self.deep("caudate_head", sign)
            lab[on & (_ellipsoid(q, c, r) | self.caudate_body[side].inside(q))] = L[f"caudate_{side}"]
            c, r = self.deep("putamen", sign)
            lab[on & _ellipsoid(q, c, r)] = L[f"putamen_{side}"]
            c, r = self.deep("globus_pallidus", sign)
            lab[on & _ellipsoid(q, c, r)] = L[f"globus_pallidus_{side}"]
            c, r = self.deep("thalamus", sign)
            lab[on & _ellipsoid(q, c, r)] = L[f"thalamus_{side}"]
            a, b, half, (z0, z1) = self.plic_segment(sign)  # noqa: F841
            d = _segment_distance(np.column_stack([q[:, 0], q[:, 1], np.zeros(len(q))]), a, b)
            lab[on & (d < half) & (q[:, 2] > z0) & (q[:, 2] < z1)] = L[f"plic_{side}"]
        c, r = self.deep("third_ventricle", 1.0)
        lab[_ellipsoid(q, c, r)] = L["third_ventricle"]
        for side in ("left", "right"):
            inside = self.ventricle[side].inside(q) | self.occipital[side].inside(q)
            lab[inside] = L[f"lateral_ventricle_{side}"]
        out[deep_box] = lab
        return out


_KERNEL = None


def _cortex_numpy(p, ax, cb_c, cb_r, bs_a, bs_b, bs_r, csf_mm, ctx_mm, wk, wph, dk, dph,
                  sdepth_mm, fis_ly, sz, syl):
    """Vectorised numpy twin of the numba kernel (used where numba cannot be imported)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    cz = np.where(z >= 0, ax[2], 0.85 * ax[2])
    axx = ax[0] * (1.0 - 0.07 * y / ax[1])
    qx, qy, qz = x / axx, y / ax[1], z / cz
    f = qx * qx + qy * qy + qz * qz
    g = 2.0 * np.sqrt((qx / axx) ** 2 + (qy / ax[1]) ** 2 + (qz / cz) ** 2)
    depth = (1.0 - f) / np.maximum(g, 1e-6)
    u = (p - cb_c) / cb_r
    fc = np.einsum("ij,ij->i", u, u)
    gc = 2.0 * np.linalg.norm(u / cb_r, axis=1)
    cbd = (1.0 - fc) / np.maximum(gc, 1e-6)
    bsd = bs_r - _segment_distance(p, bs_a, bs_b)
    dall = np.maximum(depth, np.maximum(cbd, bsd))
    n = len(p)
    out = np.zeros(n, np.uint8)
    done = np.zeros(n, bool)

    def put(mask, value):
        m = mask & ~done
        out[m] = value
        done[m] = True

    put(bsd > 0, L["brainstem"])
    put(cbd > 0, L["cerebellum"])
    put(dall <= -csf_mm - 6.0, 0)
    put(dall <= -csf_mm - 2.0, SCALP)
    put(dall <= -csf_mm, SKULL)
    put(depth <= 0, L["extracerebral_csf"])
    r = np.maximum(np.sqrt((x / ax[0]) ** 2 + (y / ax[1]) ** 2 + (z / ax[2]) ** 2), 1e-6)
    sph = p / r[:, None]
    kmag = np.sqrt(wk[0, 0] ** 2 + wk[0, 1] ** 2 + wk[0, 2] ** 2)
    acc = np.zeros(n)
    for k in range(wk.shape[0]):   # summed in the kernel's order: same rounding
        acc += np.sin(sph[:, 0] * wk[k, 0] + sph[:, 1] * wk[k, 1] + sph[:, 2] * wk[k, 2] + wph[k])
    s_mm = np.abs(acc / np.sqrt(wk.shape[0] / 2.0)) / kmag
    h = np.zeros(n)
    for k in range(dk.shape[0]):
        h += np.sin(sph[:, 0] * dk[k, 0] + sph[:, 1] * dk[k, 1] + sph[:, 2] * dk[k, 2] + dph[k])
    h /= dk.shape[0]
    sd = sdepth_mm * (0.65 + 0.35 * h)
    put((s_mm < 0.5) & (depth < sd), L["extracerebral_csf"])
    d_sulc = np.sqrt(np.maximum(s_mm - 0.5, 0.0) ** 2 + np.maximum(depth - sd, 0.0) ** 2)
    zf = np.where(np.abs(y) < fis_ly, sz * (11.0 + 6.0 * np.sqrt(np.maximum(1.0 - (y / fis_ly) ** 2, 0.0))),
                  -25.0 * sz)
    put((np.abs(x) < 0.6) & (z > zf), L["extracerebral_csf"])
    d_fis = np.sqrt(np.maximum(np.abs(x) - 0.6, 0.0) ** 2 + np.maximum(zf - z, 0.0) ** 2)
    xa = np.abs(x)
    ddy = np.maximum(np.maximum(y - syl[2], syl[1] - y), 0.0)
    dxa = np.maximum(np.abs(xa - syl[0]) - syl[6], 0.0)
    dza = np.maximum(np.maximum(z - syl[4], syl[3] - z), 0.0)
    d_ins = np.sqrt(dxa * dxa + ddy * ddy + dza * dza)
    dxb = np.maximum(syl[0] - xa, 0.0)
    dzb = np.maximum(np.abs(z - syl[5] + 0.3 * y) - syl[6], 0.0)
    d_syl = np.minimum(d_ins, np.sqrt(dxb * dxb + ddy * ddy + dzb * dzb))
    put(d_syl <= 0.0, L["extracerebral_csf"])
    d_pia = np.minimum(np.minimum(depth, np.minimum(d_sulc, d_fis)), d_syl)
    gm = np.where(x < 0, L["cortical_gm_left"], L["cortical_gm_right"])
    wm = np.where(x < 0, L["white_matter_left"], L["white_matter_right"])
    rest = ~done
    out[rest] = np.where(d_pia[rest] < ctx_mm, gm[rest], wm[rest])
    return out


def _cortex_kernel():
    """Compile (once, cached on disk) the fused per-point envelope/cortex labelling kernel.

    Falls back to the (slower, ~3x) numpy twin where numba is not available.
    """
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    try:
        import numba
    except ImportError:  # e.g. a Slicer Python without numba
        _KERNEL = _cortex_numpy
        return _KERNEL

    LGM, RGM = L["cortical_gm_left"], L["cortical_gm_right"]
    LWM, RWM = L["white_matter_left"], L["white_matter_right"]
    CSF, CB, BS = L["extracerebral_csf"], L["cerebellum"], L["brainstem"]

    @numba.njit(parallel=True, cache=True, fastmath=False)
    def kernel(p, ax, cb_c, cb_r, bs_a, bs_b, bs_r, csf_mm, ctx_mm, wk, wph, dk, dph,
               sdepth_mm, fis_ly, sz, syl):
        n = p.shape[0]
        out = np.zeros(n, np.uint8)
        nw = wk.shape[0]
        nd = dk.shape[0]
        kmag = np.sqrt(wk[0, 0] ** 2 + wk[0, 1] ** 2 + wk[0, 2] ** 2)
        norm = np.sqrt(nw / 2.0)
        ab = bs_b - bs_a
        ab2 = ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2
        for i in numba.prange(n):
            x = p[i, 0]
            y = p[i, 1]
            z = p[i, 2]
            cz = ax[2] if z >= 0 else 0.85 * ax[2]
            axx = ax[0] * (1.0 - 0.07 * y / ax[1])   # narrower frontally, wider parietally
            qx = x / axx
            qy = y / ax[1]
            qz = z / cz
            f = qx * qx + qy * qy + qz * qz
            g = 2.0 * np.sqrt((qx / axx) ** 2 + (qy / ax[1]) ** 2 + (qz / cz) ** 2)
            depth = (1.0 - f) / max(g, 1e-6)
            ux = (x - cb_c[0]) / cb_r[0]
            uy = (y - cb_c[1]) / cb_r[1]
            uz = (z - cb_c[2]) / cb_r[2]
            fc = ux * ux + uy * uy + uz * uz
            gc = 2.0 * np.sqrt((ux / cb_r[0]) ** 2 + (uy / cb_r[1]) ** 2 + (uz / cb_r[2]) ** 2)
            cbd = (1.0 - fc) / max(gc, 1e-6)
            t = ((x - bs_a[0]) * ab[0] + (y - bs_a[1]) * ab[1] + (z - bs_a[2]) * ab[2]) / ab2
            t = min(1.0, max(0.0, t))
            dx = x - bs_a[0] - t * ab[0]
            dy = y - bs_a[1] - t * ab[1]
            dz = z - bs_a[2] - t * ab[2]
            bsd = bs_r - np.sqrt(dx * dx + dy * dy + dz * dz)
            dall = max(depth, max(cbd, bsd))
            if bsd > 0:
                out[i] = BS
                continue
            if cbd > 0:
                out[i] = CB
                continue
            if dall <= -csf_mm - 6.0:
                continue
            if dall <= -csf_mm - 2.0:
                out[i] = 102
                continue
            if dall <= -csf_mm:
                out[i] = 101
                continue
            if depth <= 0:
                out[i] = CSF
                continue
            # sulci: zero set of a sum of plane waves on the envelope surface
            r = np.sqrt((x / ax[0]) ** 2 + (y / ax[1]) ** 2 + (z / ax[2]) ** 2)
            r = max(r, 1e-6)
            sx = x / r
            sy = y / r
            sz_ = z / r
            acc = 0.0
            for k in range(nw):
                acc += np.sin(sx * wk[k, 0] + sy * wk[k, 1] + sz_ * wk[k, 2] + wph[k])
            s_mm = abs(acc / norm) / kmag
            h = 0.0
            for k in range(nd):
                h += np.sin(sx * dk[k, 0] + sy * dk[k, 1] + sz_ * dk[k, 2] + dph[k])
            h /= nd
            sd = sdepth_mm * (0.65 + 0.35 * h)
            if (s_mm < 0.5) and (depth < sd):
                out[i] = CSF
                continue
            d_sulc = np.sqrt(max(s_mm - 0.5, 0.0) ** 2 + max(depth - sd, 0.0) ** 2)
            if abs(y) < fis_ly:
                zf = sz * (11.0 + 6.0 * np.sqrt(max(1.0 - (y / fis_ly) ** 2, 0.0)))
            else:
                zf = -25.0 * sz
            if abs(x) < 0.6 and z > zf:
                out[i] = CSF
                continue
            d_fis = np.sqrt(max(abs(x) - 0.6, 0.0) ** 2 + max(zf - z, 0.0) ** 2)
            # Sylvian fissure: insular cistern (sheet at |x| = xi) + horizontal cleft to the surface
            xa = abs(x)
            ddy = max(max(y - syl[2], syl[1] - y), 0.0)
            dxa = max(abs(xa - syl[0]) - syl[6], 0.0)
            dza = max(max(z - syl[4], syl[3] - z), 0.0)
            d_ins = np.sqrt(dxa * dxa + ddy * ddy + dza * dza)
            dxb = max(syl[0] - xa, 0.0)
            dzb = max(abs(z - syl[5] + 0.3 * y) - syl[6], 0.0)  # the cleft rises posteriorly
            d_cleft = np.sqrt(dxb * dxb + ddy * ddy + dzb * dzb)
            d_syl = min(d_ins, d_cleft)
            if d_syl <= 0.0:
                out[i] = CSF
                continue
            d_pia = min(min(depth, min(d_sulc, d_fis)), d_syl)
            if d_pia < ctx_mm:
                out[i] = LGM if x < 0 else RGM
            else:
                out[i] = LWM if x < 0 else RWM
        return out

    _KERNEL = kernel
    return kernel


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def build_model(preset: Preset, rng: np.random.Generator) -> BrainModel:
    """Draw one subject's anatomy (size, ventricles, sulcal pattern) from ``rng``."""
    s = preset.brain_scale * (1.0 + rng.uniform(-0.04, 0.04, 3))
    half_axes = np.array([47.5, 57.5, 40.0]) * s
    vs = preset.ventricle_scale * rng.uniform(0.85, 1.2)
    ventricle, occipital, caudate_body = {}, {}, {}
    for sign, side in ((-1.0, "left"), (1.0, "right")):
        vside = vs * (1.0 + sign * rng.uniform(-0.08, 0.08))
        # C-shaped curve: frontal horn -> body -> atrium -> temporal horn (x along the lateral wall).
        ctrl = np.array([
            [4.8, 27.0, 2.0], [5.2, 19.0, 4.5], [6.2, 7.0, 10.5], [8.0, -6.0, 13.5],
            [11.0, -18.0, 12.5], [16.5, -25.0, 7.0], [21.0, -22.0, -3.0], [23.0, -12.0, -10.0],
            [23.5, -1.0, -13.5]])
        ctrl = ctrl * s
        ctrl[:, 0] *= sign
        pts = _smooth_curve(ctrl)
        m = len(pts)
        t = np.linspace(0, 1, m)
        # half-width (lateral) and half-height profiles along the curve
        hw = np.interp(t, [0, 0.12, 0.3, 0.45, 0.62, 0.8, 1.0], [1.6, 2.0, 3.8, 4.5, 4.5, 2.5, 1.5])
        hh = np.interp(t, [0, 0.12, 0.22, 0.32, 0.45, 0.62, 0.8, 1.0], [2.6, 4.0, 3.6, 2.0, 1.6, 2.6, 1.6, 1.0])
        grow = np.sqrt(vside)
        ventricle[side] = Tube(pts, hw * s[0] * grow, hh * s[2] * vside, side=sign)
        octrl = np.array([[16.0, -24.0, 7.0], [16.5, -33.0, 6.5], [14.0, -42.0, 5.0]]) * s
        octrl[:, 0] *= sign
        opts = _smooth_curve(octrl)
        to = np.linspace(0, 1, len(opts))
        occipital[side] = Tube(opts, np.interp(to, [0, 1], [3.5, 1.2]) * s[0] * grow,
                               np.interp(to, [0, 1], [3.0, 1.0]) * s[2] * vside, side=sign)
        cctrl = np.array([[10.5, 6.0, 11.5], [12.0, -5.0, 13.5], [14.5, -15.0, 12.5], [18.0, -22.0, 8.0]]) * s
        cctrl[:, 0] *= sign
        cpts = _smooth_curve(cctrl)
        tc = np.linspace(0, 1, len(cpts))
        caudate_body[side] = Tube(cpts, np.interp(tc, [0, 1], [3.0, 1.3]) * s[0],
                                  np.interp(tc, [0, 1], [2.6, 1.2]) * s[2], side=sign)
    nw = 7
    kdir = rng.normal(size=(nw, 3))
    kdir /= np.linalg.norm(kdir, axis=1, keepdims=True)
    kmag = 2 * np.pi / preset.sulcal_wavelength_mm
    ddir = rng.normal(size=(3, 3))
    ddir /= np.linalg.norm(ddir, axis=1, keepdims=True)
    return BrainModel(
        preset=preset, half_axes=half_axes, s=s, ventricle=ventricle, occipital=occipital,
        caudate_body=caudate_body, waves_k=kdir * kmag, waves_phase=rng.uniform(0, 2 * np.pi, nw),
        depth_k=ddir * (2 * np.pi / 45.0), depth_phase=rng.uniform(0, 2 * np.pi, 3),
        asym=float(rng.uniform(-0.03, 0.03)))
