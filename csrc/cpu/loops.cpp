// The torch backend's two time loops on the CPU, in C++: `convgru_ext::_cpu_forward_loop` / `_cpu_backward_loop`.
//
// The same loops as `_forward_loop` and `TorchLoops.backward` in convgru_ext/backends/torch_fallback.py (that
// file describes them and decides everything around them: the projection, which convolutions run on weights
// prepacked for oneDNN (packed here, for the call), the concatenated weights).  What only C++ does here: the T
// steps run without Python between them, and the gate math between two convolutions is one pass over the frame
// (gates.h) instead of several separate elementwise ops.  float32 only; the convolutions are oneDNN's (through
// PyTorch), none is written here.
//
// Built as the CPU-only extension `convgru_ext._cpu` (setup.py; no CUDA toolkit needed).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <Python.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <optional>
#include <string>

namespace convgru_cpu {

// One float behind gates.h's register interface.
struct Scalar {
  static constexpr int64_t kWidth = 1;
  float v;
  static Scalar load(const float* p) { return {*p}; }
  static Scalar broadcast(float v) { return {v}; }
  void store(float* p) const { *p = v; }
  friend Scalar operator+(Scalar a, Scalar b) { return {a.v + b.v}; }
  friend Scalar operator-(Scalar a, Scalar b) { return {a.v - b.v}; }
  friend Scalar operator*(Scalar a, Scalar b) { return {a.v * b.v}; }
  static Scalar sigmoid(Scalar x) { return {1.0f / (1.0f + std::exp(-x.v))}; }
  static Scalar tanh(Scalar x) { return {std::tanh(x.v)}; }
};

namespace generic {
using Vec = Scalar;
#define CONVGRU_ISA_FN inline
#include "gates.h"
#undef CONVGRU_ISA_FN
}  // namespace generic

#if defined(__x86_64__) && defined(__GNUC__)
#define CONVGRU_CPU_AVX2 1
// AVX2 + FMA, compiled here whatever the build's -march (every function of it carries the target attribute,
// CONVGRU_ISA_FN) and chosen at run time (`isa()`).  exp and expm1 are computed here, not called: SLEEF's
// 1-ulp exp and tanh, which libtorch exports, are slower than the separate ATen ops they would replace
// (benchmarks/results/cpu/decisions.md).
#include <immintrin.h>
#define CONVGRU_ISA_FN inline __attribute__((target("avx2,fma")))

namespace avx2 {
// e^r - 1 for |r| <= ln(2)/2, by its Taylor series to r^7 (truncation below 2e-8 relative there).
CONVGRU_ISA_FN __m256 expm1_reduced(__m256 r) {
  __m256 q = _mm256_set1_ps(1.0f / 5040);
  for (const float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f})
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(c));
  return _mm256_mul_ps(q, r);
}

// x = n ln(2) + r with n integral and |r| <= ln(2)/2 (ln(2) split in two, the high part exact in n * ln2_hi).
CONVGRU_ISA_FN __m256 reduce(__m256 x, __m256* n) {
  *n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(0.693359375f), x);
  return _mm256_fnmadd_ps(*n, _mm256_set1_ps(-2.12194440e-4f), r);
}

// 2^n for integral n in [-126, 127]
CONVGRU_ISA_FN __m256 pow2(__m256 n) {
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_castsi256_ps(bits);
}

// e^x, x clamped to [-87, 88] (beyond it, as far as sigmoid is concerned, 0 and infinity)
CONVGRU_ISA_FN __m256 exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  __m256 n;
  const __m256 q = expm1_reduced(reduce(x, &n)), scale = pow2(n);
  return _mm256_fmadd_ps(scale, q, scale);  // 2^n (1 + q)
}

// e^x - 1, accurate near 0 too, for x in [-18, 18]
CONVGRU_ISA_FN __m256 expm1(__m256 x) {
  __m256 n;
  const __m256 q = expm1_reduced(reduce(x, &n)), scale = pow2(n);
  return _mm256_fmadd_ps(scale, q, _mm256_sub_ps(scale, _mm256_set1_ps(1.0f)));  // 2^n (1 + q) - 1
}

struct Vec {
  static constexpr int64_t kWidth = 8;
  __m256 v;
  static CONVGRU_ISA_FN Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static CONVGRU_ISA_FN Vec broadcast(float v) { return {_mm256_set1_ps(v)}; }
  CONVGRU_ISA_FN void store(float* p) const { _mm256_storeu_ps(p, v); }
  friend CONVGRU_ISA_FN Vec operator+(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend CONVGRU_ISA_FN Vec operator-(Vec a, Vec b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend CONVGRU_ISA_FN Vec operator*(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
  // 1 / (1 + e^-x)
  static CONVGRU_ISA_FN Vec sigmoid(Vec x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return {_mm256_div_ps(one, _mm256_add_ps(one, avx2::exp(_mm256_sub_ps(_mm256_setzero_ps(), x.v))))};
  }
  // e^2x - 1 over e^2x + 1, x clamped to [-9, 9] (tanh(9) rounds to 1 in float)
  static CONVGRU_ISA_FN Vec tanh(Vec x) {
    const __m256 nine = _mm256_set1_ps(9.0f);
    const __m256 clamped = _mm256_min_ps(_mm256_max_ps(x.v, _mm256_sub_ps(_mm256_setzero_ps(), nine)), nine);
    const __m256 e = avx2::expm1(_mm256_add_ps(clamped, clamped));
    return {_mm256_div_ps(e, _mm256_add_ps(e, _mm256_set1_ps(2.0f)))};
  }
};
#include "gates.h"
}  // namespace avx2
#undef CONVGRU_ISA_FN
#endif

// ------------------------------------------------------------------------------ instruction set

enum class Isa : int { kUnset = -1, kGeneric = 0, kAvx2 = 1 };
std::atomic<int> forced_isa{static_cast<int>(Isa::kUnset)};

bool has_avx2() {
#ifdef CONVGRU_CPU_AVX2
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

Isa isa() {
  const int forced = forced_isa.load();
  if (forced != static_cast<int>(Isa::kUnset)) return static_cast<Isa>(forced);
  return has_avx2() ? Isa::kAvx2 : Isa::kGeneric;
}

// `_cpu_gate_isa(str? force)`: the gate math's instruction set ("avx2" or "generic"); `force` picks one for
// this process ("auto": the best this CPU has), so that a test runs both on one machine.
std::string gate_isa(std::optional<std::string> force) {
  if (force.has_value()) {
    if (*force == "auto") {
      forced_isa.store(static_cast<int>(Isa::kUnset));
    } else if (*force == "generic") {
      forced_isa.store(static_cast<int>(Isa::kGeneric));
    } else if (*force == "avx2") {
      TORCH_CHECK(has_avx2(), "_cpu_gate_isa: this CPU (or build) has no AVX2 and FMA");
      forced_isa.store(static_cast<int>(Isa::kAvx2));
    } else {
      TORCH_CHECK(false, "_cpu_gate_isa: force must be 'auto', 'generic' or 'avx2', got '", *force, "'");
    }
  }
  return isa() == Isa::kAvx2 ? "avx2" : "generic";
}

#ifdef CONVGRU_CPU_AVX2
#define CONVGRU_GATES(fn, ...) \
  (isa() == Isa::kAvx2 ? avx2::fn(__VA_ARGS__) : generic::fn(__VA_ARGS__))
#else
#define CONVGRU_GATES(fn, ...) generic::fn(__VA_ARGS__)
#endif

// ------------------------------------------------------------------------------ the loop

// Rows per task of at::parallel_for: enough channels per task that a task outweighs its scheduling.
int64_t grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)); }

// The first element of `t` (..., C, H, W), which must be channels-last and dense: its pixels are rows of
// `channels` contiguous floats.  (The Python side guarantees it; this guards the pointer arithmetic.)
float* rows(const at::Tensor& t, int64_t channels) {
  TORCH_CHECK(t.size(-3) == channels && t.movedim(-3, -1).is_contiguous(),
              "_cpu loops: expected a dense channels-last tensor of ", channels, " channels, got sizes ",
              t.sizes(), " and strides ", t.strides());
  return t.data_ptr<float>();
}

// A 1x1 kernel's convolution of a dense channels-last frame is a GEMM over its pixels: the frame as (P, I) rows,
// the weight as (O, I).
bool pointwise_kernel(const at::Tensor& weight) { return weight.size(2) == 1 && weight.size(3) == 1; }
at::Tensor as_rows(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).reshape({-1, t.size(1)}); }
at::Tensor from_rows(const at::Tensor& rows, const at::Tensor& like) {
  return rows.view({like.size(0), like.size(2), like.size(3), rows.size(1)}).permute({0, 3, 1, 2});
}
at::Tensor as_matrix(const at::Tensor& weight) { return weight.reshape({weight.size(0), weight.size(1)}); }

// `weight` prepacked for oneDNN's convolution of (B, weight.size(1), H, W) frames, for the steps of one call (the
// packed weight dies with it, so none is ever stale: torch_fallback.packed_weight says why), or none unless `pack`.
std::optional<at::Tensor> packed_for(bool pack, const at::Tensor& weight, c10::IntArrayRef padding,
                                     c10::IntArrayRef dilation, int64_t B, int64_t H, int64_t W) {
  if (!pack) return std::nullopt;
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mkldnn::_reorder_convolution_weight", "")
                             .typed<at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
                                               c10::IntArrayRef, int64_t, at::OptionalIntArrayRef)>();
  const int64_t one[2] = {1, 1};
  const std::vector<int64_t> frame{B, weight.size(1), H, W};
  return op.call(weight, padding, one, dilation, 1, frame);
}

// A 'same' stride-1 convolution with its bias: a GEMM for a 1x1 kernel; on the weight prepacked for oneDNN
// when there is one (packed_for); else at::conv2d.  Its output is channels-last and dense.
struct Conv {
  const at::Tensor& weight;
  const std::optional<at::Tensor>& bias;
  std::optional<at::Tensor> packed;
  c10::IntArrayRef padding, dilation;

  at::Tensor operator()(const at::Tensor& input) const {
    if (pointwise_kernel(weight)) {
      const at::Tensor w = as_matrix(weight).t();
      return from_rows(bias.has_value() ? at::addmm(*bias, as_rows(input), w) : at::mm(as_rows(input), w), input);
    }
    at::Tensor y;
    if (packed.has_value()) {
      static const auto op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
                                 .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                                   const std::optional<at::Tensor>&, c10::IntArrayRef,
                                                   c10::IntArrayRef, c10::IntArrayRef, int64_t, c10::string_view,
                                                   c10::List<std::optional<c10::Scalar>>,
                                                   std::optional<c10::string_view>)>();
      const int64_t one[2] = {1, 1};
      y = op.call(input, *packed, bias, padding, one, dilation, 1, "none", c10::List<std::optional<c10::Scalar>>(),
                  std::nullopt);
    } else {
      y = at::conv2d(input, weight, bias, 1, padding, dilation, 1);
    }
    return y.contiguous(at::MemoryFormat::ChannelsLast);  // no copy when oneDNN returned it so
  }

  // conv(input) + other: where the weight is packed (oneDNN's "add" post-op) or the kernel 1x1 (a GEMM), added in
  // place into `buffer` (of the call: no tensor per step, whose pages malloc would hand back and fault in again),
  // after copying `other` there; else a new tensor, `other` added to it.  No bias (the callers' is in `other`).
  at::Tensor plus(const at::Tensor& other, const at::Tensor& input, const at::Tensor& buffer) const {
    TORCH_CHECK(!bias.has_value(), "_cpu loops: internal error (a bias with an accumulating convolution)");
    if (!packed.has_value() && !pointwise_kernel(weight)) return (*this)(input).add_(other);
    buffer.copy_(other);
    if (pointwise_kernel(weight)) {  // the rows of `buffer` are a view: the GEMM accumulates in place
      as_rows(buffer).addmm_(as_rows(input), as_matrix(weight).t());
      return buffer;
    }
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mkldnn::_convolution_pointwise_", "binary")
                               .typed<at::Tensor&(at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const std::optional<at::Tensor>&, c10::IntArrayRef,
                                                  c10::IntArrayRef, c10::IntArrayRef, int64_t, c10::string_view,
                                                  std::optional<c10::Scalar>, std::optional<c10::string_view>,
                                                  c10::List<std::optional<c10::Scalar>>,
                                                  std::optional<c10::string_view>)>();
    const int64_t one[2] = {1, 1};
    at::Tensor target = buffer;
    op.call(target, input, *packed, bias, padding, one, dilation, 1, "add", std::nullopt, std::nullopt,
            c10::List<std::optional<c10::Scalar>>(), std::nullopt);
    return buffer;
  }
};

// d conv(h, weight) / d h for the output gradient g (dense channels-last): with `pack`, a forward convolution with
// the weight flipped in space, transposed in channels and packed (torch_fallback._DataGrad says why), else
// convolution_backward.  Dense channels-last.
struct DataGrad {
  const at::Tensor& weight;
  std::optional<at::Tensor> packed;
  c10::IntArrayRef padding, dilation;

  DataGrad(const at::Tensor& weight, bool pack, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t B,
           int64_t H, int64_t W)
      : weight(weight),
        packed(pack ? packed_for(true, weight.flip({2, 3}).transpose(0, 1).contiguous(), padding, dilation, B, H, W)
                    : std::nullopt),
        padding(padding),
        dilation(dilation) {}

  at::Tensor operator()(const at::Tensor& g, const at::Tensor& h) const {
    if (pointwise_kernel(weight)) return from_rows(at::mm(as_rows(g), as_matrix(weight)), g);
    if (packed.has_value()) {
      const std::optional<at::Tensor> no_bias;
      return Conv{weight, no_bias, packed, padding, dilation}(g);  // `weight` only tells 1x1 kernels apart
    }
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0};
    at::Tensor d = std::get<0>(at::convolution_backward(g, h, weight, std::nullopt, one, padding, dilation, false,
                                                        zero, 1, {true, false, false}));
    return d.contiguous(at::MemoryFormat::ChannelsLast);
  }
};

// A dense channels-last (..., C, H, W) tensor of logical `sizes`, uninitialised.
at::Tensor empty_cl(const at::Tensor& like, std::vector<int64_t> sizes) {
  const int64_t n = sizes.size();
  std::vector<int64_t> physical(sizes.begin(), sizes.end() - 3), order;
  physical.insert(physical.end(), {sizes[n - 2], sizes[n - 1], sizes[n - 3]});
  for (int64_t i = 0; i < n - 3; ++i) order.push_back(i);
  order.insert(order.end(), {n - 1, n - 3, n - 2});
  return at::empty(physical, like.options()).permute(order);
}

// x (T, B, Cin, H, W), gx (T, B, 3C, H, W) or none, h0 (B, C, H, W): channels-last, float32, on the CPU.
// reset "before" with gx:  a = U_rz (2C, C, kh, kw), b = U_n (C, C, kh, kw), no biases (they are in gx);
// reset "before", no gx:   a = [W_rz | U_rz] (2C, Cin + C, ...) with b_rz, b = [W_n | U_n] with b_n, each
//                          convolving cat([x_t, h]) (then cat([x_t, r*h]));
// reset "after":           a = U (3C, C, ...) with (0, 0, b_hn); gx required; b unused.
// pack_*: run that convolution on its weight prepacked for oneDNN (packed_for).  Returns out (T, B, C, H, W)
// and, with keep_gates, gates (T, B, G*C, H, W) as the op contract defines them (convgru_ext/backends/_op.py),
// else an empty tensor; both channels-last.
std::tuple<at::Tensor, at::Tensor> forward_loop(
    const at::Tensor& x, const std::optional<at::Tensor>& gx, const at::Tensor& h0, const at::Tensor& w_a,
    const std::optional<at::Tensor>& b_a, bool pack_a, const std::optional<at::Tensor>& w_b,
    const std::optional<at::Tensor>& b_b, bool pack_b, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    bool reset_after, bool keep_gates) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && h0.scalar_type() == at::kFloat,
              "_cpu_forward_loop: float32 CPU tensors only");
  const int64_t T = x.size(0), B = x.size(1), Cin = x.size(2), H = x.size(3), W = x.size(4), C = h0.size(1);
  const int64_t P = B * H * W;
  TORCH_CHECK(!reset_after || gx.has_value(), "_cpu_forward_loop: reset 'after' needs the projection gx");
  TORCH_CHECK(reset_after || w_b.has_value(), "_cpu_forward_loop: reset 'before' needs its second weight");
  const int64_t G = reset_after ? 4 : 3;
  const at::Tensor out = empty_cl(x, {T, B, C, H, W});
  const at::Tensor gates = keep_gates ? empty_cl(x, {T, B, G * C, H, W}) : x.new_empty({0});
  if (T == 0) return {out, gates};
  float* gates_t = keep_gates ? gates.data_ptr<float>() : nullptr;  // advanced by a step per step
  const bool hoisted = gx.has_value();
  const float* g_all = hoisted ? rows(*gx, 3 * C) : nullptr;
  const int64_t g_step = P * 3 * C;
  const Conv conv_a{w_a, b_a, packed_for(pack_a, w_a, padding, dilation, B, H, W), padding, dilation};
  const int64_t grain_rows = grain(C);
  at::Tensor h = h0.contiguous(at::MemoryFormat::ChannelsLast);

  if (reset_after) {
    // each step's convolution output stays alive until the next one exists: freed first, glibc's malloc hands
    // its pages back to the kernel and the next step faults them in again
    at::Tensor previous_a;
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor a = conv_a(h);
      const float *pa = rows(a, 3 * C), *pg = g_all + t * g_step, *ph = rows(h, C);
      float* po = out.data_ptr<float>() + t * P * C;
      at::parallel_for(0, P, grain_rows, [&](int64_t begin, int64_t end) {
        CONVGRU_GATES(reset_after_step, begin, end, C, pa, 3 * C, pg, 3 * C, ph, C, po, C, gates_t);
      });
      h = out[t];
      previous_a = a;
      if (keep_gates) gates_t += P * G * C;
    }
    return {out, gates};
  }

  const Conv conv_b{*w_b, b_b, packed_for(pack_b, *w_b, padding, dilation, B, H, W), padding, dilation};
  // conv_b's input: r*h alone (hoisted), or [x_t | r*h] (the concatenated form), which also serves conv_a as
  // [x_t | h] before the gate pass overwrites h with r*h
  const int64_t width = hoisted ? C : Cin + C;
  const at::Tensor buffer = empty_cl(x, {B, width, H, W});
  // hoisted: each step's pre-activations, gx's block plus the convolution (Conv::plus)
  at::Tensor pre_rz, pre_n;
  if (hoisted) {
    pre_rz = empty_cl(x, {B, 2 * C, H, W});
    pre_n = empty_cl(x, {B, C, H, W});
  }
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor a;
    if (hoisted) {
      a = conv_a.plus((*gx)[t].narrow(1, 0, 2 * C), h, pre_rz);
    } else {
      buffer.narrow(1, 0, Cin).copy_(x[t]);
      buffer.narrow(1, Cin, C).copy_(h);
      a = conv_a(buffer);
    }
    float* pa = rows(a, 2 * C);
    const float* ph = rows(h, C);
    float* prh = buffer.data_ptr<float>() + (hoisted ? 0 : Cin);
    at::parallel_for(0, P, grain_rows, [&](int64_t begin, int64_t end) {
      CONVGRU_GATES(reset_gate, begin, end, C, pa, 2 * C, ph, C, prh, width, gates_t);
    });
    at::Tensor b;
    if (hoisted) {
      b = conv_b.plus((*gx)[t].narrow(1, 2 * C, C), buffer, pre_n);
    } else {
      b = conv_b(buffer);
    }
    const float* pb = rows(b, C);
    float* po = out.data_ptr<float>() + t * P * C;
    at::parallel_for(0, P, grain_rows, [&](int64_t begin, int64_t end) {
      CONVGRU_GATES(update, begin, end, C, pb, C, pa + C, 2 * C, ph, C, po, C, gates_t);
    });
    h = out[t];
    if (keep_gates) gates_t += P * G * C;
  }
  return {out, gates};
}

// grad_out, out (T, B, C, H, W), h0 (B, C, H, W), gates (T, B, G*C, H, W): dense channels-last, float32.
// reset "before": a = U_rz (2C, C, kh, kw), b = U_n; "after": a = U (3C, C, ...), b unused.  pack_*: run that
// data gradient on a prepacked weight (DataGrad).
// Returns dgh (T, B, 3C, H, W), dxn (T, B, C, H, W) under "after" else an empty tensor, dh0 (B, C, H, W): the
// backward loop's outputs in the op contract (convgru_ext/backends/_op.py).
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_loop(
    const at::Tensor& grad_out, const at::Tensor& h0, const at::Tensor& out, const at::Tensor& gates,
    const at::Tensor& w_a, bool pack_a, const std::optional<at::Tensor>& w_b, bool pack_b, c10::IntArrayRef padding,
    c10::IntArrayRef dilation, bool reset_after) {
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == at::kFloat, "_cpu_backward_loop: float32 CPU only");
  TORCH_CHECK(reset_after || w_b.has_value(), "_cpu_backward_loop: reset 'before' needs its second weight");
  const int64_t T = out.size(0), B = out.size(1), C = out.size(2), H = out.size(3), W = out.size(4);
  const int64_t P = B * H * W, G = reset_after ? 4 : 3, grain_rows = grain(C);
  const at::Tensor go = grad_out.movedim(2, -1).contiguous().movedim(-1, 2);  // dense channels-last (a view if so)
  const at::Tensor dgh = empty_cl(out, {T, B, 3 * C, H, W});
  const at::Tensor dxn = reset_after ? empty_cl(out, {T, B, C, H, W}) : out.new_empty({0});
  at::Tensor dh = go[T - 1].clone(at::MemoryFormat::ChannelsLast);  // dL/dh_t, going back
  const DataGrad grad_a{w_a, pack_a, padding, dilation, B, H, W};
  std::optional<DataGrad> grad_b;
  if (!reset_after) grad_b.emplace(*w_b, pack_b, padding, dilation, B, H, W);
  // "before": the dense inputs of U_rz's and U_n's data gradients (dgh's blocks are strided)
  at::Tensor d_rz, d_n;
  if (!reset_after) {
    d_rz = empty_cl(out, {B, 2 * C, H, W});
    d_n = empty_cl(out, {B, C, H, W});
  }
  const float* pgo = rows(go, C);
  const float* pgates = rows(gates, G * C);
  float* pdh = rows(dh, C);
  for (int64_t t = T - 1; t >= 0; --t) {
    const at::Tensor h_prev = t > 0 ? out[t - 1] : h0.contiguous(at::MemoryFormat::ChannelsLast);
    const float *ph = rows(h_prev, C), *pg = pgates + t * P * G * C;
    float* pdgh = dgh.data_ptr<float>() + t * P * 3 * C;
    float* pdxn = reset_after ? dxn.data_ptr<float>() + t * P * C : nullptr;
    float* prz = reset_after ? nullptr : d_rz.data_ptr<float>();
    float* pn = reset_after ? nullptr : d_n.data_ptr<float>();
    at::parallel_for(0, P, grain_rows, [&](int64_t begin, int64_t end) {
      CONVGRU_GATES(z_n_grad, begin, end, C, G, pg, ph, pdh, pdgh, prz, pn, pdxn);
    });
    at::Tensor drh, dh_conv;
    if (reset_after) {
      dh_conv = grad_a(dgh[t], h_prev);
    } else {
      drh = (*grad_b)(d_n, h_prev);
      const float* pdrh = rows(drh, C);
      at::parallel_for(0, P, grain_rows, [&](int64_t begin, int64_t end) {
        CONVGRU_GATES(r_grad, begin, end, C, pdrh, ph, pg, pdgh, prz);
      });
      dh_conv = grad_a(d_rz, h_prev);
    }
    const float* pconv = rows(dh_conv, C);
    const float* pdrh = reset_after ? nullptr : drh.data_ptr<float>();
    const float* pnext = t > 0 ? pgo + (t - 1) * P * C : nullptr;
    at::parallel_for(0, P, grain_rows, [&](int64_t begin, int64_t end) {
      CONVGRU_GATES(state_grad, begin, end, C, G, pconv, pdrh, pg, pnext, pdh);
    });
  }
  return {dgh, dxn, dh};
}

}  // namespace convgru_cpu

TORCH_LIBRARY_FRAGMENT(convgru_ext, m) {
  m.def("_cpu_forward_loop(Tensor x, Tensor? gx, Tensor h0, Tensor w_a, Tensor? b_a, bool pack_a, Tensor? w_b, "
        "Tensor? b_b, bool pack_b, int[] padding, int[] dilation, bool reset_after, bool keep_gates) -> "
        "(Tensor, Tensor)");
  m.def("_cpu_backward_loop(Tensor grad_out, Tensor h0, Tensor out, Tensor gates, Tensor w_a, bool pack_a, "
        "Tensor? w_b, bool pack_b, int[] padding, int[] dilation, bool reset_after) -> (Tensor, Tensor, Tensor)");
  m.def("_cpu_gate_isa(str? force=None) -> str", &convgru_cpu::gate_isa);
}

TORCH_LIBRARY_IMPL(convgru_ext, CPU, m) {
  m.impl("_cpu_forward_loop", &convgru_cpu::forward_loop);
  m.impl("_cpu_backward_loop", &convgru_cpu::backward_loop);
}

// Importing the extension as a Python module (`import convgru_ext._cpu`) runs the registrations above; the
// module itself is empty.
PyMODINIT_FUNC PyInit__cpu(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu",
                                      "convgru-ext's CPU loops; importing it registers their ops", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
