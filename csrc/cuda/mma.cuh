// The device primitives of the GEMM kernels (tensor-core fragments, asynchronous copies),
// as inline PTX, and a CPU implementation of each one for the emulator (gemm.cuh).
//
// The kernel body is written for an "executor" holding X::kLanes lanes of one warp, with
// every per-lane value an array [kLanes]: on the device an executor is one thread
// (DeviceLanes, kLanes = 1: the primitives are the PTX instructions); in the emulator it is
// a whole warp (HostLanes, kLanes = 32: the primitives take all 32 lanes' registers and
// move the data as the PTX ISA's tables say).  Those tables, with lane = 0..31,
// g = lane / 4 ("groupID") and t = lane % 4 ("threadID_in_group"); (row, col) of a matrix:
//
//   ldmatrix.sync.aligned.m8n8.x4.shared.b16: lane l gives the address of row l % 8 of
//     matrix l / 8 (16 contiguous bytes, 16-byte aligned).  Register j of lane l receives
//     elements (g, 2t) [low half] and (g, 2t+1) [high half] of matrix j; with .trans,
//     elements (2t, g) and (2t+1, g) of matrix j as stored (the transposed matrix's row g).
//   mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (16-bit pairs, low half first):
//     A (16 x 16): a[0] = (g, 2t|2t+1), a[1] = (g+8, 2t|2t+1), a[2] = (g, 2t+8|2t+9), a[3] = (g+8, 2t+8|2t+9);
//     B (16 x 8):  b[0] = (2t|2t+1, g), b[1] = (2t+8|2t+9, g).
//   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (one 32-bit element per register):
//     A (16 x 8): a[0] = (g, t), a[1] = (g+8, t), a[2] = (g, t+4), a[3] = (g+8, t+4);
//     B (8 x 8):  b[0] = (t, g), b[1] = (t+4, g).
//   C and D (16 x 8, f32) of both: c[0] = (g, 2t), c[1] = (g, 2t+1), c[2] = (g+8, 2t), c[3] = (g+8, 2t+1).
//
// TF32 operands are loaded with plain 32-bit shared-memory loads straight into that layout
// (ldmatrix moves 16-bit elements; its pairs would need a shuffle for TF32's k = t, t+4),
// then rounded with cvt.rna.tf32.f32.  Exact fp32 and fp64 do not use these fragments.
//
//   cp.async.{ca,cg}.shared.global [dst], [src], 16, src_size: copy 16 bytes global -> shared
//     asynchronously, reading src_size (16 or 0) bytes and zero-filling the rest; .ca caches
//     in L1 (the A tile: overlapping taps re-read pixels), .cg only in L2 (the weight);
//   cp.async.commit_group / cp.async.wait_group N: close this thread's open copies as a
//     group / wait until at most N of its groups are pending.  HostLanes queues the copies
//     per lane and lands them at the wait, the latest moment the device may, or (early: the
//     emulator's other schedule, gemm.cuh) when they are issued, the earliest.
#pragma once

#include <cstdint>
#include <cstring>

#include <deque>
#include <vector>

#include "common.cuh"

namespace convgru {

// What the tensor cores see of a float in TF32 mode: round to nearest, ties away from zero,
// to 10 mantissa bits (cvt.rna.tf32.f32); the bits of the result.
CG_HD uint32_t to_tf32(float x) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // finite: round the 13 low bits
  return u;
#endif
}


// ---- the CPU implementations (host functions), one warp at a time ----

// ldmatrix.x4 [.trans]: addr[l] is lane l's row address (8 16-bit elements).
inline void ldmatrix_x4_host(const uint16_t* const addr[32], bool trans, uint32_t out[32][4]) {
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < 4; ++j) {
      const uint16_t* const* rows = addr + 8 * j;  // matrix j's 8 row addresses
      uint16_t lo, hi;
      if (trans) {
        lo = rows[2 * t][g], hi = rows[2 * t + 1][g];
      } else {
        lo = rows[g][2 * t], hi = rows[g][2 * t + 1];
      }
      out[lane][j] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
  }
}

inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename T> float half_bits(uint32_t r, int which) {
  const uint16_t bits = static_cast<uint16_t>(which ? r >> 16 : r & 0xffffu);
  T v;
  std::memcpy(&v, &bits, 2);
  return to_acc(v);
}

// mma.sync: d = a*b + c for one warp; a [32][4], b [32][2], c and d [32][4] per the tables
// above.  Products are exact in fp32 for these inputs; the sum runs in fp32 in k order (the
// tensor cores' order and rounding of the sum are unspecified).
template <Math kMath> void mma_sync_host(float d[32][4], const uint32_t a[32][4], const uint32_t b[32][2],
                                         const float c[32][4]) {
  constexpr int K = kMath == Math::TF32 ? 8 : 16;
  float A[16][K], B[K][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    if constexpr (kMath == Math::TF32) {
      A[g][t] = from_bits(a[lane][0]), A[g + 8][t] = from_bits(a[lane][1]);
      A[g][t + 4] = from_bits(a[lane][2]), A[g + 8][t + 4] = from_bits(a[lane][3]);
      B[t][g] = from_bits(b[lane][0]), B[t + 4][g] = from_bits(b[lane][1]);
    } else {
      using T = typename MathCfg<kMath>::T;
      for (int e = 0; e < 2; ++e) {
        A[g][2 * t + e] = half_bits<T>(a[lane][0], e), A[g + 8][2 * t + e] = half_bits<T>(a[lane][1], e);
        A[g][2 * t + 8 + e] = half_bits<T>(a[lane][2], e), A[g + 8][2 * t + 8 + e] = half_bits<T>(a[lane][3], e);
        B[2 * t + e][g] = half_bits<T>(b[lane][0], e), B[2 * t + 8 + e][g] = half_bits<T>(b[lane][1], e);
      }
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r / 2), col = 2 * t + r % 2;
      float s = c[lane][r];
      for (int k = 0; k < K; ++k) s += A[row][k] * B[k][col];
      d[lane][r] = s;
    }
  }
}

// ---- the executors ----

// One device thread: the PTX instructions.  (CG_HD so that the kernel body's templates
// compile in both passes; only device code calls these.)
struct DeviceLanes {
  static constexpr int kLanes = 1;
  CG_HD int lane(int) const {
#if defined(__CUDA_ARCH__)
    return threadIdx.x & 31;
#else
    return 0;
#endif
  }
  template <bool kTrans> CG_HD void ldmatrix_x4(uint32_t (&r)[1][4], const void* const (&addr)[1]) {
#if defined(__CUDA_ARCH__)
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(addr[0]));
    if constexpr (kTrans) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0][0]), "=r"(r[0][1]), "=r"(r[0][2]), "=r"(r[0][3]) : "r"(a) : "memory");
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0][0]), "=r"(r[0][1]), "=r"(r[0][2]), "=r"(r[0][3]) : "r"(a) : "memory");
    }
#endif
  }
  template <Math kMath> CG_HD void mma(float (&d)[1][4], const uint32_t (&a)[1][4], const uint32_t (&b)[1][2]) {
#if defined(__CUDA_ARCH__)
    if constexpr (kMath == Math::BF16) {
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                   "{%8, %9}, {%0, %1, %2, %3};\n"
                   : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3])
                   : "r"(a[0][0]), "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(b[0][0]), "r"(b[0][1]));
    } else if constexpr (kMath == Math::F16) {
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                   "{%8, %9}, {%0, %1, %2, %3};\n"
                   : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3])
                   : "r"(a[0][0]), "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(b[0][0]), "r"(b[0][1]));
    } else {
      static_assert(kMath == Math::TF32, "tensor-core math is f16, bf16 or tf32");
      asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                   "{%8, %9}, {%0, %1, %2, %3};\n"
                   : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3])
                   : "r"(a[0][0]), "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(b[0][0]), "r"(b[0][1]));
    }
#endif
  }
  // A shared-memory load of one element (TF32's fragments): an ordinary load (LDS).
  template <class T> CG_HD T lds(int, const T* p) const { return *p; }
  // 16 bytes src -> smem_dst, or 16 zero bytes when !valid (src is then not read).
  template <bool kL1> CG_HD void copy16(int, void* smem_dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__)
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
    const int src_bytes = valid ? 16 : 0;
    if constexpr (kL1) {
      asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
    } else {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
    }
#endif
  }
  CG_HD void commit(int) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
  }
  template <int N> CG_HD void wait(int) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");  // shared memory changed
#endif
  }
};

// One warp on the CPU (the emulator): the implementations above, and per lane a queue of
// copy groups.  (CG_HD for the same reason; only host code calls these.)
struct HostLanes {
  static constexpr int kLanes = 32;
  CG_HD int lane(int l) const { return l; }
  struct Copy {
    void* dst;
    const void* src;  // null: zero fill
  };
  std::vector<Copy> open[32];               // lane l's copies since its last commit
  std::deque<std::vector<Copy>> groups[32];  // lane l's committed groups, oldest first

  // Recording the fragment loads (tests only: tests/test_cuda_primitives.py counts their bank
  // conflicts): while trace_base is set, each ldmatrix and lds appends to loads[l] lane l's
  // address (bytes from trace_base) and width, so that entry n of every lane is the warp's nth
  // load instruction (an executor's lanes run the same loads in the same order).
  struct Load {
    int64_t offset;
    int bytes;
  };
  const unsigned char* trace_base = nullptr;
  std::vector<Load> loads[32];
  CG_HD void record(int l, const void* p, int bytes) {
#if !defined(__CUDA_ARCH__)
    if (trace_base) loads[l].push_back({static_cast<const unsigned char*>(p) - trace_base, bytes});
#endif
  }

  template <bool kTrans> CG_HD void ldmatrix_x4(uint32_t (&r)[32][4], const void* const (&addr)[32]) {
#if !defined(__CUDA_ARCH__)
    const uint16_t* rows[32];
    for (int l = 0; l < 32; ++l) rows[l] = static_cast<const uint16_t*>(addr[l]), record(l, addr[l], 16);
    ldmatrix_x4_host(rows, kTrans, r);
#endif
  }
  template <class T> CG_HD T lds(int l, const T* p) {
    record(l, p, sizeof(T));
    return *p;
  }
  template <Math kMath> CG_HD void mma(float (&d)[32][4], const uint32_t (&a)[32][4], const uint32_t (&b)[32][2]) {
#if !defined(__CUDA_ARCH__)
    float c[32][4];
    std::memcpy(c, d, sizeof(c));
    mma_sync_host<kMath>(d, a, b, c);
#endif
  }
  bool early = false;  // land each copy when it is issued (the earliest the ISA allows), not at its wait

  template <bool kL1> CG_HD void copy16(int l, void* smem_dst, const void* src, bool valid) {
#if !defined(__CUDA_ARCH__)
    open[l].push_back({smem_dst, valid ? src : nullptr});
    if (early) land(open[l]);
#endif
  }
  CG_HD void commit(int l) {
#if !defined(__CUDA_ARCH__)
    groups[l].push_back(std::move(open[l]));
    open[l].clear();
#endif
  }
  template <int N> CG_HD void wait(int l) {
#if !defined(__CUDA_ARCH__)
    while (groups[l].size() > size_t(N)) {
      land(groups[l].front());
      groups[l].pop_front();
    }
#endif
  }
  // Land and forget `copies`.
  CG_HD void land(std::vector<Copy>& copies) {
#if !defined(__CUDA_ARCH__)
    for (const Copy& c : copies) {
      if (c.src) {
        std::memcpy(c.dst, c.src, 16);
      } else {
        std::memset(c.dst, 0, 16);
      }
    }
    copies.clear();
#endif
  }
};

}  // namespace convgru
