// dtype helpers and gate math, usable on the device and (for the CPU emulator) on the host.
// Compiled by nvcc only.  The device primitives (fragments, cp.async) are in mma.cuh.
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
//   pipeline depth (>= 2; the emulator tests cover each depth used here); KF: the
//   tensor-core fragment's K (mma.sync m16n8k16 or m16n8k8; 0 = CUDA-core FMA).
template <Math kMath> struct MathCfg;
template <> struct MathCfg<Math::F16> {
  using T = __half; using Acc = float;
  static constexpr int STAGES = 4, KF = 16;
};
template <> struct MathCfg<Math::BF16> {
  using T = __nv_bfloat16; using Acc = float;
  static constexpr int STAGES = 4, KF = 16;
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
// For a 16-bit storage type T the gates are rounded to 8 (bf16) or 11 (f16) significant bits,
// so they take the fast forms: sigmoid = 1/(1 + e^-x) and tanh = 1 - 2/(1 + e^2x) with the
// device's __expf and __fdividef (relative errors of a few 1e-7 where |tanh| is not tiny, 1e-7
// absolute near 0; the emulator evaluates the same formulas with expf and an exact division).
// fp32 and fp64 storage keep expf / tanhf and exp / tanh.
template <typename T> CG_HD float gate_sigmoid(float x) {
  if constexpr (sizeof(T) == 2) {
#if defined(__CUDA_ARCH__)
    return __fdividef(1.0f, 1.0f + __expf(-x));
#else
    return 1.0f / (1.0f + expf(-x));
#endif
  } else {
    return 1.0f / (1.0f + expf(-x));
  }
}
template <typename T> CG_HD float gate_tanh(float x) {
  if constexpr (sizeof(T) == 2) {
#if defined(__CUDA_ARCH__)
    return 1.0f - __fdividef(2.0f, 1.0f + __expf(2.0f * x));
#else
    return 1.0f - 2.0f / (1.0f + expf(2.0f * x));
#endif
  } else {
    return tanhf(x);
  }
}
template <typename T> CG_HD double gate_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
template <typename T> CG_HD double gate_tanh(double x) { return tanh(x); }

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

template <typename I> CG_HD I ceil_div(I a, I b) { return (a + b - 1) / b; }

}  // namespace convgru
