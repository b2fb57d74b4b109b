// pacnd — shared device code of the CUDA C kernels (adapting.cu, pac.cu).
//
// Self-contained: no #include of CUDA or C++ headers, so NVRTC compiles it
// with CuPy's option set and nothing else. Every kernel is a template over
// the scalar type T (float or double); the specialisations are instantiated
// through NVRTC name expressions ("pac_fwd_direct<float>", ...).
//
// All operations are 3-D: a 1-D or 2-D problem is embedded with unit leading
// dims (size 1, kernel 1, stride 1, padding 0, dilation 1). The geometry and
// the options of one launch live in a small int32 array ``P`` (the layout
// below is mirrored by ``pacnd/engines/_gpu_layout.py``; a test checks that
// the two agree).
#pragma once

#ifndef PAC_EPS
#define PAC_EPS 1e-4
#endif

// Dynamic shared memory of a kernel (the host emulator used by the tests
// redefines it).
#ifndef PAC_DYNAMIC_SMEM
#define PAC_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// ---------------------------------------------------------------- parameter layout
enum PacParam {
    P_IN = 0,          // input spatial size, 3 ints
    P_OUT = 3,         // output spatial size, 3 ints
    P_GS = 6,          // guide spatial size, 3 ints
    P_KS = 9,          // kernel size, 3 ints
    P_ST = 12,         // stride, 3 ints
    P_PD = 15,         // padding, 3 ints
    P_DL = 18,         // dilation, 3 ints
    P_TRANSPOSED = 21, // 1 for the transposed op
    P_T = 22,          // number of taps
    P_NIN = 23,        // input pixels
    P_NOUT = 24,       // output pixels
    P_NG = 25,         // guide pixels
    P_B = 26,          // batch
    P_CIN = 27,        // input channels
    P_COUT = 28,       // output channels
    P_GROUPS = 29,     // channel groups
    P_CG = 30,         // guide channels
    P_CK = 31,         // K channels of this launch (1, Cin, or a channel chunk)
    P_KIND = 32,       // 0 gaussian, 1 laplacian, 2 inverse
    P_ASYM = 33,
    P_NORMALIZE = 34,
    P_HAS_MASK = 35,
    P_KMODE = 36,      // 0 plain conv, 1 K from a buffer (B, CK, T, out), 2 K from the guide
    P_HAS_BIAS = 37,
    P_CW = 38,         // channel-wise K (one K per guide/input channel)
    P_C0 = 39,         // first channel of a channel chunk
    P_NSPLIT = 40,     // weight-gradient reduction splits
    P_SPLIT_LEN = 41,  // pixels (of B * out) per split
    P_CIN_G = 42,      // Cin / groups
    P_COUT_G = 43,     // Cout / groups
    P_COUNT = 48
};

// ---------------------------------------------------------------- scalar helpers
__device__ __forceinline__ float pac_exp(float v) { return expf(v); }
__device__ __forceinline__ double pac_exp(double v) { return exp(v); }
__device__ __forceinline__ float pac_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double pac_sqrt(double v) { return sqrt(v); }
__device__ __forceinline__ float pac_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double pac_pow(double a, double b) { return pow(a, b); }
__device__ __forceinline__ float pac_log(float v) { return logf(v); }
__device__ __forceinline__ double pac_log(double v) { return log(v); }

// phi(d2) of the kernel family (see pacnd/_kernelspec.py)
template <typename T>
__device__ __forceinline__ T pac_phi(int kind, T d2, T alpha, T lam) {
    if (kind == 0) return pac_exp(T(-0.5) * d2);
    if (kind == 1) return pac_exp(-pac_sqrt(d2 + T(PAC_EPS)));
    return alpha + pac_pow(d2 + T(PAC_EPS), T(0.5) * lam);
}

// d phi / d d2
template <typename T>
__device__ __forceinline__ T pac_dphi(int kind, T d2, T phi, T lam) {
    if (kind == 0) return T(-0.5) * phi;
    if (kind == 1) return -phi / (T(2) * pac_sqrt(d2 + T(PAC_EPS)));
    return T(0.5) * lam * pac_pow(d2 + T(PAC_EPS), T(0.5) * lam - T(1));
}

// d phi / d lam (inverse kernel)
template <typename T>
__device__ __forceinline__ T pac_dphi_dlam(T d2, T lam) {
    T base = d2 + T(PAC_EPS);
    return T(0.5) * pac_log(base) * pac_pow(base, T(0.5) * lam);
}

// ---------------------------------------------------------------- geometry
// Everything a thread needs, read once from P.
struct PacGeo {
    int v[P_COUNT];
    __device__ __forceinline__ void load(const int* __restrict__ P) {
#pragma unroll
        for (int i = 0; i < P_COUNT; ++i) v[i] = P[i];
    }
    __device__ __forceinline__ int operator[](int i) const { return v[i]; }
};

// flat -> 3 coordinates of a box n[0] x n[1] x n[2]
__device__ __forceinline__ void pac_unflat(long long f, const int* n, int* c) {
    c[2] = (int)(f % n[2]);
    f /= n[2];
    c[1] = (int)(f % n[1]);
    c[0] = (int)(f / n[1]);
}

// input index (per dim) read by output y at tap t; -1 when zero padding
__device__ __forceinline__ int pac_in_index(const PacGeo& g, int i, int y, int t) {
    const int k = g[P_KS + i], s = g[P_ST + i], p = g[P_PD + i], d = g[P_DL + i];
    const int n = g[P_IN + i];
    if (!g[P_TRANSPOSED]) {
        int z = y * s - p + t * d;
        return (z >= 0 && z < n) ? z : -1;
    }
    int z = y + t * d - ((k - 1) * d - p);
    if (z < 0 || z % s) return -1;
    z /= s;
    return z < n ? z : -1;
}

// guide index (per dim) of tap t of output y; -1 when zero padding
__device__ __forceinline__ int pac_guide_index(const PacGeo& g, int i, int y, int t) {
    const int k = g[P_KS + i], s = g[P_ST + i], p = g[P_PD + i], d = g[P_DL + i];
    const int z = g[P_TRANSPOSED] ? y - (k / 2) * d + t * d : y * s - p + t * d;
    return (z >= 0 && z < g[P_GS + i]) ? z : -1;
}

// output y (per dim) whose tap t reads input z; -1 when none
__device__ __forceinline__ int pac_in_inverse(const PacGeo& g, int i, int z, int t) {
    const int k = g[P_KS + i], s = g[P_ST + i], p = g[P_PD + i], d = g[P_DL + i];
    const int n = g[P_OUT + i];
    if (!g[P_TRANSPOSED]) {
        int num = z + p - t * d;
        if (num < 0 || num % s) return -1;
        num /= s;
        return num < n ? num : -1;
    }
    int y = z * s + (k - 1) * d - p - t * d;
    return (y >= 0 && y < n) ? y : -1;
}

// output y (per dim) whose tap t reads guide z; -1 when none
__device__ __forceinline__ int pac_guide_inverse(const PacGeo& g, int i, int z, int t) {
    const int k = g[P_KS + i], s = g[P_ST + i], p = g[P_PD + i], d = g[P_DL + i];
    const int n = g[P_OUT + i];
    if (!g[P_TRANSPOSED]) {
        int num = z + p - t * d;
        if (num < 0 || num % s) return -1;
        num /= s;
        return num < n ? num : -1;
    }
    int y = z + (k / 2) * d - t * d;
    return (y >= 0 && y < n) ? y : -1;
}

// flat index over the 3 dims, -1 if any dim is -1
__device__ __forceinline__ int pac_flat3(const int* c, const int* n) {
    if (c[0] < 0 || c[1] < 0 || c[2] < 0) return -1;
    return (c[0] * n[1] + c[1]) * n[2] + c[2];
}

__device__ __forceinline__ int pac_in_flat(const PacGeo& g, const int* y, const int* t) {
    int c[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) c[i] = pac_in_index(g, i, y[i], t[i]);
    return pac_flat3(c, &g.v[P_IN]);
}

__device__ __forceinline__ int pac_guide_flat(const PacGeo& g, const int* y, const int* t) {
    int c[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) c[i] = pac_guide_index(g, i, y[i], t[i]);
    return pac_flat3(c, &g.v[P_GS]);
}

__device__ __forceinline__ int pac_in_inverse_flat(const PacGeo& g, const int* z, const int* t) {
    int c[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) c[i] = pac_in_inverse(g, i, z[i], t[i]);
    return pac_flat3(c, &g.v[P_OUT]);
}

__device__ __forceinline__ int pac_guide_inverse_flat(const PacGeo& g, const int* z, const int* t) {
    int c[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) c[i] = pac_guide_inverse(g, i, z[i], t[i]);
    return pac_flat3(c, &g.v[P_OUT]);
}

__device__ __forceinline__ void pac_centre_tap(const PacGeo& g, int* t) {
#pragma unroll
    for (int i = 0; i < 3; ++i) t[i] = g[P_KS + i] / 2;
}

// ---------------------------------------------------------------- adapting kernel
// Squared guide distance of tap (guide flat index nf, centre flat cf; -1 = zero)
// over channels [c_lo, c_hi) of batch b.
template <typename T>
__device__ __forceinline__ T pac_d2(const PacGeo& g, const T* __restrict__ guide, int b, int c_lo,
                                    int c_hi, int nf, int cf) {
    const long long ng = g[P_NG];
    const T* fb = guide + (long long)b * g[P_CG] * ng;
    T d2 = T(0);
    for (int c = c_lo; c < c_hi; ++c) {
        const T* f = fb + c * ng;
        T fn = nf >= 0 ? f[nf] : T(0);
        T f0 = cf >= 0 ? f[cf] : T(0);
        T diff = fn - f0;
        if (g[P_ASYM] && diff < T(0)) diff = T(0);
        d2 += diff * diff;
    }
    return d2;
}

// Validity M of a tap (1 on real, unmasked input pixels) for input flat index xf.
template <typename T>
__device__ __forceinline__ T pac_valid(const PacGeo& g, const T* __restrict__ mask, int b, int xf) {
    if (xf < 0) return T(0);
    if (g[P_HAS_MASK]) return mask[(long long)b * g[P_NIN] + xf];
    return T(1);
}

// Unnormalised K~ = phi(d2) * M of K channel kc (guide channels of kc: all, or
// C0 + kc with CW) at output y (coords) and tap t (coords); the squared
// distance is returned in *d2out when asked.
template <typename T>
__device__ __forceinline__ T pac_kraw(const PacGeo& g, const T* __restrict__ guide,
                                      const T* __restrict__ mask, const T* __restrict__ alpha,
                                      const T* __restrict__ lam, int b, int kc, const int* y,
                                      const int* t, int cf, T* phi_out = 0, T* d2_out = 0,
                                      T* m_out = 0) {
    const int nf = pac_guide_flat(g, y, t);
    int c_lo = 0, c_hi = g[P_CG], pc = 0;
    if (g[P_CW]) {
        c_lo = g[P_C0] + kc;
        c_hi = c_lo + 1;
        pc = c_lo;
    }
    const T d2 = pac_d2(g, guide, b, c_lo, c_hi, nf, cf);
    const int kind = g[P_KIND];
    const T a = kind == 2 ? alpha[pc] : T(0);
    const T l = kind == 2 ? lam[pc] : T(0);
    const T phi = pac_phi(kind, d2, a, l);
    T m = T(1);
    if (g[P_NORMALIZE] || g[P_HAS_MASK]) m = pac_valid(g, mask, b, pac_in_flat(g, y, t));
    if (phi_out) *phi_out = phi;
    if (d2_out) *d2_out = d2;
    if (m_out) *m_out = m;
    return phi * m;
}

__device__ __forceinline__ void pac_tap_coords(const PacGeo& g, int t, int* tc) {
    pac_unflat(t, &g.v[P_KS], tc);
}

// ---------------------------------------------------------------- block reduction
// Deterministic tree reduction of one value per thread (blockDim.x a power of
// two, buf of blockDim.x entries); the total is returned to thread 0.
template <typename T>
__device__ __forceinline__ T pac_block_sum(T v, T* buf) {
    const int tid = threadIdx.x;
    buf[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) buf[tid] += buf[tid + s];
        __syncthreads();
    }
    T r = buf[0];
    __syncthreads();
    return r;
}

// ---------------------------------------------------------------- division by a launch constant
// n / d for 0 <= n < 2^31, 1 <= d < 2^31, as a multiply-high and a shift
// (Granlund & Montgomery 1994): the tiled gathers split a GEMM index k into
// (channel, tap) per element, and an integer division costs ~20 instructions.
struct PacDivider {
    unsigned m;
    int s;
    __device__ __forceinline__ void init(int d) {
        s = 0;
        while ((1u << s) < (unsigned)d) ++s;  // ceil(log2 d)
        m = (unsigned)(((1ull << 32) * ((1ull << s) - (unsigned)d)) / (unsigned)d + 1);
    }
    __device__ __forceinline__ int div(int n) const {
        const unsigned hi = (unsigned)(((unsigned long long)(unsigned)n * m) >> 32);
        return (int)((hi + (unsigned)n) >> s);
    }
};

// ---------------------------------------------------------------- tiled GEMM core
// C[M x N] (+)= A[M x KD] * B[KD x N] over k in [k_beg, k_end), one 64 x 64
// tile per block of 256 threads, 4 x 4 outputs per thread. Op supplies
//   T a(m, k), T b(k, n)      operand gathers (m, n relative to the tile)
//   void prepare(k0)          called by all threads before a k-chunk is loaded
//   static const bool A_KFAST, B_KFAST: which index is contiguous in memory.
#define PAC_TM 64
#define PAC_TN 64
#define PAC_TK 16
#define PAC_TILE_THREADS 256

// Operand gathers of one k-chunk, into registers: element e = tid + i * 256 of
// the 16 x 64 chunk (k-fast or m/n-fast as the Op says).
#define PAC_LOADS (PAC_TK * PAC_TM / PAC_TILE_THREADS)
static_assert(PAC_TM == PAC_TN && PAC_TK * PAC_TM % PAC_TILE_THREADS == 0, "tile shape");

// (kk, mn) of element e of a staged 16 x 64 chunk: k fastest or m/n fastest.
template <bool KFAST>
__device__ __forceinline__ void pac_stage_index(int e, int& kk, int& mn) {
    kk = KFAST ? e % PAC_TK : e / PAC_TM;
    mn = KFAST ? e / PAC_TK : e % PAC_TM;
}

template <typename T, class Op>
__device__ __forceinline__ void pac_gemm_load(const Op& op, int M, int N, int k0, int k_end,
                                              T (&ra)[PAC_LOADS], T (&rb)[PAC_LOADS]) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < PAC_LOADS; ++i) {
        int kk, mm;
        pac_stage_index<Op::A_KFAST>(tid + i * PAC_TILE_THREADS, kk, mm);
        ra[i] = (mm < M && k0 + kk < k_end) ? op.a(mm, k0 + kk) : T(0);
    }
#pragma unroll
    for (int i = 0; i < PAC_LOADS; ++i) {
        int kk, nn;
        pac_stage_index<Op::B_KFAST>(tid + i * PAC_TILE_THREADS, kk, nn);
        rb[i] = (nn < N && k0 + kk < k_end) ? op.b(k0 + kk, nn) : T(0);
    }
}

template <typename T, class Op>
__device__ __forceinline__ void pac_gemm_store(const T (&ra)[PAC_LOADS], const T (&rb)[PAC_LOADS],
                                               T* As, T* Bs) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < PAC_LOADS; ++i) {
        int kk, mm, nn;
        pac_stage_index<Op::A_KFAST>(tid + i * PAC_TILE_THREADS, kk, mm);
        As[kk * PAC_TM + mm] = ra[i];
        pac_stage_index<Op::B_KFAST>(tid + i * PAC_TILE_THREADS, kk, nn);
        Bs[kk * PAC_TN + nn] = rb[i];
    }
}

// PAC_PIPELINE 1 (default): software-pipelined — the gathers of chunk k + 1
// are issued into registers before the multiply-adds of chunk k, so their
// memory latency overlaps the arithmetic (more registers per thread). 0: each
// chunk is gathered, stored and multiplied in turn. One 16 x 64 staging buffer
// per operand and two barriers a chunk either way. k_beg < k_end must hold
// block-uniformly (op.prepare may hold barriers).
#ifndef PAC_PIPELINE
#define PAC_PIPELINE 1
#endif

template <typename T>
__device__ __forceinline__ void pac_gemm_chunk(const T* As, const T* Bs, T (&acc)[4][4]) {
    const int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
#pragma unroll
    for (int kk = 0; kk < PAC_TK; ++kk) {
        T av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = As[kk * PAC_TM + tr * 4 + i];
#pragma unroll
        for (int j = 0; j < 4; ++j) bv[j] = Bs[kk * PAC_TN + tc * 4 + j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
}

template <typename T, class Op>
__device__ __forceinline__ void pac_gemm_tile(Op& op, int M, int N, int k_beg, int k_end,
                                              T (&acc)[4][4], T* As, T* Bs) {
    T ra[PAC_LOADS], rb[PAC_LOADS];
#if PAC_PIPELINE
    op.prepare(k_beg);
    pac_gemm_load<T>(op, M, N, k_beg, k_end, ra, rb);
    for (int k0 = k_beg; k0 < k_end; k0 += PAC_TK) {
        pac_gemm_store<T, Op>(ra, rb, As, Bs);
        __syncthreads();
        if (k0 + PAC_TK < k_end) {
            op.prepare(k0 + PAC_TK);
            pac_gemm_load<T>(op, M, N, k0 + PAC_TK, k_end, ra, rb);
        }
        pac_gemm_chunk<T>(As, Bs, acc);
        __syncthreads();
    }
#else
    for (int k0 = k_beg; k0 < k_end; k0 += PAC_TK) {
        op.prepare(k0);
        pac_gemm_load<T>(op, M, N, k0, k_end, ra, rb);
        pac_gemm_store<T, Op>(ra, rb, As, Bs);
        __syncthreads();
        pac_gemm_chunk<T>(As, Bs, acc);
        __syncthreads();
    }
#endif
}

template <typename T>
__device__ __forceinline__ void pac_zero_acc(T (&acc)[4][4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
}
