"""Numba CUDA device functions shared by the kernels (twins of kernels/pac_common.cuh).

Every spatial problem is 3-D (1-D and 2-D embedded with unit leading dims);
the geometry and options of a launch are read from the int32 array ``P``
(layout :data:`pacnd.engines._gpu_common.PARAM`). Arithmetic is float64
inside the kernels whatever the storage dtype. All device functions are
``inline="always"`` (needed by ``numba.cuda.compile_ptx``).
"""

import math

from numba import cuda, float64

from .._gpu_common import PARAM

EPS = 1e-4
#: size of the static shared buffer of the block reductions (>= threads per block)
MAX_THREADS = 1024

IN, OUT, GS, KS, ST, PD, DL = (PARAM[k] for k in ("IN", "OUT", "GS", "KS", "ST", "PD", "DL"))
TRANSPOSED, NTAPS, NIN, NOUT, NG = (PARAM[k] for k in ("TRANSPOSED", "T", "NIN", "NOUT", "NG"))
PB, CIN, COUT, GROUPS, CG, CK = (PARAM[k] for k in ("B", "CIN", "COUT", "GROUPS", "CG", "CK"))
KIND, ASYM, NORMALIZE, HAS_MASK, KMODE = (PARAM[k] for k in ("KIND", "ASYM", "NORMALIZE",
                                                              "HAS_MASK", "KMODE"))
HAS_BIAS, CW, C0, NSPLIT, SPLIT_LEN = (PARAM[k] for k in ("HAS_BIAS", "CW", "C0", "NSPLIT",
                                                          "SPLIT_LEN"))
CIN_G, COUT_G = PARAM["CIN_G"], PARAM["COUT_G"]

device = cuda.jit(device=True, inline="always")


# --------------------------------------------------------------------------- index maps
@device
def in_index(P, i, y, t):
    """Input index (dim i) read by output y at tap t; -1 in the zero padding."""
    k = P[KS + i]
    s = P[ST + i]
    p = P[PD + i]
    d = P[DL + i]
    n = P[IN + i]
    if P[TRANSPOSED] == 0:
        z = y * s - p + t * d
        if z >= 0 and z < n:
            return z
        return -1
    z = y + t * d - ((k - 1) * d - p)
    if z < 0 or z % s != 0:
        return -1
    z = z // s
    if z < n:
        return z
    return -1


@device
def guide_index(P, i, y, t):
    """Guide index (dim i) of tap t of output y; -1 in the zero padding."""
    k = P[KS + i]
    d = P[DL + i]
    if P[TRANSPOSED] == 0:
        z = y * P[ST + i] - P[PD + i] + t * d
    else:
        z = y - (k // 2) * d + t * d
    if z >= 0 and z < P[GS + i]:
        return z
    return -1


@device
def in_inverse(P, i, z, t):
    """Output y (dim i) whose tap t reads input z; -1 when none."""
    k = P[KS + i]
    s = P[ST + i]
    p = P[PD + i]
    d = P[DL + i]
    n = P[OUT + i]
    if P[TRANSPOSED] == 0:
        num = z + p - t * d
        if num < 0 or num % s != 0:
            return -1
        num = num // s
        if num < n:
            return num
        return -1
    y = z * s + (k - 1) * d - p - t * d
    if y >= 0 and y < n:
        return y
    return -1


@device
def guide_inverse(P, i, z, t):
    """Output y (dim i) whose tap t reads guide z; -1 when none."""
    k = P[KS + i]
    s = P[ST + i]
    p = P[PD + i]
    d = P[DL + i]
    n = P[OUT + i]
    if P[TRANSPOSED] == 0:
        num = z + p - t * d
        if num < 0 or num % s != 0:
            return -1
        num = num // s
        if num < n:
            return num
        return -1
    y = z + (k // 2) * d - t * d
    if y >= 0 and y < n:
        return y
    return -1


@device
def unflat3(f, P, off):
    """flat index -> 3 coordinates of the box P[off:off+3]."""
    c2 = f % P[off + 2]
    f = f // P[off + 2]
    c1 = f % P[off + 1]
    c0 = f // P[off + 1]
    return c0, c1, c2


@device
def flat3(a, b, c, P, off):
    if a < 0 or b < 0 or c < 0:
        return -1
    return (a * P[off + 1] + b) * P[off + 2] + c


@device
def in_flat(P, y0, y1, y2, t0, t1, t2):
    return flat3(in_index(P, 0, y0, t0), in_index(P, 1, y1, t1), in_index(P, 2, y2, t2), P, IN)


@device
def guide_flat(P, y0, y1, y2, t0, t1, t2):
    return flat3(guide_index(P, 0, y0, t0), guide_index(P, 1, y1, t1),
                 guide_index(P, 2, y2, t2), P, GS)


@device
def in_inverse_flat(P, z0, z1, z2, t0, t1, t2):
    return flat3(in_inverse(P, 0, z0, t0), in_inverse(P, 1, z1, t1), in_inverse(P, 2, z2, t2),
                 P, OUT)


@device
def guide_inverse_flat(P, z0, z1, z2, t0, t1, t2):
    return flat3(guide_inverse(P, 0, z0, t0), guide_inverse(P, 1, z1, t1),
                 guide_inverse(P, 2, z2, t2), P, OUT)


@device
def centre_flat(P, y0, y1, y2):
    """Guide flat index of the window centre of output y (-1 in the padding)."""
    return guide_flat(P, y0, y1, y2, P[KS] // 2, P[KS + 1] // 2, P[KS + 2] // 2)


# --------------------------------------------------------------------------- kernel family
@device
def phi_of(kind, d2, alpha, lam):
    if kind == 0:
        return math.exp(-0.5 * d2)
    if kind == 1:
        return math.exp(-math.sqrt(d2 + EPS))
    return alpha + math.pow(d2 + EPS, 0.5 * lam)


@device
def dphi_of(kind, d2, phi, lam):
    if kind == 0:
        return -0.5 * phi
    if kind == 1:
        return -phi / (2.0 * math.sqrt(d2 + EPS))
    return 0.5 * lam * math.pow(d2 + EPS, 0.5 * lam - 1.0)


@device
def dphi_dlam_of(d2, lam):
    base = d2 + EPS
    return 0.5 * math.log(base) * math.pow(base, 0.5 * lam)


@device
def kraw(P, guide, mask, alpha, lam, b, kc, y0, y1, y2, t0, t1, t2, cf):
    """(phi * M, phi, d2, M) of K channel kc at output y, tap t; cf = centre guide index."""
    nf = guide_flat(P, y0, y1, y2, t0, t1, t2)
    if P[CW] != 0:
        c_lo = P[C0] + kc
        c_hi = c_lo + 1
        pc = c_lo
    else:
        c_lo = 0
        c_hi = P[CG]
        pc = 0
    ng = P[NG]
    base = b * P[CG]
    d2 = 0.0
    for c in range(c_lo, c_hi):
        off = (base + c) * ng
        fn = 0.0
        if nf >= 0:
            fn = float64(guide[off + nf])
        f0 = 0.0
        if cf >= 0:
            f0 = float64(guide[off + cf])
        diff = fn - f0
        if P[ASYM] != 0 and diff < 0.0:
            diff = 0.0
        d2 += diff * diff
    kind = P[KIND]
    a = 0.0
    lm = 0.0
    if kind == 2:
        a = float64(alpha[pc])
        lm = float64(lam[pc])
    ph = phi_of(kind, d2, a, lm)
    m = 1.0
    if P[NORMALIZE] != 0 or P[HAS_MASK] != 0:
        xf = in_flat(P, y0, y1, y2, t0, t1, t2)
        if xf < 0:
            m = 0.0
        elif P[HAS_MASK] != 0:
            m = float64(mask[b * P[NIN] + xf])
    return ph * m, ph, d2, m


@device
def k_at(P, K, guide, mask, alpha, lam, zinv, b, c, t, t0, t1, t2, yf, y0, y1, y2):
    """K of input channel c at tap t, output yf, for the backward consumers:
    mode 1 reads the buffer, mode 2 recomputes phi * M and scales by 1/Z."""
    kmode = P[KMODE]
    if kmode == 0:
        return 1.0
    ck = P[CK]
    kc = c
    if ck == 1:
        kc = 0
    nout = P[NOUT]
    if kmode == 1:
        return float64(K[((b * ck + kc) * P[NTAPS] + t) * nout + yf])
    cf = centre_flat(P, y0, y1, y2)
    kv = kraw(P, guide, mask, alpha, lam, b, kc, y0, y1, y2, t0, t1, t2, cf)[0]
    if P[NORMALIZE] != 0:
        kv *= float64(zinv[(b * ck + kc) * nout + yf])
    return kv


# --------------------------------------------------------------------------- reductions
@device
def block_sum(v, buf):
    """Deterministic tree sum over the block (blockDim.x a power of two); every thread
    gets the total."""
    tid = cuda.threadIdx.x
    buf[tid] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            buf[tid] += buf[tid + s]
        cuda.syncthreads()
        s //= 2
    r = buf[0]
    cuda.syncthreads()
    return r

