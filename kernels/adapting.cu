// pacnd — adapting kernel K and its vector-Jacobian product (CUDA C, NVRTC).
//
// K has layout (B, CK, T, out) (CK = 1, or one channel per guide channel with
// CW; a launch may cover the channel chunk C0 .. C0 + CK of a channel-wise K).
//
//   adapting_fwd<T>       K = phi * M / Z                    thread per (b, kc, y)
//   adapting_zinv<T>      1 / Z (normaliser only)            thread per (b, kc, y)
//   adapting_bwd_d2<T>    dL/dd2 from dL/dK, in place, and per-block partial sums
//                         of dL/dalpha, dL/dlam              block row per (b, kc)
//   adapting_bwd_guide<T> dL/dguide as a gather (no atomics) thread per (b, c, z)
#include "pac_common.cuh"

// ---------------------------------------------------------------------------------
template <typename T>
__global__ void adapting_fwd(const int* __restrict__ P, const T* __restrict__ guide,
                             const T* __restrict__ mask, const T* __restrict__ alpha,
                             const T* __restrict__ lam, T* __restrict__ K) {
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nout = g[P_NOUT], ck = g[P_CK];
    const long long total = (long long)g[P_B] * ck * nout;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int yf = (int)(e % nout);
        const int bk = (int)(e / nout);
        const int kc = bk % ck, b = bk / ck;
        int y[3], tc[3], ct[3];
        pac_unflat(yf, &g.v[P_OUT], y);
        pac_centre_tap(g, ct);
        const int cf = pac_guide_flat(g, y, ct);
        T* Kp = K + (long long)bk * T_ * nout + yf;
        T Z = T(0);
        for (int t = 0; t < T_; ++t) {
            pac_tap_coords(g, t, tc);
            const T kr = pac_kraw(g, guide, mask, alpha, lam, b, kc, y, tc, cf);
            Kp[(long long)t * nout] = kr;
            Z += kr;
        }
        if (g[P_NORMALIZE]) {
            const T zs = T(1) / (Z + (Z == T(0) ? T(1) : T(0)));
            for (int t = 0; t < T_; ++t) Kp[(long long)t * nout] *= zs;
        }
    }
}

// ---------------------------------------------------------------------------------
template <typename T>
__global__ void adapting_zinv(const int* __restrict__ P, const T* __restrict__ guide,
                              const T* __restrict__ mask, const T* __restrict__ alpha,
                              const T* __restrict__ lam, T* __restrict__ zinv) {
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nout = g[P_NOUT], ck = g[P_CK];
    const long long total = (long long)g[P_B] * ck * nout;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int yf = (int)(e % nout);
        const int bk = (int)(e / nout);
        const int kc = bk % ck, b = bk / ck;
        int y[3], tc[3], ct[3];
        pac_unflat(yf, &g.v[P_OUT], y);
        pac_centre_tap(g, ct);
        const int cf = pac_guide_flat(g, y, ct);
        T Z = T(0);
        for (int t = 0; t < T_; ++t) {
            pac_tap_coords(g, t, tc);
            Z += pac_kraw(g, guide, mask, alpha, lam, b, kc, y, tc, cf);
        }
        zinv[e] = T(1) / (Z + (Z == T(0) ? T(1) : T(0)));
    }
}

// ---------------------------------------------------------------------------------
// grid: (gx, B * CK); block row (b, kc) strides over the output pixels. gK (B, CK,
// T, out) is overwritten with dL/dd2. partial[(row * gx + bx) * 2 + {0, 1}] gets
// the block's sums of dL/dalpha and dL/dlam (zeros unless kind == inverse).
template <typename T>
__global__ void adapting_bwd_d2(const int* __restrict__ P, const T* __restrict__ guide,
                                const T* __restrict__ mask, const T* __restrict__ alpha,
                                const T* __restrict__ lam, T* __restrict__ gK,
                                T* __restrict__ partial) {
    PAC_DYNAMIC_SMEM(pac_smem);
    T* buf = reinterpret_cast<T*>(pac_smem);
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nout = g[P_NOUT], ck = g[P_CK], kind = g[P_KIND];
    const int row = blockIdx.y, kc = row % ck, b = row / ck;
    const bool norm = g[P_NORMALIZE], masked = g[P_NORMALIZE] || g[P_HAS_MASK];
    const int pc = g[P_CW] ? g[P_C0] + kc : 0;
    const T lamv = kind == 2 ? lam[pc] : T(0);
    T sa = T(0), sl = T(0);
    for (int yf = blockIdx.x * blockDim.x + threadIdx.x; yf < nout; yf += gridDim.x * blockDim.x) {
        int y[3], tc[3], ct[3];
        pac_unflat(yf, &g.v[P_OUT], y);
        pac_centre_tap(g, ct);
        const int cf = pac_guide_flat(g, y, ct);
        T* gp = gK + (long long)row * T_ * nout + yf;
        T zs = T(1), S = T(0);
        if (norm) {
            T Z = T(0), U = T(0);
            for (int t = 0; t < T_; ++t) {
                pac_tap_coords(g, t, tc);
                const T kr = pac_kraw(g, guide, mask, alpha, lam, b, kc, y, tc, cf);
                Z += kr;
                U += gp[(long long)t * nout] * kr;
            }
            zs = Z + (Z == T(0) ? T(1) : T(0));
            S = U / zs;
        }
        for (int t = 0; t < T_; ++t) {
            pac_tap_coords(g, t, tc);
            T phi, d2, m;
            pac_kraw(g, guide, mask, alpha, lam, b, kc, y, tc, cf, &phi, &d2, &m);
            T gt = gp[(long long)t * nout];
            if (norm) gt = (gt - S) / zs;
            if (masked) gt *= m;
            if (kind == 2) {
                sa += gt;
                sl += gt * pac_dphi_dlam(d2, lamv);
            }
            gp[(long long)t * nout] = gt * pac_dphi(kind, d2, phi, lamv);
        }
    }
    const T ta = pac_block_sum(sa, buf);
    const T tl = pac_block_sum(sl, buf);
    if (threadIdx.x == 0) {
        const long long o = ((long long)row * gridDim.x + blockIdx.x) * 2;
        partial[o] = ta;
        partial[o + 1] = tl;
    }
}

// ---------------------------------------------------------------------------------
// dL/dguide[b, c, z] = sum_t 2 diff(y_t, t) gd2[t, y_t]   (y_t: the output whose tap t is z)
//                    - sum_t 2 diff(y_0, t) gd2[t, y_0]   (y_0: the output centred on z)
// over channels c in [C0, C0 + CK) with CW (gd2 channel c - C0), else all CG
// channels (gd2 channel 0).
template <typename T>
__global__ void adapting_bwd_guide(const int* __restrict__ P, const T* __restrict__ guide,
                                   const T* __restrict__ gd2, T* __restrict__ grad_guide) {
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nout = g[P_NOUT], ng = g[P_NG], cg = g[P_CG];
    const bool cw = g[P_CW], asym = g[P_ASYM];
    const int nch = cw ? g[P_CK] : cg, c_off = cw ? g[P_C0] : 0;
    const long long total = (long long)g[P_B] * nch * ng;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int zf = (int)(e % ng);
        const int bc = (int)(e / ng);
        const int cl = bc % nch, b = bc / nch;
        const int c = c_off + cl;
        const int kc = cw ? cl : 0;
        const int ckt = cw ? g[P_CK] : 1;
        const T* f = guide + ((long long)b * cg + c) * ng;
        const T* gp = gd2 + ((long long)b * ckt + kc) * T_ * nout;
        int z[3], tc[3], ct[3], y[3];
        pac_unflat(zf, &g.v[P_GS], z);
        pac_centre_tap(g, ct);
        const T fz = f[zf];
        T acc = T(0);
        // z as a neighbour of the outputs around it
        for (int t = 0; t < T_; ++t) {
            pac_tap_coords(g, t, tc);
            const int yf = pac_guide_inverse_flat(g, z, tc);
            if (yf < 0) continue;
            pac_unflat(yf, &g.v[P_OUT], y);
            const int cf = pac_guide_flat(g, y, ct);
            T diff = fz - (cf >= 0 ? f[cf] : T(0));
            if (asym && diff < T(0)) diff = T(0);
            acc += T(2) * diff * gp[(long long)t * nout + yf];
        }
        // z as the centre of an output
        const int y0 = pac_guide_inverse_flat(g, z, ct);
        if (y0 >= 0) {
            pac_unflat(y0, &g.v[P_OUT], y);
            for (int t = 0; t < T_; ++t) {
                pac_tap_coords(g, t, tc);
                const int nf = pac_guide_flat(g, y, tc);
                T diff = (nf >= 0 ? f[nf] : T(0)) - fz;
                if (asym && diff < T(0)) diff = T(0);
                acc -= T(2) * diff * gp[(long long)t * nout + y0];
            }
        }
        grad_guide[((long long)b * cg + c) * ng + zf] = acc;
    }
}
