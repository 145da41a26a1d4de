// The implicit-GEMM convolution with a fused epilogue: one template for every GEMM kernel
// of convgru.h's table, its launcher, and its CPU emulation.
//
// A CTA of 8 warps owns BM pixels x BN channels of NG gates (Tile below; a narrow and, for the
// tensor-core maths, a wide BN).  Its K loop walks
// taps x channel-chunks: K-step kk covers one tap and channels [c0, c0 + BK) of it (KStep
// advances tap and chunk incrementally).  Each K-step's A tile (BM x BK: the shifted
// pixels' channels, zero outside the image and past a_channels) and B tile (BK x NG*BN of
// the packed weight) are copied to shared memory with cp.async, STAGES deep, one commit
// group per K-step.  Shared rows are XOR-swizzled in 16-byte chunks (swizzle()), so that
// the 8 rows one ldmatrix phase (or one FMA row sweep) reads hit 8 different bank groups.
// The products accumulate in registers: on the tensor cores (MmaAcc: ldmatrix + mma.sync
// for bf16/fp16, 32-bit loads + mma.sync m16n8k8 for TF32; 4 x 2 warps, each owning every
// gate of its channels) or in per-thread FMA micro-tiles (FmaAcc: exact fp32, fp64).  After
// the K loop the accumulators go through a shared-memory tile over the stages (Tile::
// kTileBytes), from which each thread takes every gate of V = 16 bytes' worth of consecutive
// channels of a pixel, so that epilogue.cuh's gate math reads and writes global memory 16
// bytes at a time.
//
// The kernel body (cta_program) is written once for an executor of kLanes lanes (mma.cuh):
// on the device each thread runs it with the PTX primitives; the CPU emulator
// (emulate_gemm) runs it for every lane of every warp of every CTA with 32-lane executors
// whose primitives implement the PTX ISA's data mappings, on an emulated shared memory that
// starts as NaN, with the warps scheduled barrier to barrier (HostCta), under one of two
// schedules (EmulatedSchedule, convgru.h): "late", the cp.async groups queued per lane and
// landing at their cp.async.wait_group, warps 0, 1, ... in turn; "early", every copy landing
// when it is issued and the warps in the opposite order, so that a stage rewritten before the
// barrier that retires it, or a missing barrier, corrupts what another warp reads in one of
// the two.  So the tests on the CPU (tests/test_cuda.py, tests/test_cuda_primitives.py)
// execute every line of the kernels (partial tiles, every pipeline depth, both A-operand
// instantiations, the epilogue's tile) but these, which run only on a GPU:
//   * the bodies of DeviceLanes' primitives in mma.cuh (the inline PTX: ldmatrix, mma.sync,
//     cvt.rna.tf32, cp.async and its commit / wait) and of DeviceCta (__syncthreads), and
//     threadIdx / blockIdx; so the tensor cores' own summation order;
//   * the schedules between the emulator's two: copies landing at other moments, warps
//     interleaved within a barrier interval (the emulator runs them one by one); and the
//     __launch_bounds__ register budget (ptxas; tests/test_cuda_sass.py);
//   * the launchers (launch_gemm: grid size, the shared-memory opt-in, launch checks) and
//     backward_init_kernel's grid-stride loop (its per-element body is shared).
// All of it is unverified on a GPU.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#include <c10/cuda/CUDAException.h>

#include "common.cuh"
#include "epilogue.cuh"
#include "mma.cuh"

namespace convgru {

// A row of kChunks 16-byte chunks: logical chunk `chunk` of row `row` is stored at chunk
// swizzle(row, chunk).  Rows of a multiple of 8 chunks XOR with row % 8; rows of 4 (mod 8)
// chunks, whose row pairs already alternate the two bank halves, XOR with (row / 2) % 4.
// Either way 8 consecutive rows of one logical chunk land in 8 different bank groups (a bank
// group: 4 banks, 16 bytes), which is what an ldmatrix phase and a TF32 A fragment read.
template <int kChunks> CG_HD int swizzle(int row, int chunk) {
  static_assert(kChunks % 4 == 0, "swizzled rows hold a multiple of 4 chunks");
  if constexpr (kChunks % 8 == 0) {
    return chunk ^ (row & 7);
  } else {
    return chunk ^ ((row >> 1) & 3);
  }
}

// The TF32 B tile's swizzle (rows of a multiple of 8 chunks): XOR with 2 * (row % 4).  A TF32 B
// fragment load reads rows t = 0..3 (or 4..7) at 8 consecutive columns, logical chunks c, c + 1
// (c even) of each row; XOR with row % 8 would put rows 0 and 1 both on chunks {c, c + 1}, a
// 2-way bank conflict, while 2 * (row % 4) puts the four rows' pairs on 8 different bank groups.
// Rows t and t + 4 share their swizzle.  The copies' 16-byte writes (8 consecutive chunks of a
// row per 128 bytes) stay on 8 bank groups under any XOR below 8.  (A's TF32 fragments and every
// 16-bit fragment are ldmatrix-like reads of 8 rows of one chunk: swizzle() above.)
template <int kChunks> CG_HD int swizzle_pairs(int row, int chunk) {
  static_assert(kChunks % 8 == 0, "pair-swizzled rows hold a multiple of 8 chunks");
  return chunk ^ ((row & 3) << 1);
}

// The CTA tile.  Narrow (kWide false): BN = 32 channels of each gate for FwdRZ / FwdAfter, 64
// for the one-gate kernels; a tensor-core warp's tile is 32 pixels x BN/2 channels of every gate
// (MmaAcc): 32 x 32 (FwdRZ, one-gate) or 32 x 48 (FwdAfter).  __launch_bounds__(256, 2): at most
// 128 registers, 2 CTAs (16 warps) per SM.
// Wide (tensor-core maths only): BN doubled, so a CTA covers every gate of 64 channels (FwdRZ,
// FwdAfter) or 128 channels of one gate, and a warp's tile is 32 x 64 (FwdRZ, one-gate) or
// 32 x 96 (FwdAfter).  Per K-fragment a 16-bit warp then loads 6 ldmatrix.x4 for 16 mma.sync
// (FwdAfter: 8 for 24) instead of 4 for 8 (5 for 12), a TF32 warp 24 32-bit loads for 16 (32 for
// 24) instead of 16 for 8 (20 for 12), and one CTA reads its A tile (h, for FwdRZ) for twice the
// channels.  Its accumulators (64 or 96 floats a thread) take more than 128 registers:
// __launch_bounds__(256, 1), at most 255, one CTA (8 warps) per SM, each warp with 16 (24)
// independent mma.sync per K-fragment and the cp.async pipeline STAGES deep to cover latency;
// shared memory: stages of 16 KB (FwdAfter: 20 KB) and the epilogue's tile of 66 KB (98 KB).
// Which tile a launch takes: wide_tile (convgru.h), from C alone, so that ops.cpp pads the packed
// weight to the same BN.  Unverified on a GPU: neither tile's speed is measured.
template <Math kMath, Kernel kKernel, bool kWide = false> struct Tile {
  static_assert(!kWide || has_wide_tile(kMath), "only the tensor-core maths have a wide tile");
  using Cfg = MathCfg<kMath>;
  using T = typename Cfg::T;
  using A = typename Cfg::Acc;
  static constexpr bool kTensorCores = Cfg::KF > 0;
  static constexpr int kWarps = 8, kThreads = 32 * kWarps;
  static constexpr int kMinBlocks = kWide ? 1 : 2;  // CTAs per SM: __launch_bounds__' register budget
  static constexpr int BM = block_m(kMath), BK = block_k(kMath), STAGES = Cfg::STAGES;
  static constexpr int NG = gates_in_n(kKernel), BN = block_n(kKernel, kWide), BNT = NG * BN;
  static constexpr int VEC = 16 / sizeof(T);  // elements per 16-byte chunk
  static constexpr size_t kStageA = size_t(BM) * BK * sizeof(T);
  static constexpr size_t kStageB = size_t(BK) * BNT * sizeof(T);
  // The epilogue's tile: the CTA's accumulators, A[BM][kTileRow] (rows padded by 16 bytes),
  // written over the pipeline's stages once the K loop is done.
  static constexpr int kTileRow = BNT + 16 / int(sizeof(A));
  static constexpr size_t kTileBytes = size_t(BM) * kTileRow * sizeof(A);
  static constexpr size_t kSmemBytes = std::max(STAGES * (kStageA + kStageB), kTileBytes);
  // The epilogue's items: V consecutive channels of one pixel (16 bytes of T), all NG gates.
  static constexpr int V = VEC, kItems = BM * BN / V / kThreads;  // items per thread
  static constexpr int kAChunks = BM * BK / VEC / kThreads;  // 16-byte A copies per thread per K-step
  static constexpr int kBChunks = BK * BNT / VEC;            // 16-byte B copies per CTA per K-step

  static_assert(STAGES >= 2, "the pipeline waits for K-step kk with STAGES-2 groups pending");
  static_assert(BM * BK % (VEC * kThreads) == 0, "A tile must split evenly into 16-byte copies");
  static_assert(BN % 16 == 0 && BK % VEC == 0, "tiles must split into 16-byte chunks and 16-wide FMA columns");
  static_assert(BM % 16 == 0 && kStageA % 128 == 0 && kStageB % 128 == 0, "stages stay 128-byte aligned");
  static_assert(BM * BN % (V * kThreads) == 0, "the epilogue's items must split evenly among the threads");

  // Element offsets of A[row][col] (BM x BK) and B[k][n] (BK x BNT) in their stages.
  static CG_HD int a_index(int row, int col) {
    return row * BK + swizzle<BK / VEC>(row, col / VEC) * VEC + col % VEC;
  }
  static CG_HD int b_index(int k, int n) {
    if constexpr (kMath == Math::TF32) {
      return k * BNT + swizzle_pairs<BNT / VEC>(k, n / VEC) * VEC + n % VEC;
    } else {
      return k * BNT + swizzle<BNT / VEC>(k, n / VEC) * VEC + n % VEC;
    }
  }
  static CG_HD T* smem_a(unsigned char* smem, int stage) {
    return reinterpret_cast<T*>(smem + stage * kStageA);
  }
  static CG_HD T* smem_b(unsigned char* smem, int stage) {
    return reinterpret_cast<T*>(smem + STAGES * kStageA + stage * kStageB);
  }
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

// The K-step a thread loads next, advanced one step at a time (no division in the loop), and
// the element offsets that K-step adds to every A and every B chunk's source: the same for all
// chunks of the CTA.
struct KStep {
  int kk;         // K-step index
  int ty, tx;     // its tap's row and column in the kernel
  int dy, dx;     // the tap's pixel offset
  int c0;         // first channel of its chunk
  int64_t a_off;  // (dy*W + dx)*a_stride + c0: from an unshifted pixel's row to this K-step's A data
  int64_t b_off;  // kk*BK*NG*n_pad: the K-step's first row of the packed weight

  CG_HD void start(const Params& p) {
    kk = ty = tx = c0 = 0;
    dy = -p.pad_h, dx = -p.pad_w;
    a_off = (int64_t(dy) * p.W + dx) * p.a_stride;
    b_off = 0;
  }
  template <int BK, int NG> CG_HD void advance(const Params& p) {
    ++kk;
    c0 += BK;
    a_off += BK;
    b_off += int64_t(BK * NG) * p.n_pad;
    if (c0 == p.k_pad) {
      c0 = 0;
      if (++tx == p.kw) tx = 0, ++ty;
      dy = ty * p.dil_h - p.pad_h, dx = tx * p.dil_w - p.pad_w;
      a_off = (int64_t(dy) * p.W + dx) * p.a_stride;
    }
  }
};

// One lane's copies, fixed across K-steps and so found once: for each of its A chunks the
// unshifted source (pixel m's row plus the chunk's column) and the pixel's (py, px); the
// column and so the channel limit are the same for all of them, and their swizzled
// destinations in a stage a constant apart (kARows rows); for each of its B chunks the source's
// offset in K-step 0's rows of the packed weight and the destination.
template <class K> struct Copies {
  using T = typename K::T;
  static constexpr int AJ = K::kAChunks;                                 // A chunks per thread
  static constexpr int BJ = (K::kBChunks + K::kThreads - 1) / K::kThreads;  // B chunks per thread (the last maybe idle)
  static constexpr int kFar = -(1 << 29);  // py of a row past the last pixel: outside the image for every tap
  static constexpr int kARows = K::kThreads / (K::BK / K::VEC);  // rows between a thread's A chunks
  static_assert(kARows % 8 == 0, "a thread's A chunks share their column and swizzle");
  const T* a_src[AJ];
  int py[AJ], px[AJ];  // the pixels' (y, x)
  int a_dst;           // the first chunk's destination
  int a_lim;           // a_channels - the chunks' column
  int b_src[BJ];  // < BK*NG*n_pad
  int b_dst[BJ];
  bool b_on[BJ];

  CG_HD void init(const Params& p, const Cta& cta, int tid) {
    const int64_t hw = int64_t(p.H) * p.W;
#pragma unroll
    for (int j = 0; j < AJ; ++j) {
      const int chunk = tid + j * K::kThreads;
      const int row = chunk / (K::BK / K::VEC);
      const int col = (chunk % (K::BK / K::VEC)) * K::VEC;
      const int64_t pix = cta.m0 + row;
      const int64_t in_frame = pix % hw;
      py[j] = pix < p.M ? static_cast<int>(in_frame / p.W) : kFar;
      px[j] = static_cast<int>(in_frame % p.W);
      a_src[j] = static_cast<const T*>(p.a) + (pix < p.M ? pix : 0) * p.a_stride + col;
      if (j == 0) a_dst = K::a_index(row, col), a_lim = p.a_channels - col;
    }
#pragma unroll
    for (int j = 0; j < BJ; ++j) {
      const int chunk = tid + j * K::kThreads;
      b_on[j] = K::kBChunks % K::kThreads == 0 || chunk < K::kBChunks;
      const int row = b_on[j] ? chunk / (K::BNT / K::VEC) : 0;
      const int col = b_on[j] ? (chunk % (K::BNT / K::VEC)) * K::VEC : 0;
      const int g = col / K::BN, cc = col - g * K::BN;
      b_src[j] = (row * K::NG + g) * p.n_pad + cta.n0 + cc;
      b_dst[j] = K::b_index(row, col);
    }
  }

  // Issue lane l's copies of K-step ks (its A and B tiles) into one pipeline stage.  kVec: A's
  // channels allow 16-byte copies (all or nothing per chunk, as a_channels % VEC == 0);
  // otherwise element by element (the unaligned instantiation of the kernel: ordinary loads and
  // shared stores, no cp.async).  A's copies keep their data in L1 (.ca), which is safe only
  // while no launch writes an element it reads as A: true of ops.cpp's loops (BwdN writes dgh's
  // r block and reads its n block as A).
  template <bool kVec, class X>
  CG_HD void issue(const Params& p, const KStep& ks, T* As, T* Bs, X& x, int l) {
#pragma unroll
    for (int j = 0; j < AJ; ++j) {
      const bool pixel_ok = unsigned(py[j] + ks.dy) < unsigned(p.H) && unsigned(px[j] + ks.dx) < unsigned(p.W);
      const T* src = a_src[j] + ks.a_off;  // dereferenced only when pixel_ok
      if constexpr (kVec) {
        const bool ok = pixel_ok && ks.c0 < a_lim;
        x.template copy16<true>(l, As + a_dst + j * kARows * K::BK, ok ? src : a_src[j], ok);
      } else {
#pragma unroll 1  // the fallback: registers matter more than latency
        for (int e = 0; e < K::VEC; ++e) {
          As[a_dst + j * kARows * K::BK + e] = pixel_ok && ks.c0 + e < a_lim ? src[e] : Store<T>::from(0.0f);
        }
      }
    }
    // B: always in bounds and 16-byte aligned (ops.cpp pads k_pad and n_pad).
#pragma unroll
    for (int j = 0; j < BJ; ++j) {
      if (b_on[j]) x.template copy16<false>(l, Bs + b_dst[j], static_cast<const T*>(p.w) + ks.b_off + b_src[j], true);
    }
  }
};

// CUDA-core accumulation (exact fp32, fp64): thread (ty, tx) of a 16 x 16 grid owns rows
// ty + 16*i and columns tx + 16*j of the CTA's BM x BNT accumulator; column blocks j and
// j + BN/16 are the same channel of consecutive gates.
template <class K> struct FmaAcc {
  using T = typename K::T;
  using A = typename K::A;
  static constexpr int TM = K::BM / 16, TN = K::BNT / 16, TC = K::BN / 16;
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
      for (int i = 0; i < TM; ++i) a[i] = to_acc(As[K::a_index(ty + 16 * i, k)]);
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = to_acc(Bs[K::b_index(k, tx + 16 * j)]);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma_(a[i], b[j], acc[i][j]);
    }
  }
  // f(row, channel, sums[NG]) for every (row, channel) of the tile this thread owns.
  template <class F> CG_HD void for_each(int tid, F&& f) const {
    const int ty = tid / 16, tx = tid % 16;
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TC; ++j) {
        A v[K::NG];
#pragma unroll
        for (int g = 0; g < K::NG; ++g) v[g] = acc[i][j + g * TC];
        f(ty + 16 * i, tx + 16 * j, v);
      }
  }
};

// FmaAcc for each lane of an executor.
template <class K, class X> struct FmaLanes {
  FmaAcc<K> lane[X::kLanes];

  CG_HD void start(int, const X&) {
    for (int l = 0; l < X::kLanes; ++l) lane[l].zero();
  }
  CG_HD void mma(const typename K::T* As, const typename K::T* Bs, int warp, X& x) {
    for (int l = 0; l < X::kLanes; ++l) lane[l].mma(As, Bs, 32 * warp + x.lane(l));
  }
  // f(l, row, channel, sums[NG]) for every lane l and (row, channel) it owns.
  template <class F> CG_HD void for_each(int warp, const X& x, F&& f) const {
    for (int l = 0; l < X::kLanes; ++l) {
      lane[l].for_each(32 * warp + x.lane(l), [&](int row, int ch, const typename K::A* v) { f(l, row, ch, v); });
    }
  }
};

// Tensor-core accumulation: 8 warps as 4 (M) x 2 (N) (the warp tiles: Tile).  Warp (wm, wn) owns rows
// [WM*wm, WM*wm + WM) and, of every gate, channels [WC*wn, WC*wn + WC): FM x FN tiles of
// m16n8 (fragment layouts: mma.cuh), tile (i, g*JN + j) holding gate g's channels
// WC*wn + 8j .. +8.  Per K-step of KF: A fragments by ldmatrix.x4 (16-bit) or 32-bit loads
// (TF32); B fragments by ldmatrix.x4.trans, two n8 tiles at a time (16-bit), or 32-bit loads.
template <class K, class X> struct MmaAcc {
  using T = typename K::T;
  static constexpr Math kMath = std::is_same<T, float>::value ? Math::TF32
                                : std::is_same<T, __half>::value ? Math::F16 : Math::BF16;
  static constexpr int KF = K::Cfg::KF, L = X::kLanes;
  static constexpr int WARPS_N = 2, WM = K::BM / (K::kWarps / WARPS_N), WC = K::BN / WARPS_N;
  static constexpr int FM = WM / 16, JN = WC / 8, FN = K::NG * JN;
  static_assert(WM % 16 == 0 && WC % 16 == 0 && K::BK % KF == 0, "warp tiles must be whole fragments");
  float acc[FM][FN][L][4];

  CG_HD void zero() {
    for (int i = 0; i < FM; ++i)
      for (int j = 0; j < FN; ++j)
        for (int l = 0; l < L; ++l)
          for (int r = 0; r < 4; ++r) acc[i][j][l][r] = 0.0f;
  }
  // ldmatrix row offsets (elements, in a stage) of each lane, found once: A's for i = 0 at each
  // K-fragment ks, B's for ks = 0 at each pair of n8 tiles (g, j).  Fragment i adds 16*i rows to
  // A's and ks adds 16*ks rows to B's, which moves the address by a constant (rows 16 apart
  // share their swizzle), so the loop adds only immediates to these.
  static constexpr int KS = K::BK / 16, JP = JN / 2 > 0 ? JN / 2 : 1;
  int a_row[KF == 16 ? KS : 1][L], b_row[KF == 16 ? K::NG : 1][JP][L];
  // TF32's element offsets of each lane, found once: A's at row wm*WM + gid, column t of each
  // 4-column chunk c (fragment i adds 16*i rows, its second half 8 more); B's at row t, column
  // wn*WC + 8*j + gid (b[1]'s row t + 4 adds 4*BNT, as rows 4 apart share swizzle_pairs'
  // swizzle; gate g adds g*BN columns, a whole number of 8-chunk swizzle periods, and
  // K-fragment ks 8*ks rows).
  int a_tf[KF == 8 ? K::BK / 4 : 1][L], b_tf[KF == 8 ? JN : 1][L];

  CG_HD void start(int warp, const X& x) {
    zero();
    if constexpr (KF == 8) {
      static_assert(K::BK / K::VEC == 4 && K::BN / K::VEC % 8 == 0 && K::BNT / K::VEC % 8 == 0,
                    "A rows 8 apart and B columns BN apart keep their swizzle");
      const int wm = warp / WARPS_N, wn = warp % WARPS_N;
      for (int l = 0; l < L; ++l) {
        const int lane = x.lane(l), gid = lane >> 2, t = lane & 3;
#pragma unroll
        for (int c = 0; c < K::BK / 4; ++c) a_tf[c][l] = K::a_index(wm * WM + gid, 4 * c + t);
#pragma unroll
        for (int j = 0; j < JN; ++j) b_tf[j][l] = K::b_index(t, wn * WC + 8 * j + gid);
      }
    }
    if constexpr (KF == 16) {
      const int wm = warp / WARPS_N, wn = warp % WARPS_N;
      for (int l = 0; l < L; ++l) {
        const int lane = x.lane(l);
        // ldmatrix: lane l's row address is row (l & 15), chunk (l >> 4) of the 16 x 16 block,
        // so that matrices 0..3 are (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15):
        // A's a[0..3], or for B (.trans; rows are k) b[0], b[1] of two n8 tiles.
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) a_row[ks][l] = K::a_index(wm * WM + (lane & 15), ks * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int g = 0; g < K::NG; ++g)
#pragma unroll
          for (int jp = 0; jp < JP; ++jp) {
            b_row[g][jp][l] = K::b_index(lane & 15, g * K::BN + wn * WC + 16 * jp + (lane >> 4) * 8);
          }
      }
    }
  }
  CG_HD void mma(const T* As, const T* Bs, int warp, X& x) {
#pragma unroll
    for (int ks = 0; ks < K::BK / KF; ++ks) {
      uint32_t a[FM][L][4], b[FN][L][2];
      if constexpr (KF == 16) {
#pragma unroll
        for (int i = 0; i < FM; ++i) {
          const void* ptr[L];
          for (int l = 0; l < L; ++l) ptr[l] = As + a_row[ks][l] + 16 * i * K::BK;
          x.template ldmatrix_x4<false>(a[i], ptr);
        }
#pragma unroll
        for (int g = 0; g < K::NG; ++g)
#pragma unroll
          for (int j = 0; j < JN; j += 2) {
            const void* ptr[L];
            for (int l = 0; l < L; ++l) ptr[l] = Bs + b_row[g][j / 2][l] + 16 * ks * K::BNT;
            uint32_t r[L][4];
            x.template ldmatrix_x4<true>(r, ptr);
            for (int l = 0; l < L; ++l) {
              b[g * JN + j][l][0] = r[l][0], b[g * JN + j][l][1] = r[l][1];
              b[g * JN + j + 1][l][0] = r[l][2], b[g * JN + j + 1][l][1] = r[l][3];
            }
          }
      } else {
        for (int l = 0; l < L; ++l) {
#pragma unroll
          for (int i = 0; i < FM; ++i) {
            const T* lo = As + a_tf[2 * ks][l] + 16 * i * K::BK;      // columns ks*8 + t
            const T* hi = As + a_tf[2 * ks + 1][l] + 16 * i * K::BK;  // columns ks*8 + 4 + t
            a[i][l][0] = to_tf32(x.lds(l, lo));
            a[i][l][1] = to_tf32(x.lds(l, lo + 8 * K::BK));
            a[i][l][2] = to_tf32(x.lds(l, hi));
            a[i][l][3] = to_tf32(x.lds(l, hi + 8 * K::BK));
          }
#pragma unroll
          for (int g = 0; g < K::NG; ++g)
#pragma unroll
            for (int j = 0; j < JN; ++j) {
              const T* lo = Bs + b_tf[j][l] + g * K::BN + 8 * ks * K::BNT;  // rows 8*ks + t
              b[g * JN + j][l][0] = to_tf32(x.lds(l, lo));
              b[g * JN + j][l][1] = to_tf32(x.lds(l, lo + 4 * K::BNT));  // rows 8*ks + 4 + t
            }
        }
      }
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) x.template mma<kMath>(acc[i][j], a[i], b[j]);
    }
  }
  // f(l, row, channel, sums[NG]) for every lane l and (row, channel) it owns (the C layout).
  template <class F> CG_HD void for_each(int warp, const X& x, F&& f) const {
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    for (int l = 0; l < L; ++l) {
      const int lane = x.lane(l), gid = lane >> 2, t = lane & 3;
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int j = 0; j < JN; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float v[K::NG];
#pragma unroll
              for (int g = 0; g < K::NG; ++g) v[g] = acc[i][g * JN + j][l][2 * h + e];
              f(l, wm * WM + 16 * i + gid + 8 * h, wn * WC + 8 * j + 2 * t + e, v);
            }
    }
  }
};

// One executor's share of a CTA (a thread on the device, a warp in the emulator): its
// lanes' copies and accumulators, and the K-step it loads next.  kVec: the A operand allows
// 16-byte copies (Params::a_vec_ok); the other case is its own instantiation, so that the
// aligned main loop holds no per-element path.
template <Math kMath, Kernel kKernel, bool kWide, bool kVec, class X> struct WarpBody {
  using K = Tile<kMath, kKernel, kWide>;
  using Acc = typename std::conditional<K::kTensorCores, MmaAcc<K, X>, FmaLanes<K, X>>::type;
  X x;
  int warp;
  Copies<K> copies[X::kLanes];
  Acc acc;
  KStep next;      // the K-step issue() loads
  int next_stage;  // its pipeline stage, next.kk % STAGES

  CG_HD void start(const Params& p, const Cta& cta) {
    for (int l = 0; l < X::kLanes; ++l) copies[l].init(p, cta, 32 * warp + x.lane(l));
    acc.start(warp, x);
    next.start(p);
    next_stage = 0;
  }
  // Copy K-step `next` (when it exists) into its stage and commit one group, possibly
  // empty, so that "at most STAGES-2 groups pending" always means "K-step kk has landed".
  CG_HD void issue(const Params& p, const Cta& cta, unsigned char* smem) {
    if (next.kk < cta.nk) {
      typename K::T* As = K::smem_a(smem, next_stage);
      typename K::T* Bs = K::smem_b(smem, next_stage);
      for (int l = 0; l < X::kLanes; ++l) copies[l].template issue<kVec>(p, next, As, Bs, x, l);
      next.template advance<K::BK, K::NG>(p);
      next_stage = next_stage + 1 == K::STAGES ? 0 : next_stage + 1;
    }
    for (int l = 0; l < X::kLanes; ++l) x.commit(l);
  }
  template <int N> CG_HD void wait() {
    for (int l = 0; l < X::kLanes; ++l) x.template wait<N>(l);
  }
  CG_HD void compute(unsigned char* smem, int stage) {
    acc.mma(K::smem_a(smem, stage), K::smem_b(smem, stage), warp, x);
  }
  // The accumulators into the epilogue's tile (K::kTileBytes at smem), in the fragment layout.
  CG_HD void stage_tile(unsigned char* smem) {
    typename K::A* tile = reinterpret_cast<typename K::A*>(smem);
    acc.for_each(warp, x, [&](int, int row, int ch, const typename K::A* v) {
#pragma unroll
      for (int g = 0; g < K::NG; ++g) tile[row * K::kTileRow + g * K::BN + ch] = v[g];
    });
  }
  // The gate math of this executor's items of the tile: V channels of one pixel each, so that
  // the epilogue reads and writes global memory 16 bytes at a time.
  CG_HD void epilogue(const Params& p, const Cta& cta, const unsigned char* smem) {
    using A = typename K::A;
    const A* tile = reinterpret_cast<const A*>(smem);
    for (int l = 0; l < X::kLanes; ++l) {
      const int tid = 32 * warp + x.lane(l);
#pragma unroll
      for (int j = 0; j < K::kItems; ++j) {
        const int item = tid + j * K::kThreads;
        const int row = item / (K::BN / K::V), ch = item % (K::BN / K::V) * K::V;
        const int64_t m = cta.m0 + row;
        const int c = cta.n0 + ch;
        if (m >= p.M || c >= p.C) continue;
        A v[K::NG][K::V];
#pragma unroll
        for (int g = 0; g < K::NG; ++g)
#pragma unroll
          for (int e = 0; e < K::V; ++e) v[g][e] = tile[row * K::kTileRow + g * K::BN + ch + e];
        const int n = p.C - c < K::V ? p.C - c : int(K::V);  // channels inside the tensor
        Epilogue<kKernel>::template apply<typename K::T, A, K::V>(p, m, c, n, v);
      }
    }
  }
};

// The kernel body for one CTA.  ex.each(f) runs phase f for this CTA's executors (on the
// device: the calling thread); ex.barrier() is __syncthreads; ex.end() closes the program.
// The emulator (HostCta) runs everything between two barriers for one warp, then all of it
// for the next, in one of two orders (the header comment): schedules the hardware may choose,
// under which data that a warp needs from another without a barrier in between would be
// missing.  The lambdas take loop variables by value, as they run after the loop has moved on.
template <class K, class Exec> CG_HD void cta_program(const Params& p, const Cta& cta, unsigned char* smem, Exec& ex) {
  using Body = typename Exec::Body;
  ex.each([&](Body& w) { w.start(p, cta); });
  for (int s = 0; s < K::STAGES - 1; ++s) ex.each([&](Body& w) { w.issue(p, cta, smem); });  // prologue
  for (int kk = 0, stage = 0; kk < cta.nk; ++kk, stage = stage + 1 == K::STAGES ? 0 : stage + 1) {
    ex.each([&](Body& w) { w.template wait<K::STAGES - 2>(); });
    ex.barrier();  // K-step kk visible to all; everyone is done with K-step kk-1's stage
    ex.each([&, stage](Body& w) {
      w.issue(p, cta, smem);  // K-step kk + STAGES-1, into the stage K-step kk-1 used
      w.compute(smem, stage);
    });
  }
  ex.each([&](Body& w) { w.template wait<0>(); });  // only empty groups remain
  ex.barrier();  // everyone is done with the stages: the tile may overwrite them
  ex.each([&](Body& w) { w.stage_tile(smem); });
  ex.barrier();  // the whole tile written
  ex.each([&](Body& w) { w.epilogue(p, cta, smem); });
  ex.end();
}

#if defined(__CUDACC__)
template <class B> struct DeviceCta {
  using Body = B;
  Body& w;
  template <class F> CG_HD void each(F&& f) { f(w); }
  CG_HD void barrier() {
#if defined(__CUDA_ARCH__)
    __syncthreads();
#endif
  }
  CG_HD void end() {}
};

// 256 threads, Tile::kMinBlocks CTAs per SM: at most 128 (narrow) or 255 (wide) registers per
// thread (ptxas: 0 spills, benchmarks/results/compile/cuda-ptxas-sm90.txt; tests/test_cuda_sass.py
// checks).
template <Math kMath, Kernel kKernel, bool kWide, bool kVec>
__global__ void __launch_bounds__(256, (Tile<kMath, kKernel, kWide>::kMinBlocks)) gemm_kernel(const Params p) {
  using K = Tile<kMath, kKernel, kWide>;
  using Body = WarpBody<kMath, kKernel, kWide, kVec, DeviceLanes>;
  extern __shared__ __align__(128) unsigned char smem[];
  Body w;
  w.warp = threadIdx.x / 32;
  DeviceCta<Body> ex{w};
  cta_program<K>(p, make_cta<K>(p, blockIdx.x), smem, ex);
}

template <Math kMath, Kernel kKernel, bool kWide, bool kVec>
void launch_gemm_as(const Params& p, int64_t tiles, cudaStream_t stream) {
  using K = Tile<kMath, kKernel, kWide>;
  auto* kernel = &gemm_kernel<kMath, kKernel, kWide, kVec>;
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

template <Math kMath, Kernel kKernel, bool kWide> void launch_gemm_tile(const Params& p, cudaStream_t stream) {
  using K = Tile<kMath, kKernel, kWide>;
  TORCH_CHECK(p.k_pad % K::BK == 0 && p.n_pad % K::BN == 0 && p.n_pad >= p.C && p.k_pad >= p.a_channels,
              "convgru_ext internal error: packed weight padding does not match the kernel's tile");
  const int64_t tiles = ceil_div<int64_t>(p.M, K::BM) * (p.n_pad / K::BN);
  if (tiles == 0) return;
  TORCH_CHECK(tiles <= INT32_MAX, "convgru_ext: too many pixels for one launch (", p.M, ")");
  if (p.a_vec_ok) {
    launch_gemm_as<kMath, kKernel, kWide, true>(p, tiles, stream);
  } else {
    launch_gemm_as<kMath, kKernel, kWide, false>(p, tiles, stream);
  }
}

template <Math kMath, Kernel kKernel> void launch_gemm(const Params& p, cudaStream_t stream) {
  if constexpr (has_wide_tile(kMath)) {
    if (wide_tile(kMath, kKernel, p.C)) return launch_gemm_tile<kMath, kKernel, true>(p, stream);
  }
  launch_gemm_tile<kMath, kKernel, false>(p, stream);
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

// A CTA's warps on the CPU: the phases given since the last barrier run, at the next barrier
// (or the end), for warp 0, then warp 1, ... (cta_program's comment), or in the early schedule
// for warp 7, then 6, ...  (CG_HD so that cta_program compiles in both passes; only host code
// calls these.)
template <class B> struct HostCta {
  using Body = B;
  B* warps;
  bool reverse;
  std::vector<std::function<void(B&)>> phases;
  template <class F> CG_HD void each(F&& f) {
#if !defined(__CUDA_ARCH__)
    phases.emplace_back(std::forward<F>(f));
#endif
  }
  CG_HD void barrier() {
#if !defined(__CUDA_ARCH__)
    for (int i = 0; i < B::K::kWarps; ++i)
      for (auto& f : phases) f(warps[reverse ? B::K::kWarps - 1 - i : i]);
    phases.clear();
#endif
  }
  CG_HD void end() { barrier(); }
};

template <Math kMath, Kernel kKernel, bool kWide = false, bool kVec = true>
using EmulatedWarp = WarpBody<kMath, kKernel, kWide, kVec, HostLanes>;

// One launch of gemm_kernel<kMath, kKernel, kWide, kVec>, run on the CPU: every CTA, warp and lane.
template <Math kMath, Kernel kKernel, bool kWide, bool kVec> void emulate_gemm_as(const Params& p) {
  using K = Tile<kMath, kKernel, kWide>;
  using Body = EmulatedWarp<kMath, kKernel, kWide, kVec>;
  const int64_t tiles = ceil_div<int64_t>(p.M, K::BM) * (p.n_pad / K::BN);
  std::vector<double> buffer(K::kSmemBytes / sizeof(double) + 1);
  unsigned char* smem = reinterpret_cast<unsigned char*>(buffer.data());
  const bool early = emulated_schedule() == EmulatedSchedule::Early;
  std::vector<Body> warps(K::kWarps);
  for (int w = 0; w < K::kWarps; ++w) warps[w].warp = w, warps[w].x.early = early;
  HostCta<Body> ex{warps.data(), early};
  for (int64_t tile = 0; tile < tiles; ++tile) {
    std::memset(smem, 0xff, K::kSmemBytes);  // NaN everywhere: a read before its copy landed shows
    cta_program<K>(p, make_cta<K>(p, tile), smem, ex);
  }
}

template <Math kMath, Kernel kKernel, bool kWide> void emulate_gemm_tile(const Params& p) {
  using K = Tile<kMath, kKernel, kWide>;
  TORCH_CHECK(p.n_pad % K::BN == 0,
              "convgru_ext internal error: packed weight padding does not match the kernel's tile");
  if (p.a_vec_ok) {
    emulate_gemm_as<kMath, kKernel, kWide, true>(p);
  } else {
    emulate_gemm_as<kMath, kKernel, kWide, false>(p);
  }
}

// The tile choice of launch_gemm.
template <Math kMath, Kernel kKernel> void emulate_gemm(const Params& p) {
  if constexpr (has_wide_tile(kMath)) {
    if (wide_tile(kMath, kKernel, p.C)) return emulate_gemm_tile<kMath, kKernel, true>(p);
  }
  emulate_gemm_tile<kMath, kKernel, false>(p);
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
