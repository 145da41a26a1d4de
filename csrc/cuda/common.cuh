// dtype helpers, gate math and asynchronous copies, usable on the device and (for the
// CPU emulator) on the host.  Compiled by nvcc only.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../convgru.h"

#define CG_HD __host__ __device__ __forceinline__

namespace convgru {

// ---- per-Math compile-time configuration ----
//   T: element type in memory; Acc: accumulation / epilogue type;
//   BM x BK: the A tile of one K-step, BK x (NG*BN): the B tile; STAGES: shared-memory
//   pipeline depth; KF: the tensor-core fragment's K (0 = CUDA-core FMA).
template <Math kMath> struct MathCfg;
template <> struct MathCfg<Math::F16> {
  using T = __half; using Acc = float;
  static constexpr int STAGES = 3, KF = 16;
};
template <> struct MathCfg<Math::BF16> {
  using T = __nv_bfloat16; using Acc = float;
  static constexpr int STAGES = 3, KF = 16;
};
template <> struct MathCfg<Math::TF32> {
  using T = float; using Acc = float;
  static constexpr int STAGES = 3, KF = 8;
};
template <> struct MathCfg<Math::F32> {
  using T = float; using Acc = float;
  static constexpr int STAGES = 2, KF = 0;
};
template <> struct MathCfg<Math::F64> {
  using T = double; using Acc = double;
  static constexpr int STAGES = 2, KF = 0;
};

// ---- conversions between the storage type and the accumulation type ----
CG_HD float to_acc(__half v) { return __half2float(v); }
CG_HD float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
CG_HD float to_acc(float v) { return v; }
CG_HD double to_acc(double v) { return v; }

template <typename T> struct Store;
template <> struct Store<__half> { static CG_HD __half from(float v) { return __float2half_rn(v); } };
template <> struct Store<__nv_bfloat16> {
  static CG_HD __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};
template <> struct Store<float> { static CG_HD float from(float v) { return v; } };
template <> struct Store<double> { static CG_HD double from(double v) { return v; } };

// v rounded to T and back: the value later kernels will read from memory.
template <typename T, typename A> CG_HD A round_to(A v) { return to_acc(Store<T>::from(v)); }

// ---- gate math in the accumulation type ----
CG_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
CG_HD double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
CG_HD float tanh_(float x) { return tanhf(x); }
CG_HD double tanh_(double x) { return tanh(x); }

// c + a*b, fused on the device (the CPU emulator need not match the last bit).
CG_HD float fma_(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return fmaf(a, b, c);
#else
  return a * b + c;
#endif
}
CG_HD double fma_(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return fma(a, b, c);
#else
  return a * b + c;
#endif
}

// What the tensor cores see of a float in TF32 mode: round to nearest (ties away from
// zero) to 10 mantissa bits, as cvt.rna.tf32.f32 does.  Host only (the emulator).
inline float round_tf32_host(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) {  // finite
    u = (u + 0x1000u) & 0xffffe000u;
  }
  std::memcpy(&x, &u, 4);
  return x;
}

// ---- global -> shared copies: cp.async (sm_80+) on the device, memcpy on the host ----

// Copy 16 bytes, or write 16 zero bytes when !valid (src is then not read).
CG_HD void copy16(void* smem_dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__)
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
#else
  if (valid) {
    std::memcpy(smem_dst, src, 16);
  } else {
    std::memset(smem_dst, 0, 16);
  }
#endif
}

CG_HD void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Wait until at most N committed groups of this thread are still in flight.
template <int N> CG_HD void cp_async_wait() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

template <typename I> CG_HD I ceil_div(I a, I b) { return (a + b - 1) / b; }

}  // namespace convgru
