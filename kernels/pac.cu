// pacnd — pixel-adaptive convolution, forward and vector-Jacobian products
// (CUDA C, NVRTC). Forward and transposed geometry share every kernel: the
// index maps of pac_common.cuh switch on P_TRANSPOSED, so nothing is ever
// zero-inserted or unfolded.
//
// K source (P_KMODE): 0 none (plain conv), 1 a buffer (B, CK, T, out) with CK
// 1 or Cin, 2 computed from the guide (fused; the backward kernels use the
// normaliser 1/Z from adapting_zinv).
//
// Direct kernels (one thread per output element, grid-stride loops) cover every
// case; the tiled kernels are 64 x 64 implicit GEMMs for CK == 1 with enough
// channels per group (the common PAC layer):
//
//   pac_fwd_tiled         out[o, y]     = sum_{c,t} W[o, c, t] * (K[t, y] x[c, in(y, t)])
//                         K computed for the block's 64 pixels in shared memory
//   pac_bwd_input_tiled   gx[c, z]      = sum_{o,t} W[o, c, t] * (K[t, y] gout[o, y]), y = in^-1(z, t)
//   pac_bwd_weight_tiled  gW[o, (c, t)] = sum_{b,y} gout[o, y] * (K[t, y] x[c, in(y, t)])
//                         split over (b, y); one partial per split, summed afterwards
//   pac_bwd_kernel_tiled  gK[t, y]      = sum_c x[c, in(y, t)] * sum_o W[o, c, t] gout[o, y]
//                         block per (64 pixels, tap); deterministic in-block reduction
#include "pac_common.cuh"

// K value of a tap for the consumers (bwd input / weight): mode 1 reads the
// buffer, mode 2 recomputes phi * M and scales by the normaliser zinv.
template <typename T>
__device__ __forceinline__ T pac_k_at(const PacGeo& g, const T* __restrict__ K,
                                      const T* __restrict__ guide, const T* __restrict__ mask,
                                      const T* __restrict__ alpha, const T* __restrict__ lam,
                                      const T* __restrict__ zinv, int b, int c, int t,
                                      const int* tc, int yf, const int* y) {
    const int kmode = g[P_KMODE];
    if (kmode == 0) return T(1);
    const int ck = g[P_CK], nout = g[P_NOUT];
    const int kc = ck == 1 ? 0 : c;
    if (kmode == 1) return K[(((long long)b * ck + kc) * g[P_T] + t) * nout + yf];
    int ct[3];
    pac_centre_tap(g, ct);
    const int cf = pac_guide_flat(g, y, ct);
    T kv = pac_kraw(g, guide, mask, alpha, lam, b, kc, y, tc, cf);
    if (g[P_NORMALIZE]) kv *= zinv[((long long)b * ck + kc) * nout + yf];
    return kv;
}

// =================================================================================
// Direct kernels
// =================================================================================

// thread per (b, o, y)
template <typename T>
__global__ void pac_fwd_direct(const int* __restrict__ P, const T* __restrict__ x,
                               const T* __restrict__ w, const T* __restrict__ bias,
                               const T* __restrict__ K, const T* __restrict__ guide,
                               const T* __restrict__ mask, const T* __restrict__ alpha,
                               const T* __restrict__ lam, T* __restrict__ out) {
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G], kmode = g[P_KMODE], ck = g[P_CK];
    const bool norm = kmode == 2 && g[P_NORMALIZE];
    const long long total = (long long)g[P_B] * cout * nout;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int yf = (int)(e % nout);
        const int bo = (int)(e / nout);
        const int o = bo % cout, b = bo / cout;
        const int cbase = (o / cout_g) * cin_g;
        int y[3], tc[3], ct[3];
        pac_unflat(yf, &g.v[P_OUT], y);
        pac_centre_tap(g, ct);
        const int cf = kmode == 2 ? pac_guide_flat(g, y, ct) : -1;
        const T* wp = w + (long long)o * cin_g * T_;
        const T* xb = x + ((long long)b * cin + cbase) * nin;
        T acc = T(0);
        if (kmode == 0 || ck == 1) {
            T Z = T(0);
            for (int t = 0; t < T_; ++t) {
                pac_tap_coords(g, t, tc);
                const int xf = pac_in_flat(g, y, tc);
                T kv = T(1);
                if (kmode == 1) kv = K[((long long)b * T_ + t) * nout + yf];
                else if (kmode == 2) kv = pac_kraw(g, guide, mask, alpha, lam, b, 0, y, tc, cf);
                Z += kv;
                if (xf < 0) continue;
                T s = T(0);
                for (int c = 0; c < cin_g; ++c) s += wp[c * T_ + t] * xb[(long long)c * nin + xf];
                acc += kv * s;
            }
            if (norm) acc /= Z + (Z == T(0) ? T(1) : T(0));
        } else {
            for (int c = 0; c < cin_g; ++c) {
                const int cc = cbase + c;
                T Z = T(0), s = T(0);
                for (int t = 0; t < T_; ++t) {
                    pac_tap_coords(g, t, tc);
                    const int xf = pac_in_flat(g, y, tc);
                    T kv;
                    if (kmode == 1) kv = K[(((long long)b * ck + cc) * T_ + t) * nout + yf];
                    else kv = pac_kraw(g, guide, mask, alpha, lam, b, cc, y, tc, cf);
                    Z += kv;
                    if (xf >= 0) s += kv * wp[c * T_ + t] * xb[(long long)c * nin + xf];
                }
                acc += norm ? s / (Z + (Z == T(0) ? T(1) : T(0))) : s;
            }
        }
        if (g[P_HAS_BIAS]) acc += bias[o];
        out[e] = acc;
    }
}

// thread per (b, c, z): a gather over the outputs that read z (no atomics)
template <typename T>
__global__ void pac_bwd_input_direct(const int* __restrict__ P, const T* __restrict__ w,
                                     const T* __restrict__ gout, const T* __restrict__ K,
                                     const T* __restrict__ guide, const T* __restrict__ mask,
                                     const T* __restrict__ alpha, const T* __restrict__ lam,
                                     const T* __restrict__ zinv, T* __restrict__ gx) {
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G];
    const long long total = (long long)g[P_B] * cin * nin;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int zf = (int)(e % nin);
        const int bc = (int)(e / nin);
        const int c = bc % cin, b = bc / cin;
        const int grp = c / cin_g, cl = c - grp * cin_g, obase = grp * cout_g;
        int z[3], tc[3], y[3];
        pac_unflat(zf, &g.v[P_IN], z);
        T acc = T(0);
        for (int t = 0; t < T_; ++t) {
            pac_tap_coords(g, t, tc);
            const int yf = pac_in_inverse_flat(g, z, tc);
            if (yf < 0) continue;
            pac_unflat(yf, &g.v[P_OUT], y);
            const T kv = pac_k_at(g, K, guide, mask, alpha, lam, zinv, b, c, t, tc, yf, y);
            T s = T(0);
            for (int o = 0; o < cout_g; ++o)
                s += w[((long long)(obase + o) * cin_g + cl) * T_ + t] *
                     gout[((long long)b * cout + obase + o) * nout + yf];
            acc += kv * s;
        }
        gx[e] = acc;
    }
}

// thread per (split, o, c, t): the sum over the split's share of the (b, y)
// range, ws[split, o, c, t]; the splits are summed afterwards (deterministic,
// no atomics).
template <typename T>
__global__ void pac_bwd_weight_direct(const int* __restrict__ P, const T* __restrict__ x,
                                      const T* __restrict__ gout, const T* __restrict__ K,
                                      const T* __restrict__ guide, const T* __restrict__ mask,
                                      const T* __restrict__ alpha, const T* __restrict__ lam,
                                      const T* __restrict__ zinv, T* __restrict__ ws) {
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G];
    const long long wn = (long long)cout * cin_g * T_;
    const long long ntot = (long long)g[P_B] * nout;
    const long long total = wn * g[P_NSPLIT];
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long we = e % wn;
        const long long split = e / wn;
        const int t = (int)(we % T_);
        const int r = (int)(we / T_);
        const int cl = r % cin_g, o = r / cin_g;
        const int c = (o / cout_g) * cin_g + cl;
        const long long lo = split * g[P_SPLIT_LEN];
        const long long hi = lo + g[P_SPLIT_LEN] < ntot ? lo + g[P_SPLIT_LEN] : ntot;
        int tc[3], y[3];
        pac_tap_coords(g, t, tc);
        T s = T(0);
        for (long long q = lo; q < hi; ++q) {
            const int yf = (int)(q % nout), b = (int)(q / nout);
            pac_unflat(yf, &g.v[P_OUT], y);
            const int xf = pac_in_flat(g, y, tc);
            if (xf < 0) continue;
            const T kv = pac_k_at(g, K, guide, mask, alpha, lam, zinv, b, c, t, tc, yf, y);
            s += gout[((long long)b * cout + o) * nout + yf] * kv *
                 x[((long long)b * cin + c) * nin + xf];
        }
        ws[e] = s;
    }
}

// thread per (b, kc, t, y) of gK (B, CK, T, out); CK == 1 sums over all input
// channels, CW covers channels C0 + kc.
template <typename T>
__global__ void pac_bwd_kernel_direct(const int* __restrict__ P, const T* __restrict__ x,
                                      const T* __restrict__ w, const T* __restrict__ gout,
                                      T* __restrict__ gK) {
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G], ck = g[P_CK];
    const bool cw = g[P_CW];
    const long long total = (long long)g[P_B] * ck * T_ * nout;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int yf = (int)(e % nout);
        long long r = e / nout;
        const int t = (int)(r % T_);
        r /= T_;
        const int kc = (int)(r % ck), b = (int)(r / ck);
        int y[3], tc[3];
        pac_unflat(yf, &g.v[P_OUT], y);
        pac_tap_coords(g, t, tc);
        const int xf = pac_in_flat(g, y, tc);
        T acc = T(0);
        if (xf >= 0) {
            const int c_lo = cw ? g[P_C0] + kc : 0, c_hi = cw ? c_lo + 1 : cin;
            for (int c = c_lo; c < c_hi; ++c) {
                const int grp = c / cin_g, cl = c - grp * cin_g, obase = grp * cout_g;
                T s = T(0);
                for (int o = 0; o < cout_g; ++o)
                    s += w[((long long)(obase + o) * cin_g + cl) * T_ + t] *
                         gout[((long long)b * cout + obase + o) * nout + yf];
                acc += s * x[((long long)b * cin + c) * nin + xf];
            }
        }
        gK[e] = acc;
    }
}

// =================================================================================
// Tiled kernels (CK == 1), 256 threads, 64 x 64 tiles
// =================================================================================

template <typename T>
struct PacFwdOp {
    static const bool A_KFAST = true, B_KFAST = false;
    const T* w;      // W rows of this group, offset to the tile's first row
    const T* x;      // x[b, group's first channel]
    const T* sK;     // (T, 64) K of the tile's pixels
    const int* sI;   // (T, 64) input flat index, -1 = zero
    int kd, T_, nin;
    PacDivider byT;  // k / T_
    __device__ __forceinline__ void prepare(int) {}
    __device__ __forceinline__ T a(int m, int k) const { return w[(long long)m * kd + k]; }
    __device__ __forceinline__ T b(int k, int n) const {
        const int c = byT.div(k), t = k - c * T_;
        const int idx = sI[t * PAC_TN + n];
        return idx >= 0 ? sK[t * PAC_TN + n] * x[(long long)c * nin + idx] : T(0);
    }
};

// grid (ceil(out / 64), groups * ceil(Cout_g / 64), B); dynamic shared memory
// T * 64 * (sizeof(T) + 4)
template <typename T>
__global__ void __launch_bounds__(PAC_TILE_THREADS)
pac_fwd_tiled(const int* __restrict__ P, const T* __restrict__ x, const T* __restrict__ w,
              const T* __restrict__ bias, const T* __restrict__ K, const T* __restrict__ guide,
              const T* __restrict__ mask, const T* __restrict__ alpha,
              const T* __restrict__ lam, T* __restrict__ out) {
    PAC_DYNAMIC_SMEM(pac_smem);
    __shared__ __align__(16) T As[PAC_TK * PAC_TM];
    __shared__ __align__(16) T Bs[PAC_TK * PAC_TN];
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G], kmode = g[P_KMODE];
    T* sK = reinterpret_cast<T*>(pac_smem);
    int* sI = reinterpret_cast<int*>(sK + T_ * PAC_TN);
    const int b = blockIdx.z, n0 = blockIdx.x * PAC_TN;
    const int mtiles = (cout_g + PAC_TM - 1) / PAC_TM;
    const int grp = blockIdx.y / mtiles, m0 = (blockIdx.y % mtiles) * PAC_TM;
    const int tid = threadIdx.x;

    for (int e = tid; e < T_ * PAC_TN; e += PAC_TILE_THREADS) {
        const int t = e / PAC_TN, yf = n0 + e % PAC_TN;
        int idx = -1;
        T kv = T(0);
        if (yf < nout) {
            int y[3], tc[3], ct[3];
            pac_unflat(yf, &g.v[P_OUT], y);
            pac_tap_coords(g, t, tc);
            idx = pac_in_flat(g, y, tc);
            if (kmode == 0) kv = T(1);
            else if (kmode == 1) kv = K[((long long)b * T_ + t) * nout + yf];
            else {
                pac_centre_tap(g, ct);
                kv = pac_kraw(g, guide, mask, alpha, lam, b, 0, y, tc, pac_guide_flat(g, y, ct));
            }
        }
        sI[e] = idx;
        sK[e] = kv;
    }
    __syncthreads();
    if (kmode == 2 && g[P_NORMALIZE]) {
        for (int n = tid; n < PAC_TN; n += PAC_TILE_THREADS) {
            T Z = T(0);
            for (int t = 0; t < T_; ++t) Z += sK[t * PAC_TN + n];
            const T zs = T(1) / (Z + (Z == T(0) ? T(1) : T(0)));
            for (int t = 0; t < T_; ++t) sK[t * PAC_TN + n] *= zs;
        }
        __syncthreads();
    }

    PacFwdOp<T> op;
    op.kd = cin_g * T_;
    op.w = w + ((long long)grp * cout_g + m0) * op.kd;
    op.x = x + ((long long)b * cin + grp * cin_g) * nin;
    op.sK = sK;
    op.sI = sI;
    op.T_ = T_;
    op.byT.init(T_);
    op.nin = nin;
    T acc[4][4];
    pac_zero_acc(acc);
    const int M = min(PAC_TM, cout_g - m0), N = min(PAC_TN, nout - n0);
    pac_gemm_tile(op, M, N, 0, op.kd, acc, As, Bs);

    const int tr = tid / 16, tcl = tid % 16;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = tr * 4 + i;
        if (m >= M) continue;
        const int o = grp * cout_g + m0 + m;
        const T bv = g[P_HAS_BIAS] ? bias[o] : T(0);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = tcl * 4 + j;
            if (n < N) out[((long long)b * cout + o) * nout + n0 + n] = acc[i][j] + bv;
        }
    }
}

template <typename T>
struct PacBwdInputOp {
    static const bool A_KFAST = true, B_KFAST = false;
    const T* w;      // W[group's first o, tile's first c, 0]
    const T* gout;   // gout[b, group's first o]
    const T* sK;     // (T, 64) K at the output read by each pixel's tap
    const int* sI;   // (T, 64) output flat index, -1 = none
    int T_, cin_g, nout;
    PacDivider byT;  // k / T_
    __device__ __forceinline__ void prepare(int) {}
    __device__ __forceinline__ T a(int m, int k) const {
        const int o = byT.div(k), t = k - o * T_;
        return w[((long long)o * cin_g + m) * T_ + t];
    }
    __device__ __forceinline__ T b(int k, int n) const {
        const int o = byT.div(k), t = k - o * T_;
        const int yi = sI[t * PAC_TN + n];
        return yi >= 0 ? sK[t * PAC_TN + n] * gout[(long long)o * nout + yi] : T(0);
    }
};

// grid (ceil(in / 64), groups * ceil(Cin_g / 64), B); dynamic shared memory as fwd
template <typename T>
__global__ void __launch_bounds__(PAC_TILE_THREADS)
pac_bwd_input_tiled(const int* __restrict__ P, const T* __restrict__ w,
                    const T* __restrict__ gout, const T* __restrict__ K, T* __restrict__ gx) {
    PAC_DYNAMIC_SMEM(pac_smem);
    __shared__ __align__(16) T As[PAC_TK * PAC_TM];
    __shared__ __align__(16) T Bs[PAC_TK * PAC_TN];
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G], kmode = g[P_KMODE];
    T* sK = reinterpret_cast<T*>(pac_smem);
    int* sI = reinterpret_cast<int*>(sK + T_ * PAC_TN);
    const int b = blockIdx.z, n0 = blockIdx.x * PAC_TN;
    const int mtiles = (cin_g + PAC_TM - 1) / PAC_TM;
    const int grp = blockIdx.y / mtiles, m0 = (blockIdx.y % mtiles) * PAC_TM;
    const int tid = threadIdx.x;

    for (int e = tid; e < T_ * PAC_TN; e += PAC_TILE_THREADS) {
        const int t = e / PAC_TN, zf = n0 + e % PAC_TN;
        int yi = -1;
        T kv = T(0);
        if (zf < nin) {
            int z[3], tc[3];
            pac_unflat(zf, &g.v[P_IN], z);
            pac_tap_coords(g, t, tc);
            yi = pac_in_inverse_flat(g, z, tc);
            if (yi >= 0) kv = kmode == 1 ? K[((long long)b * T_ + t) * nout + yi] : T(1);
        }
        sI[e] = yi;
        sK[e] = kv;
    }
    __syncthreads();

    PacBwdInputOp<T> op;
    op.w = w + ((long long)grp * cout_g * cin_g + m0) * T_;
    op.gout = gout + ((long long)b * cout + grp * cout_g) * nout;
    op.sK = sK;
    op.sI = sI;
    op.T_ = T_;
    op.byT.init(T_);
    op.cin_g = cin_g;
    op.nout = nout;
    T acc[4][4];
    pac_zero_acc(acc);
    const int M = min(PAC_TM, cin_g - m0), N = min(PAC_TN, nin - n0);
    pac_gemm_tile(op, M, N, 0, cout_g * T_, acc, As, Bs);

    const int tr = tid / 16, tcl = tid % 16;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = tr * 4 + i;
        if (m >= M) continue;
        const int c = grp * cin_g + m0 + m;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = tcl * 4 + j;
            if (n < N) gx[((long long)b * cin + c) * nin + n0 + n] = acc[i][j];
        }
    }
}

template <typename T>
struct PacBwdWeightOp {
    static const bool A_KFAST = true, B_KFAST = true;
    const PacGeo* g;
    const T* gout;   // gout[0, group's first o + tile's first row]
    const T* x;      // x[0, group's first channel]
    const T* K;
    int* sQ;         // (PAC_TK, 4): b, y0, y1, y2 of the chunk's (b, y)
    int* sQf;        // (PAC_TK): flat y
    const int* sC;   // (64, 4): c, t, t0, t1, t2 of the tile's columns -> (64, 5)
    int k0, k_end, T_, nout, nin, cin, cout, kmode;
    __device__ __forceinline__ void prepare(int kb) {
        k0 = kb;
        __syncthreads();
        if (threadIdx.x < PAC_TK) {
            const int q = kb + threadIdx.x;
            int y[3] = {0, 0, 0}, bb = 0, yf = 0;
            if (q < k_end) {
                bb = q / nout;
                yf = q - bb * nout;
                pac_unflat(yf, &g->v[P_OUT], y);
            }
            sQ[threadIdx.x * 4 + 0] = bb;
            sQ[threadIdx.x * 4 + 1] = y[0];
            sQ[threadIdx.x * 4 + 2] = y[1];
            sQ[threadIdx.x * 4 + 3] = y[2];
            sQf[threadIdx.x] = yf;
        }
        __syncthreads();
    }
    __device__ __forceinline__ T a(int m, int k) const {
        const int q = k - k0;
        return gout[((long long)sQ[q * 4] * cout + m) * nout + sQf[q]];
    }
    __device__ __forceinline__ T b(int k, int n) const {
        const int q = k - k0;
        const int bb = sQ[q * 4];
        const int* y = &sQ[q * 4 + 1];
        const int* tc = &sC[n * 5 + 2];
        const int xf = pac_in_flat(*g, y, tc);
        if (xf < 0) return T(0);
        const int t = sC[n * 5 + 1];
        const T kv = kmode == 1 ? K[((long long)bb * T_ + t) * nout + sQf[q]] : T(1);
        return kv * x[((long long)bb * cin + sC[n * 5]) * nin + xf];
    }
};

// grid (ceil(Cin_g * T / 64), groups * ceil(Cout_g / 64), NSPLIT); ws (NSPLIT, Cout, Cin_g * T)
template <typename T>
__global__ void __launch_bounds__(PAC_TILE_THREADS)
pac_bwd_weight_tiled(const int* __restrict__ P, const T* __restrict__ x,
                     const T* __restrict__ gout, const T* __restrict__ K, T* __restrict__ ws) {
    __shared__ __align__(16) T As[PAC_TK * PAC_TM];
    __shared__ __align__(16) T Bs[PAC_TK * PAC_TN];
    __shared__ int sQ[PAC_TK * 4];
    __shared__ int sQf[PAC_TK];
    __shared__ int sC[PAC_TN * 5];
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G];
    const int ncol = cin_g * T_;
    const int n0 = blockIdx.x * PAC_TN;
    const int mtiles = (cout_g + PAC_TM - 1) / PAC_TM;
    const int grp = blockIdx.y / mtiles, m0 = (blockIdx.y % mtiles) * PAC_TM;
    const int tid = threadIdx.x;
    const long long ntot = (long long)g[P_B] * nout;
    const long long lo = (long long)blockIdx.z * g[P_SPLIT_LEN];
    const long long hi = lo + g[P_SPLIT_LEN] < ntot ? lo + g[P_SPLIT_LEN] : ntot;

    for (int n = tid; n < PAC_TN; n += PAC_TILE_THREADS) {
        const int col = n0 + n < ncol ? n0 + n : 0;
        const int cl = col / T_, t = col - cl * T_;
        int tc[3];
        pac_tap_coords(g, t, tc);
        sC[n * 5] = grp * cin_g + cl;
        sC[n * 5 + 1] = t;
        sC[n * 5 + 2] = tc[0];
        sC[n * 5 + 3] = tc[1];
        sC[n * 5 + 4] = tc[2];
    }
    __syncthreads();

    PacBwdWeightOp<T> op;
    op.g = &g;
    op.gout = gout + (long long)(grp * cout_g + m0) * nout;
    op.x = x;
    op.K = K;
    op.sQ = sQ;
    op.sQf = sQf;
    op.sC = sC;
    op.k_end = (int)hi;
    op.T_ = T_;
    op.nout = nout;
    op.nin = nin;
    op.cin = cin;
    op.cout = cout;
    op.kmode = g[P_KMODE];
    T acc[4][4];
    pac_zero_acc(acc);
    const int M = min(PAC_TM, cout_g - m0), N = min(PAC_TN, ncol - n0);
    if (lo < hi) pac_gemm_tile(op, M, N, (int)lo, (int)hi, acc, As, Bs);

    const int tr = tid / 16, tcl = tid % 16;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = tr * 4 + i;
        if (m >= M) continue;
        const int o = grp * cout_g + m0 + m;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = tcl * 4 + j;
            if (n < N) ws[((long long)blockIdx.z * cout + o) * ncol + n0 + n] = acc[i][j];
        }
    }
}

template <typename T>
struct PacBwdKernelOp {
    static const bool A_KFAST = false, B_KFAST = false;
    const T* w;      // W[group's first o, tile's first c, t]
    const T* gout;   // gout[b, group's first o, n0]
    int T_, cin_g, nout;
    __device__ __forceinline__ void prepare(int) {}
    __device__ __forceinline__ T a(int m, int k) const {
        return w[((long long)k * cin_g + m) * T_];
    }
    __device__ __forceinline__ T b(int k, int n) const { return gout[(long long)k * nout + n]; }
};

// grid (ceil(out / 64), T, B); gK (B, 1, T, out)
template <typename T>
__global__ void __launch_bounds__(PAC_TILE_THREADS)
pac_bwd_kernel_tiled(const int* __restrict__ P, const T* __restrict__ x,
                     const T* __restrict__ w, const T* __restrict__ gout, T* __restrict__ gK) {
    __shared__ __align__(16) T As[PAC_TK * PAC_TM];
    __shared__ __align__(16) T Bs[PAC_TK * PAC_TN];
    __shared__ __align__(16) T red[16 * PAC_TN];
    __shared__ int sI[PAC_TN];
    PacGeo g;
    g.load(P);
    const int T_ = g[P_T], nin = g[P_NIN], nout = g[P_NOUT], cin = g[P_CIN], cout = g[P_COUT];
    const int cin_g = g[P_CIN_G], cout_g = g[P_COUT_G], groups = g[P_GROUPS];
    const int b = blockIdx.z, t = blockIdx.y, n0 = blockIdx.x * PAC_TN;
    const int tid = threadIdx.x, tr = tid / 16, tcl = tid % 16;
    const int N = min(PAC_TN, nout - n0);

    for (int n = tid; n < PAC_TN; n += PAC_TILE_THREADS) {
        int idx = -1;
        if (n < N) {
            int y[3], tc[3];
            pac_unflat(n0 + n, &g.v[P_OUT], y);
            pac_tap_coords(g, t, tc);
            idx = pac_in_flat(g, y, tc);
        }
        sI[n] = idx;
    }
    __syncthreads();

    T part[4] = {T(0), T(0), T(0), T(0)};
    PacBwdKernelOp<T> op;
    op.T_ = T_;
    op.cin_g = cin_g;
    op.nout = nout;
    for (int grp = 0; grp < groups; ++grp) {
        op.gout = gout + ((long long)b * cout + grp * cout_g) * nout + n0;
        for (int m0 = 0; m0 < cin_g; m0 += PAC_TM) {
            op.w = w + ((long long)grp * cout_g * cin_g + m0) * T_ + t;
            T acc[4][4];
            pac_zero_acc(acc);
            const int M = min(PAC_TM, cin_g - m0);
            pac_gemm_tile(op, M, N, 0, cout_g, acc, As, Bs);
            const T* xb = x + ((long long)b * cin + grp * cin_g + m0) * nin;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int idx = sI[tcl * 4 + j];
                if (idx < 0) continue;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int m = tr * 4 + i;
                    if (m < M) part[j] += acc[i][j] * xb[(long long)m * nin + idx];
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) red[tr * PAC_TN + tcl * 4 + j] = part[j];
    __syncthreads();
    for (int n = tid; n < N; n += PAC_TILE_THREADS) {
        T s = T(0);
        for (int r = 0; r < 16; ++r) s += red[r * PAC_TN + n];
        gK[((long long)b * T_ + t) * nout + n0 + n] = s;
    }
}
