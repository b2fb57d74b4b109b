// Host emulation of the small CUDA C subset pacnd's kernels use, so that the
// CUDA C *logic* (index maps, tiling, shared-memory staging, reductions) can be
// checked with g++ on a machine without a GPU. Test support only.
//
// Every thread of a block is a std::thread; __syncthreads() is a std::barrier
// (threads that return are dropped from it, as on sm_70+); blocks run one after
// the other, so a `static` local stands in for __shared__ memory. Warp
// intrinsics, atomics and textures are not emulated (the kernels use none).
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx;
inline dim3 blockIdx, blockDim, gridDim;
inline std::barrier<>* pac_emu_barrier = nullptr;
inline unsigned char* pac_emu_dyn_smem = nullptr;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define PAC_DYNAMIC_SMEM(name) unsigned char* name = pac_emu_dyn_smem

inline void __syncthreads() { pac_emu_barrier->arrive_and_wait(); }

using std::max;
using std::min;

template <typename... A, std::size_t... I>
inline void pac_emu_call(void (*kern)(A...), void** args, std::index_sequence<I...>) {
    kern(static_cast<A>(args[I])...);
}

// dims: grid x, y, z, block x, y, z
template <typename... A>
inline void pac_emu_launch(void (*kern)(A...), const unsigned* dims, std::size_t shmem,
                           void** args) {
    gridDim = dim3{dims[0], dims[1], dims[2]};
    blockDim = dim3{dims[3], dims[4], dims[5]};
    const unsigned nthreads = dims[3] * dims[4] * dims[5];
    std::vector<unsigned char> dyn(shmem + 64);
    // poison dynamic shared memory: kernels must write before they read
    std::memset(dyn.data(), 0xff, dyn.size());
    pac_emu_dyn_smem = dyn.data() + (64 - reinterpret_cast<std::size_t>(dyn.data()) % 64) % 64;
    for (unsigned bz = 0; bz < dims[2]; ++bz)
        for (unsigned by = 0; by < dims[1]; ++by)
            for (unsigned bx = 0; bx < dims[0]; ++bx) {
                blockIdx = dim3{bx, by, bz};
                std::barrier<> bar(nthreads);
                pac_emu_barrier = &bar;
                std::vector<std::thread> ts;
                ts.reserve(nthreads);
                for (unsigned tid = 0; tid < nthreads; ++tid)
                    ts.emplace_back([&, tid] {
                        threadIdx = dim3{tid % dims[3], (tid / dims[3]) % dims[4],
                                         tid / (dims[3] * dims[4])};
                        pac_emu_call(kern, args, std::index_sequence_for<A...>{});
                        bar.arrive_and_drop();
                    });
                for (auto& t : ts) t.join();
            }
}

#define PAC_EMU_EXPORT(name, T)                                                             \
    extern "C" void emu_##name##_##T(const unsigned* dims, std::size_t shmem, void** args) { \
        pac_emu_launch(name<T>, dims, shmem, args);                                         \
    }
