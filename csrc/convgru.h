// convgru-ext CUDA backend: the one parameter struct every kernel takes, and the launchers.
//
// What is verified where: convgru_ext/backends/cuda.py's `experimental` flag (README's backend table).
// The kernels run on the CPU through the emulator (csrc/cuda/emulate_*.cu); what runs only on a
// GPU: the header comment of csrc/cuda/gemm.cuh.
//
// Notation (convgru_ext/backends/_op.py holds the op contract and the design around these loops):
//   T steps, B frames, C hidden channels, H x W pixels, M = B*H*W pixels per step,
//   kernel kh x kw ("taps" = kh*kw), dilation (dil_h, dil_w), "same" padding
//   pad = dil * (k - 1) / 2, gate order r, z, n.
//   Every activation is channels-last: a (..., C, H, W) tensor is dense in memory as
//   (..., H, W, C), so "one step of it" is an (M, C) row-major matrix and a pixel's
//   channels are contiguous.
//
// One step of the recurrence is an implicit GEMM (a convolution without im2col):
//   acc[m, g, c] = sum_{tap, k} A[nbr(m, tap), k] * Wp[tap, k, g, c]
// where nbr(m, tap) is pixel m shifted by tap's offset (zero outside the image),
// A is an (M, a_channels) activation and Wp the weight packed by ops.cpp.  One CTA
// computes BM pixels x BN channels of NG gates at once, so the epilogue has every gate of
// a (pixel, channel) in hand and applies the gate math there.
//
//   kernel     NG  A (this step)                      epilogue
//   FwdRZ       2  h_{t-1}                            r, z -> gates; r*h -> rh         (reset "before")
//   FwdN        1  rh = r*h_{t-1}                     n = tanh(.), h_t -> out          (reset "before")
//   FwdAfter    3  h_{t-1}                            r, z, n, U_n*h+b_hn -> gates; h_t (reset "after")
//   BwdInit     -  (elementwise)                      dh_T = grad_out[T-1]; gate grads of step T-1
//   BwdN        1  dgh[t] n block (conv^T)            dr; partial dh_{t-1}              (reset "before")
//   BwdRZ       1  dgh[t] r, z blocks (conv^T)        dh_{t-1}; gate grads of step t-1 (reset "before")
//   BwdAfter    1  dgh[t] r, z, n blocks (conv^T)     dh_{t-1}; gate grads of step t-1 (reset "after")
//
// The backward's data gradient is the same GEMM with the weight transposed and its taps
// flipped (odd kernels with symmetric padding), so one kernel template serves both.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace convgru {

// How a step's GEMM is computed; chosen from the dtype (and TF32 flag) on the host.
enum class Math : int {
  F16 = 0,   // half inputs, tensor cores (mma.sync m16n8k16), fp32 accumulation
  BF16 = 1,  // bfloat16 inputs, tensor cores (mma.sync m16n8k16), fp32 accumulation
  TF32 = 2,  // float inputs rounded to TF32, tensor cores (mma.sync m16n8k8), fp32 accumulation
  F32 = 3,   // float inputs, exact fp32 FMA on the CUDA cores
  F64 = 4,   // double inputs, fp64 FMA on the CUDA cores
};

enum class Kernel : int { FwdRZ = 0, FwdN, FwdAfter, BwdInit, BwdN, BwdRZ, BwdAfter };

// ---- tile sizes the host needs to pack weights (the kernels use the same functions) ----

// Channels of one tap a K-step reduces over (BK); packed weights are padded to a multiple.
constexpr int block_k(Math m) { return m == Math::F16 || m == Math::BF16 ? 32 : m == Math::F64 ? 8 : 16; }
// Pixels per CTA (BM).
constexpr int block_m(Math m) { return m == Math::F64 ? 64 : 128; }
// Gates a CTA computes together (the N dimension holds NG blocks of BN channels).
constexpr int gates_in_n(Kernel k) { return k == Kernel::FwdRZ ? 2 : k == Kernel::FwdAfter ? 3 : 1; }
// Output channels per gate per CTA (BN) of the narrow or the wide tile (csrc/cuda/gemm.cuh's Tile);
// packed weights are padded to a multiple of the one the launch takes.
constexpr int block_n(Kernel k, bool wide) {
  return (k == Kernel::FwdRZ || k == Kernel::FwdAfter ? 32 : 64) * (wide ? 2 : 1);
}
// Whether math m has a wide tile: the tensor-core maths.
constexpr bool has_wide_tile(Math m) { return m == Math::F16 || m == Math::BF16 || m == Math::TF32; }
// The tile a launch takes for C output channels: the wide one where math m has it and the narrow
// one would take more than one CTA per pixel tile (so C <= 32, or 64 for a one-gate kernel, keeps
// the narrow tile and its padding).
constexpr bool wide_tile(Math m, Kernel k, int64_t C) { return has_wide_tile(m) && C > block_n(k, false); }

// Everything a kernel reads, for one time step.  The host fills the sizes once and the
// per-step pointers before each launch (see ops.cpp).  "T" is the input dtype (half,
// bfloat16, float or double), "acc" is float for the first three and double for double.
// Pointers are untyped so that this header compiles without torch or CUDA types.
struct Params {
  // ---- sizes (fixed for a call) ----
  int B, H, W;        // frames, height, width
  int64_t M;          // B*H*W: pixels per step (rows of every (M, .) matrix below)
  int C;              // hidden channels
  int G;              // channel blocks in `gates`: 3 (r, z, n) or 4 (also U_n*h + b_hn, reset "after")
  int kh, kw, taps;   // kernel size, taps = kh*kw
  int dil_h, dil_w;   // dilation
  int pad_h, pad_w;   // "same" padding, dil*(k-1)/2

  // ---- the GEMM's A operand: an activation, read at shifted pixels ----
  const void* a;      // T (M, a_stride): A[m, k] = a[m*a_stride + k] for k < a_channels
  int64_t a_stride;   // elements between consecutive pixels of `a`
  int a_channels;     // channels of one tap in the reduction (K = taps*a_channels)
  int a_vec_ok;       // 1 when `a`, a_stride and a_channels allow 16-byte loads

  // ---- the GEMM's B operand: a weight packed by ops.cpp ----
  const void* w;      // T (taps, k_pad, NG, n_pad), zero padded; the forward holds
                      //   w[tap, k, g, c] = weight_hh[(g0 + g)*C + c, k, tap],
                      //   the backward w[tap, k, 0, c] = weight_hh[k0 + k, c, taps-1-tap]
  int k_pad;          // a_channels rounded up to a multiple of block_k
  int n_pad;          // C rounded up to a multiple of block_n(kernel, wide_tile(math, kernel, C))

  // ---- step t's tensors (every (M, .) one is channels-last, one step's slice) ----
  const void* gx;      // T (M, 3C): input projection W*x_t + biases (b_hn kept out for reset "after")
  const void* h;       // T (M, C): h_{t-1}, the state entering step t
  const void* bias_hn; // T (C,): b_hn for reset "after", or null (no bias)
  void* gates;         // T (M, G*C): step t's saved gates (forward writes, backward reads)
  void* out;           // T (M, C): h_t (forward)
  void* rh;            // T (M, C): r*h_{t-1} scratch (forward, reset "before")
  void* dgh;           // T (M, 3C): step t's gate pre-activation gradients (dr, dz, dn)
  void* dh;            // acc (M, C): the running state gradient dL/dh (backward)

  // ---- step t-1's tensors (backward: the epilogue that completes dh_{t-1} also ----
  // ---- computes step t-1's gate gradients; BwdInit uses these for step T-1)    ----
  int has_prev;                // 1 when step t-1 exists (t > 0)
  const void* grad_out_prev;   // T (M, C): grad_out[t-1]
  const void* gates_prev;      // T (M, G*C): gates[t-1]
  const void* h_prev;          // T (M, C): h_{t-2}, the state entering step t-1
  void* dgh_prev;              // T (M, 3C): dgh[t-1]
  void* dxn_prev;              // T (M, C): reset "after": step t-1's dn (the input conv's n-gradient)

  int reset_after;             // 1 for reset "after" (BwdInit's gate math)
};

// Launch one kernel on `stream` (every launch checked).  Defined per dtype in
// csrc/cuda/{forward,backward}_{f16,bf16,f32,f64}.cu so that they compile in parallel.
void launch_forward_f16(Math math, Kernel kernel, const Params& p, cudaStream_t stream);
void launch_forward_bf16(Math math, Kernel kernel, const Params& p, cudaStream_t stream);
void launch_forward_f32(Math math, Kernel kernel, const Params& p, cudaStream_t stream);
void launch_forward_f64(Math math, Kernel kernel, const Params& p, cudaStream_t stream);
void launch_backward_f16(Math math, Kernel kernel, const Params& p, cudaStream_t stream);
void launch_backward_bf16(Math math, Kernel kernel, const Params& p, cudaStream_t stream);
void launch_backward_f32(Math math, Kernel kernel, const Params& p, cudaStream_t stream);
void launch_backward_f64(Math math, Kernel kernel, const Params& p, cudaStream_t stream);

// Run one kernel's whole body on the CPU: every lane of every warp of every CTA, with the
// device primitives replaced by CPU implementations of their data mappings (what still runs
// only on a GPU: the header comment of csrc/cuda/gemm.cuh).  For tests only: slow.
// Defined in csrc/cuda/emulate_*.cu.
void emulate_forward(Math math, Kernel kernel, const Params& p);
void emulate_backward(Math math, Kernel kernel, const Params& p);

// The emulator's schedule (csrc/cuda/gemm.cuh's header comment), for every emulated launch in
// this process until changed; Late by default.  Defined in csrc/cuda/emulate_primitives.cu.
enum class EmulatedSchedule : int { Late = 0, Early = 1 };
void set_emulated_schedule(EmulatedSchedule s);
EmulatedSchedule emulated_schedule();

// ---- test-only entry points to the primitives' CPU implementations (csrc/cuda/mma.cuh; ----
// ---- defined in csrc/cuda/emulate_primitives.cu; tests/test_cuda_primitives.py)        ----

// ldmatrix.x4 [.trans] of one warp: lane l's row address is smem + row_offsets[l] (16-bit
// elements); out[l][j]: lane l's register j (32 lanes x 4 registers).
void emulate_ldmatrix_x4(const uint16_t* smem, const int64_t* row_offsets, bool trans, uint32_t* out);
// mma.sync of one warp in math F16, BF16 (m16n8k16) or TF32 (m16n8k8): d = a*b + c with
// a (32 x 4), b (32 x 2), c and d (32 x 4) each lane's fragment registers.
void emulate_mma_sync(Math math, const uint32_t* a, const uint32_t* b, const float* c, float* d);
// One K-step of a CTA's products as the GEMM kernel `kernel` (forward) computes them in math
// `math` with the narrow or the wide tile: a (BM, BK) and b (BK, NG*BN) row-major in the math's
// storage type are written to the kernel's swizzled shared layout, every warp's accumulator
// computes, and the registers are read back through the epilogue's mapping into out (BM, NG*BN)
// row-major double.
void emulate_cta_product(Math math, Kernel kernel, bool wide, const void* a, const void* b, double* out);
// The shared-memory loads of every warp's tensor-core fragments for one K-step of GEMM kernel `kernel`
// in math F16, BF16 or TF32 with the narrow or the wide tile, as the emulated kernel issues them: rows
// of (warp, instruction, lane, byte offset, bytes), flattened; instruction n of a warp is each lane's
// nth ldmatrix or lds.
std::vector<int64_t> emulate_fragment_loads(Math math, Kernel kernel, bool wide);

}  // namespace convgru
