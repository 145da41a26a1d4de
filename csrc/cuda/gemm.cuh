// The implicit-GEMM convolution with a fused epilogue: one template for every GEMM kernel
// of convgru.h's table, its launcher, and its CPU emulation.
//
// A CTA of 256 threads owns BM pixels x BN channels of NG gates (Tile below).  Its K loop
// walks taps x channel-chunks: K-step kk covers tap kk / kchunks and channels
// [c0, c0 + BK) of that tap.  Each K-step's A tile (BM x BK: the shifted pixels' channels,
// zero outside the image and past a_channels) and B tile (BK x NG*BN of the packed weight)
// are copied to shared memory with cp.async, STAGES deep; the products accumulate on the
// tensor cores (WMMA fragments; bf16/fp16/TF32) or in per-thread FMA micro-tiles
// (exact fp32, fp64).  The accumulators then go through shared memory (Cs, BM x NG*BN),
// so that the epilogue thread of a (pixel, channel) reads all NG gates' sums.
//
// Every step except the tensor-core products and the pipeline's ordering is a
// __host__ __device__ function of (params, tile, thread id), so that emulate_gemm() can run
// the very same code on the CPU thread by thread (tests/test_cuda.py).
//
#pragma once

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include <c10/cuda/CUDAException.h>

#include "common.cuh"
#include "epilogue.cuh"

#if defined(__CUDACC__)
#include <mma.h>
#endif

namespace convgru {

constexpr size_t round128(size_t bytes) { return (bytes + 127) / 128 * 128; }

template <Math kMath, Kernel kKernel> struct Tile {
  using Cfg = MathCfg<kMath>;
  using T = typename Cfg::T;
  using A = typename Cfg::Acc;
  static constexpr bool kTensorCores = Cfg::KF > 0;
  static constexpr int kThreads = 256;
  static constexpr int BM = block_m(kMath), BK = block_k(kMath), STAGES = Cfg::STAGES;
  static constexpr int NG = gates_in_n(kKernel), BN = block_n(kKernel), BNT = NG * BN;
  static constexpr int VEC = 16 / sizeof(T);  // elements per 16-byte copy
  // Leading dimensions (elements) of the shared tiles, padded by 16 bytes against bank
  // conflicts; every row stays 16-byte aligned, as WMMA's ldm requires.
  static constexpr int LDA = BK + VEC, LDB = BNT + VEC, LDC = BNT + 16 / sizeof(A);
  static constexpr size_t kStageA = round128(size_t(BM) * LDA * sizeof(T));
  static constexpr size_t kStageB = round128(size_t(BK) * LDB * sizeof(T));
  static constexpr size_t kPipeBytes = STAGES * (kStageA + kStageB);
  static constexpr size_t kCsBytes = size_t(BM) * LDC * sizeof(A);
  static constexpr size_t kSmemBytes = kPipeBytes > kCsBytes ? kPipeBytes : kCsBytes;
  static constexpr int kAChunks = BM * BK / VEC / kThreads;  // 16-byte A copies per thread per K-step
  static constexpr int kBChunks = BK * BNT / VEC;            // 16-byte B copies per CTA per K-step

  static_assert(BM * BK % (VEC * kThreads) == 0, "A tile must split evenly into 16-byte copies");
  static_assert(BN % VEC == 0 && BK % VEC == 0, "tiles must split into 16-byte copies");
  static_assert(BM % 16 == 0 && BNT % 16 == 0, "FMA micro-tiles and WMMA tiles are 16-aligned");

  static CG_HD T* smem_a(unsigned char* smem, int stage) {
    return reinterpret_cast<T*>(smem + stage * kStageA);
  }
  static CG_HD T* smem_b(unsigned char* smem, int stage) {
    return reinterpret_cast<T*>(smem + STAGES * kStageA + stage * kStageB);
  }
  static CG_HD A* smem_c(unsigned char* smem) { return reinterpret_cast<A*>(smem); }  // aliases the pipeline
};

// Which pixels and channels a CTA owns.  CTAs that share pixels (the channel tiles of one
// pixel tile) are adjacent in launch order, so they run together and share the A tile in L2.
struct Cta {
  int64_t m0;  // first pixel
  int n0;      // first channel of each gate block
  int nk;      // K-steps: taps * k_pad / BK
};

template <class K> CG_HD Cta make_cta(const Params& p, int64_t tile) {
  const int n_tiles = p.n_pad / K::BN;
  Cta cta;
  cta.m0 = tile / n_tiles * K::BM;
  cta.n0 = static_cast<int>(tile % n_tiles) * K::BN;
  cta.nk = p.taps * (p.k_pad / K::BK);
  return cta;
}

// The pixels a thread copies A rows for: fixed across K-steps, so found once.
template <class K> struct ARows {
  int64_t m[K::kAChunks];  // pixel index, or -1 past the last pixel
  int y[K::kAChunks], x[K::kAChunks];

  CG_HD void init(const Params& p, const Cta& cta, int tid) {
    const int64_t hw = int64_t(p.H) * p.W;
    for (int j = 0; j < K::kAChunks; ++j) {
      const int row = (tid + j * K::kThreads) / (K::BK / K::VEC);
      const int64_t pix = cta.m0 + row;
      m[j] = pix < p.M ? pix : -1;
      const int64_t in_frame = pix % hw;
      y[j] = static_cast<int>(in_frame / p.W);
      x[j] = static_cast<int>(in_frame % p.W);
    }
  }
};

// Issue thread tid's copies of K-step kk's A and B tiles into one pipeline stage.
template <class K>
CG_HD void load_stage(const Params& p, const Cta& cta, const ARows<K>& rows, int tid, int kk,
                      typename K::T* As, typename K::T* Bs) {
  using T = typename K::T;
  const int kchunks = p.k_pad / K::BK;
  const int tap = kk / kchunks;
  const int c0 = (kk - tap * kchunks) * K::BK;
  const int ty = tap / p.kw, tx = tap - ty * p.kw;
  const int dy = ty * p.dil_h - p.pad_h, dx = tx * p.dil_w - p.pad_w;

  // A: row r of the tile is pixel m0 + r shifted by (dy, dx); same frame, so the shifted
  // pixel's index is m + dy*W + dx whenever it lies inside the image.
  const T* a = static_cast<const T*>(p.a);
  for (int j = 0; j < K::kAChunks; ++j) {
    const int chunk = tid + j * K::kThreads;
    const int row = chunk / (K::BK / K::VEC);
    const int col = (chunk % (K::BK / K::VEC)) * K::VEC;
    T* dst = As + row * K::LDA + col;
    const int yy = rows.y[j] + dy, xx = rows.x[j] + dx;
    const bool pixel_ok = rows.m[j] >= 0 && yy >= 0 && yy < p.H && xx >= 0 && xx < p.W;
    const int c = c0 + col;
    const int64_t off = (rows.m[j] + int64_t(dy) * p.W + dx) * p.a_stride + c;  // used only when pixel_ok
    if (p.a_vec_ok) {
      const bool ok = pixel_ok && c < p.a_channels;  // a_channels % VEC == 0: all or nothing
      copy16(dst, ok ? a + off : a, ok);
    } else {
      for (int e = 0; e < K::VEC; ++e) {
        dst[e] = pixel_ok && c + e < p.a_channels ? a[off + e] : Store<T>::from(0.0f);
      }
    }
  }

  // B: rows (tap, c0 .. c0+BK) of the packed weight, NG runs of BN channels from n0;
  // always in bounds and 16-byte aligned (ops.cpp pads k_pad and n_pad).
  const T* w = static_cast<const T*>(p.w);
  for (int chunk = tid; chunk < K::kBChunks; chunk += K::kThreads) {
    const int row = chunk / (K::BNT / K::VEC);
    const int col = (chunk % (K::BNT / K::VEC)) * K::VEC;
    const int g = col / K::BN, cc = col - g * K::BN;
    const T* src = w + ((int64_t(tap) * p.k_pad + c0 + row) * K::NG + g) * p.n_pad + cta.n0 + cc;
    copy16(Bs + row * K::LDB + col, src, true);
  }
}

// CUDA-core accumulation (exact fp32, fp64): thread (ty, tx) of a 16 x 16 grid owns rows
// ty + 16*i and columns tx + 16*j of the CTA's BM x BNT accumulator.
template <class K> struct FmaAcc {
  using T = typename K::T;
  using A = typename K::A;
  static constexpr int TM = K::BM / 16, TN = K::BNT / 16;
  A acc[TM][TN];

  CG_HD void zero() {
    for (int i = 0; i < TM; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = A(0);
  }
  CG_HD void mma(const T* As, const T* Bs, int tid) {
    const int ty = tid / 16, tx = tid % 16;
#pragma unroll 2
    for (int k = 0; k < K::BK; ++k) {
      A a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = to_acc(As[(ty + 16 * i) * K::LDA + k]);
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = to_acc(Bs[k * K::LDB + tx + 16 * j]);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma_(a[i], b[j], acc[i][j]);
    }
  }
  CG_HD void store(A* Cs, int tid) const {
    const int ty = tid / 16, tx = tid % 16;
    for (int i = 0; i < TM; ++i)
      for (int j = 0; j < TN; ++j) Cs[(ty + 16 * i) * K::LDC + tx + 16 * j] = acc[i][j];
  }
};

#if defined(__CUDACC__)
// Tensor-core accumulation: 8 warps as 4 (M) x 2 (N); warp (wm, wn) owns rows
// [WM*wm, WM*wm + WM) and columns [WN*wn, WN*wn + WN) as FM x FN fragments of 16 x 16.
// TF32 (float tiles) rounds every fragment element with __float_to_tf32 after loading.
template <class K> struct MmaAcc {
  using T = typename K::T;
  static constexpr int KF = K::Cfg::KF;
  static constexpr int WM = K::BM / 4, WN = K::BNT / 2, FM = WM / 16, FN = WN / 16;
  static_assert(WM % 16 == 0 && WN % 16 == 0 && K::BK % KF == 0, "warp tiles must be whole fragments");
  static_assert(K::kThreads == 256, "MmaAcc assumes 8 warps");
  using In = typename std::conditional<std::is_same<T, float>::value, nvcuda::wmma::precision::tf32, T>::type;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, KF, In, nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, KF, In, nvcuda::wmma::row_major>;
  using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, KF, float>;
  FragC acc[FM][FN];

  template <class Frag> __device__ static void round_tf32(Frag& f) {
    if constexpr (KF == 8) {
#pragma unroll
      for (int t = 0; t < f.num_elements; ++t) f.x[t] = nvcuda::wmma::__float_to_tf32(f.x[t]);
    }
  }
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.0f);
  }
  __device__ void mma(const T* As, const T* Bs, int tid) {
    const int warp = tid / 32, wm = warp / 2, wn = warp % 2;
#pragma unroll
    for (int ks = 0; ks < K::BK / KF; ++ks) {
      FragA a[FM];
      FragB b[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        nvcuda::wmma::load_matrix_sync(a[i], As + (wm * WM + 16 * i) * K::LDA + ks * KF, K::LDA);
        round_tf32(a[i]);
      }
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        nvcuda::wmma::load_matrix_sync(b[j], Bs + ks * KF * K::LDB + wn * WN + 16 * j, K::LDB);
        round_tf32(b[j]);
      }
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) nvcuda::wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
  }
  __device__ void store(float* Cs, int tid) const {
    const int warp = tid / 32, wm = warp / 2, wn = warp % 2;
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
        nvcuda::wmma::store_matrix_sync(Cs + (wm * WM + 16 * i) * K::LDC + wn * WN + 16 * j, acc[i][j], K::LDC,
                                        nvcuda::wmma::mem_row_major);
  }
};
#endif

// The epilogue of thread tid: every (pixel, channel) of the tile it owns, all NG gates'
// sums from Cs, the gate math of Epilogue<kKernel>.  Consecutive threads take consecutive
// channels of one pixel, so global accesses are coalesced along the channels.
template <class K, Kernel kKernel> CG_HD void epilogue_tile(const Params& p, const Cta& cta, int tid,
                                                            const typename K::A* Cs) {
  using A = typename K::A;
  for (int i = tid; i < K::BM * K::BN; i += K::kThreads) {
    const int row = i / K::BN, col = i % K::BN;
    const int64_t m = cta.m0 + row;
    const int c = cta.n0 + col;
    if (m < p.M && c < p.C) {
      A acc[K::NG];
#pragma unroll
      for (int g = 0; g < K::NG; ++g) acc[g] = Cs[row * K::LDC + g * K::BN + col];
      Epilogue<kKernel>::template apply<typename K::T, A>(p, m, c, acc);
    }
  }
}

#if defined(__CUDACC__)
template <Math kMath, Kernel kKernel> __global__ void __launch_bounds__(256, 2) gemm_kernel(const Params p) {
  using K = Tile<kMath, kKernel>;
  using Acc = typename std::conditional<K::kTensorCores, MmaAcc<K>, FmaAcc<K>>::type;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x;
  const Cta cta = make_cta<K>(p, blockIdx.x);
  ARows<K> rows;
  rows.init(p, cta, tid);
  Acc acc;
  acc.zero();

  // Prologue: K-steps 0 .. STAGES-2 in flight.  One commit per step (possibly empty), so
  // that "at most STAGES-2 groups pending" means "K-step kk has landed".
  for (int s = 0; s < K::STAGES - 1; ++s) {
    if (s < cta.nk) load_stage<K>(p, cta, rows, tid, s, K::smem_a(smem, s), K::smem_b(smem, s));
    cp_async_commit();
  }
  for (int kk = 0; kk < cta.nk; ++kk) {
    cp_async_wait<K::STAGES - 2>();
    __syncthreads();  // K-step kk visible to all; everyone is done with K-step kk-1's stage
    const int next = kk + K::STAGES - 1;
    if (next < cta.nk) {
      const int s = next % K::STAGES;  // the stage K-step kk-1 used
      load_stage<K>(p, cta, rows, tid, next, K::smem_a(smem, s), K::smem_b(smem, s));
    }
    cp_async_commit();
    const int s = kk % K::STAGES;
    acc.mma(K::smem_a(smem, s), K::smem_b(smem, s), tid);
  }
  cp_async_wait<0>();
  __syncthreads();  // all products done before Cs overwrites the pipeline buffers
  acc.store(K::smem_c(smem), tid);
  __syncthreads();
  epilogue_tile<K, kKernel>(p, cta, tid, K::smem_c(smem));
}

template <Math kMath, Kernel kKernel> void launch_gemm(const Params& p, cudaStream_t stream) {
  using K = Tile<kMath, kKernel>;
  TORCH_CHECK(p.k_pad % K::BK == 0 && p.n_pad % K::BN == 0 && p.n_pad >= p.C && p.k_pad >= p.a_channels,
              "convgru_ext internal error: packed weight padding does not match the kernel's tile");
  const int64_t tiles = ceil_div<int64_t>(p.M, K::BM) * (p.n_pad / K::BN);
  if (tiles == 0) return;
  TORCH_CHECK(tiles <= INT32_MAX, "convgru_ext: too many pixels for one launch (", p.M, ")");
  auto* kernel = &gemm_kernel<kMath, kKernel>;
  if (K::kSmemBytes > 48 * 1024) {
    // Above 48 KB a kernel must opt in to dynamic shared memory, once per device.
    static std::atomic<uint64_t> done{0};
    int device = 0;
    C10_CUDA_CHECK(cudaGetDevice(&device));
    const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
    if (!(done.load() & bit)) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(K::kSmemBytes)));
      done.fetch_or(bit);
    }
  }
  kernel<<<static_cast<unsigned>(tiles), K::kThreads, K::kSmemBytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, bool kAfter> __global__ void __launch_bounds__(256) backward_init_kernel(const Params p) {
  using A = decltype(to_acc(T()));
  const int64_t n = p.M * p.C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    backward_init<T, A, kAfter>(p, i);
  }
}

template <typename T> void launch_backward_init(const Params& p, cudaStream_t stream) {
  const int64_t n = p.M * p.C;
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div<int64_t>(n, 256), 1 << 20));
  if (p.reset_after) {
    backward_init_kernel<T, true><<<blocks, 256, 0, stream>>>(p);
  } else {
    backward_init_kernel<T, false><<<blocks, 256, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The per-dtype files instantiate these two.
template <Math kMath> void launch_forward_kernel(Kernel kernel, const Params& p, cudaStream_t stream) {
  switch (kernel) {
    case Kernel::FwdRZ: return launch_gemm<kMath, Kernel::FwdRZ>(p, stream);
    case Kernel::FwdN: return launch_gemm<kMath, Kernel::FwdN>(p, stream);
    case Kernel::FwdAfter: return launch_gemm<kMath, Kernel::FwdAfter>(p, stream);
    default: TORCH_CHECK(false, "convgru_ext internal error: kernel ", int(kernel), " is not a forward kernel");
  }
}

template <Math kMath> void launch_backward_kernel(Kernel kernel, const Params& p, cudaStream_t stream) {
  switch (kernel) {
    case Kernel::BwdInit: return launch_backward_init<typename MathCfg<kMath>::T>(p, stream);
    case Kernel::BwdN: return launch_gemm<kMath, Kernel::BwdN>(p, stream);
    case Kernel::BwdRZ: return launch_gemm<kMath, Kernel::BwdRZ>(p, stream);
    case Kernel::BwdAfter: return launch_gemm<kMath, Kernel::BwdAfter>(p, stream);
    default: TORCH_CHECK(false, "convgru_ext internal error: kernel ", int(kernel), " is not a backward kernel");
  }
}
#endif

// ---- the CPU emulator (tests only) ----

// Tensor-core products of one K-step on the CPU: the same shared tiles, fp32 products of
// the (TF32-rounded) elements, accumulated into acc (BM x BNT, row-major).
template <class K, Math kMath> void emulate_mma(const typename K::T* As, const typename K::T* Bs, float* acc) {
  auto in = [](typename K::T v) {
    const float f = to_acc(v);
    return kMath == Math::TF32 ? round_tf32_host(f) : f;
  };
  for (int m = 0; m < K::BM; ++m) {
    for (int n = 0; n < K::BNT; ++n) {
      float s = 0.0f;
      for (int k = 0; k < K::BK; ++k) s += in(As[m * K::LDA + k]) * in(Bs[k * K::LDB + n]);
      acc[m * K::BNT + n] += s;
    }
  }
}

// One launch of gemm_kernel<kMath, kKernel>, run on the CPU: every CTA, and within a CTA
// every phase between two barriers for thread 0, 1, ..., 255 in turn.
template <Math kMath, Kernel kKernel> void emulate_gemm(const Params& p) {
  using K = Tile<kMath, kKernel>;
  const int64_t tiles = ceil_div<int64_t>(p.M, K::BM) * (p.n_pad / K::BN);
  std::vector<double> buffer(K::kSmemBytes / sizeof(double) + 1);
  unsigned char* smem = reinterpret_cast<unsigned char*>(buffer.data());
  std::vector<ARows<K>> rows(K::kThreads);
  std::vector<FmaAcc<K>> fma(K::kTensorCores ? 0 : K::kThreads);
  std::vector<float> mma(K::kTensorCores ? K::BM * K::BNT : 0);
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const Cta cta = make_cta<K>(p, tile);
    for (int tid = 0; tid < K::kThreads; ++tid) rows[tid].init(p, cta, tid);
    for (auto& f : fma) f.zero();
    std::fill(mma.begin(), mma.end(), 0.0f);
    for (int kk = 0; kk < cta.nk; ++kk) {
      const int s = kk % K::STAGES;
      typename K::T* As = K::smem_a(smem, s);
      typename K::T* Bs = K::smem_b(smem, s);
      for (int tid = 0; tid < K::kThreads; ++tid) load_stage<K>(p, cta, rows[tid], tid, kk, As, Bs);
      if constexpr (K::kTensorCores) {
        emulate_mma<K, kMath>(As, Bs, mma.data());
      } else {
        for (int tid = 0; tid < K::kThreads; ++tid) fma[tid].mma(As, Bs, tid);
      }
    }
    typename K::A* Cs = K::smem_c(smem);
    if constexpr (K::kTensorCores) {
      for (int m = 0; m < K::BM; ++m)
        for (int n = 0; n < K::BNT; ++n) Cs[m * K::LDC + n] = mma[m * K::BNT + n];
    } else {
      for (int tid = 0; tid < K::kThreads; ++tid) fma[tid].store(Cs, tid);
    }
    for (int tid = 0; tid < K::kThreads; ++tid) epilogue_tile<K, kKernel>(p, cta, tid, Cs);
  }
}

template <typename T> void emulate_backward_init(const Params& p) {
  using A = decltype(to_acc(T()));
  for (int64_t i = 0; i < p.M * p.C; ++i) {
    if (p.reset_after) {
      backward_init<T, A, true>(p, i);
    } else {
      backward_init<T, A, false>(p, i);
    }
  }
}

}  // namespace convgru
