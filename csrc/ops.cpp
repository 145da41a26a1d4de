// convgru-ext CUDA backend: op schemas, argument checks, and the time loops that launch the
// kernels of csrc/cuda/ (see convgru.h for what each kernel computes).
//
//   convgru_ext::cuda_forward / cuda_backward: the op pair of convgru_ext/backends/_op.py
//     (same schemas as every fused backend).  CUDA tensors run the kernels; CPU tensors
//     raise an error that says so.  Fake kernels and autograd are registered in Python
//     (convgru_ext/backends/cuda.py).
//   convgru_ext::_cuda_emulate_forward / _cuda_emulate_backward: the same time loops on
//     CPU tensors with every kernel replaced by its CPU emulation (tests only).
//
// UNVERIFIED ON A GPU: the CUDA path has been compiled, never run (see convgru.h).
#include <Python.h>

#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "convgru.h"
#include "tf32.h"

namespace convgru {
namespace {

using at::IntArrayRef;
using at::Tensor;
using OptTensor = std::optional<Tensor>;
using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// ---- layout: logical (..., C, H, W) channels-last <-> dense storage (..., H, W, C) ----

// The dense (..., H, W, C) storage of a logical (..., C, H, W) tensor; no copy if it is
// already channels-last and dense.
Tensor physical(const Tensor& t) {
  const int64_t d = t.dim();
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < d - 3; ++i) perm.push_back(i);
  perm.insert(perm.end(), {d - 2, d - 1, d - 3});
  return t.permute(perm).contiguous();
}

// The logical (..., C, H, W) view of a dense (..., H, W, C) tensor (what _op.py's
// empty_channels_last returns, so real and fake outputs have the same strides).
Tensor logical(const Tensor& t) {
  const int64_t d = t.dim();
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < d - 3; ++i) perm.push_back(i);
  perm.insert(perm.end(), {d - 1, d - 3, d - 2});
  return t.permute(perm);
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---- argument checks (the Python contract layer checks first; these guard direct calls) ----

struct Dims {
  int64_t T, B, Cin, C, H, W, kh, kw;
  int64_t dil_h, dil_w, pad_h, pad_w;
  bool reset_after;
  int64_t G() const { return reset_after ? 4 : 3; }
  int64_t M() const { return B * H * W; }
};

void check_tensor(const char* op, const char* name, const Tensor& t, int64_t ndim, const char* shape,
                  const Tensor& x) {
  TORCH_CHECK(t.dim() == ndim, op, ": `", name, "` must be ", ndim, "-D ", shape, "; got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": `", name, "` has dtype ", t.scalar_type(),
              " but `x` has ", x.scalar_type(), "; they must match");
  TORCH_CHECK(t.device() == x.device(), op, ": `", name, "` is on ", t.device(), " but `x` is on ", x.device(),
              "; they must be on one device");
}

Dims check_args(const char* op, const Tensor& x, const Tensor& h0, const Tensor& weight_ih, const Tensor& weight_hh,
                const OptTensor& bias_ih, const OptTensor& bias_hh, IntArrayRef dilation, bool reset_after) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat || dt == at::kDouble, op,
              ": `x` must be float16, bfloat16, float32 or float64; got ", dt);
  TORCH_CHECK(x.dim() == 5, op, ": `x` must be 5-D (T, B, C_in, H, W); got shape ", x.sizes());
  check_tensor(op, "h0", h0, 4, "(B, hidden, H, W)", x);
  check_tensor(op, "weight_ih", weight_ih, 4, "(3*hidden, C_in, kh, kw)", x);
  check_tensor(op, "weight_hh", weight_hh, 4, "(3*hidden, hidden, kh, kw)", x);
  Dims d;
  d.T = x.size(0), d.B = x.size(1), d.Cin = x.size(2), d.H = x.size(3), d.W = x.size(4);
  d.C = weight_hh.size(1), d.kh = weight_hh.size(2), d.kw = weight_hh.size(3);
  d.reset_after = reset_after;
  TORCH_CHECK(d.C >= 1 && weight_hh.size(0) == 3 * d.C, op,
              ": `weight_hh` must have shape (3*hidden, hidden, kh, kw) with hidden >= 1; got ", weight_hh.sizes());
  TORCH_CHECK(d.kh % 2 == 1 && d.kw % 2 == 1, op, ": `weight_hh` must have odd kernel sizes; got ",
              weight_hh.sizes());
  TORCH_CHECK(weight_ih.sizes() == IntArrayRef({3 * d.C, d.Cin, d.kh, d.kw}), op,
              ": `weight_ih` must have shape (3*hidden, C_in, kh, kw) = (", 3 * d.C, ", ", d.Cin, ", ", d.kh, ", ",
              d.kw, "); got ", weight_ih.sizes());
  TORCH_CHECK(h0.sizes() == IntArrayRef({d.B, d.C, d.H, d.W}), op, ": `h0` must have shape (B, hidden, H, W) = (",
              d.B, ", ", d.C, ", ", d.H, ", ", d.W, "); got ", h0.sizes());
  for (const auto& [name, b] : {std::make_pair("bias_ih", &bias_ih), std::make_pair("bias_hh", &bias_hh)}) {
    if (b->has_value()) {
      check_tensor(op, name, **b, 1, "(3*hidden,)", x);
      TORCH_CHECK((*b)->size(0) == 3 * d.C, op, ": `", name, "` must have shape (", 3 * d.C, ",); got ",
                  (*b)->sizes());
    }
  }
  TORCH_CHECK(dilation.size() == 2 && dilation[0] >= 1 && dilation[1] >= 1, op,
              ": `dilation` must be two positive ints; got ", dilation);
  d.dil_h = dilation[0], d.dil_w = dilation[1];
  d.pad_h = d.dil_h * (d.kh - 1) / 2, d.pad_w = d.dil_w * (d.kw - 1) / 2;
  TORCH_CHECK(d.B * d.H * d.W * std::max<int64_t>(4 * d.C, d.Cin) < (int64_t(1) << 62), op, ": tensors too large");
  return d;
}

void check_shape(const char* op, const char* name, const Tensor& t, IntArrayRef shape, const char* layout,
                 const Tensor& x) {
  check_tensor(op, name, t, static_cast<int64_t>(shape.size()), layout, x);
  TORCH_CHECK(t.sizes() == shape, op, ": `", name, "` must have shape ", layout, " = ", shape, "; got ", t.sizes());
}

// ---- the pieces both time loops share ----

Math math_for(at::ScalarType dt, bool tf32) {
  switch (dt) {
    case at::kHalf: return Math::F16;
    case at::kBFloat16: return Math::BF16;
    case at::kFloat: return tf32 ? Math::TF32 : Math::F32;
    default: return Math::F64;
  }
}

Math parse_math(const std::string& name, at::ScalarType dt) {
  const std::vector<std::pair<std::string, Math>> names = {
      {"f16", Math::F16}, {"bf16", Math::BF16}, {"tf32", Math::TF32}, {"f32", Math::F32}, {"f64", Math::F64}};
  for (const auto& [n, m] : names) {
    if (n == name) {
      TORCH_CHECK(math_for(dt, m == Math::TF32) == m, "convgru_ext: math \"", name, "\" does not fit dtype ", dt);
      return m;
    }
  }
  TORCH_CHECK(false, "convgru_ext: math must be one of f16, bf16, tf32, f32, f64; got \"", name, "\"");
  return Math::F64;
}

Params base_params(const Dims& d) {
  Params p;
  std::memset(&p, 0, sizeof(p));
  p.B = static_cast<int>(d.B), p.H = static_cast<int>(d.H), p.W = static_cast<int>(d.W);
  p.M = d.M();
  p.C = static_cast<int>(d.C);
  p.G = static_cast<int>(d.G());
  p.kh = static_cast<int>(d.kh), p.kw = static_cast<int>(d.kw), p.taps = static_cast<int>(d.kh * d.kw);
  p.dil_h = static_cast<int>(d.dil_h), p.dil_w = static_cast<int>(d.dil_w);
  p.pad_h = static_cast<int>(d.pad_h), p.pad_w = static_cast<int>(d.pad_w);
  p.reset_after = d.reset_after;
  return p;
}

// The GEMM's A operand: `a` (M, stride) with `channels` channels per tap.
void set_a(Params& p, const Tensor& a, int64_t stride, int64_t channels) {
  const int64_t vec = 16 / a.element_size();
  p.a = a.data_ptr();
  p.a_stride = stride;
  p.a_channels = static_cast<int>(channels);
  p.a_vec_ok = reinterpret_cast<uintptr_t>(p.a) % 16 == 0 && stride % vec == 0 && channels % vec == 0;
}

void set_w(Params& p, const Tensor& packed) {
  p.w = packed.data_ptr();
  p.k_pad = static_cast<int>(packed.size(1));
  p.n_pad = static_cast<int>(packed.size(3));
}

// weight_hh's gate blocks g0 .. g0+ng as the forward GEMM's B: (taps, k_pad, ng, n_pad),
// packed[tap, k, g, c] = weight_hh[(g0 + g)*C + c, k, tap], zero padded.
Tensor pack_forward(const Tensor& weight_hh, int64_t g0, Kernel kernel, Math math) {
  const int64_t C = weight_hh.size(1), taps = weight_hh.size(2) * weight_hh.size(3);
  const int64_t ng = gates_in_n(kernel);
  Tensor u = weight_hh.reshape({3, C, C, taps}).narrow(0, g0, ng).permute({3, 2, 0, 1});
  Tensor packed = at::zeros({taps, round_up(C, block_k(math)), ng, round_up(C, block_n(kernel))},
                            weight_hh.options());
  packed.narrow(1, 0, C).narrow(3, 0, C).copy_(u);
  return packed;
}

// The backward's data gradient through weight_hh's rows k0 .. k0+kc (the gate blocks whose
// gradients form A): the transposed, tap-flipped weight (taps, k_pad, 1, n_pad),
// packed[tap, k, 0, c] = weight_hh[k0 + k, c, taps-1-tap], zero padded.
Tensor pack_backward(const Tensor& weight_hh, int64_t k0, int64_t kc, Kernel kernel, Math math) {
  const int64_t C = weight_hh.size(1), taps = weight_hh.size(2) * weight_hh.size(3);
  Tensor u = weight_hh.reshape({3 * C, C, taps}).narrow(0, k0, kc).flip({2}).permute({2, 0, 1}).unsqueeze(2);
  Tensor packed = at::zeros({taps, round_up(kc, block_k(math)), 1, round_up(C, block_n(kernel))},
                            weight_hh.options());
  packed.narrow(1, 0, kc).narrow(3, 0, C).copy_(u);
  return packed;
}

// The bias of the hoisted input convolution: b_ih plus every part of b_hh that adds to it
// (all of it for reset "before"; b_hr and b_hz for "after", where r multiplies b_hn).
OptTensor input_bias(const OptTensor& bias_ih, const OptTensor& bias_hh, bool reset_after, int64_t C) {
  OptTensor hh = bias_hh;
  if (hh && reset_after) hh = at::cat({hh->narrow(0, 0, 2 * C), at::zeros({C}, hh->options())});
  if (!bias_ih) return hh;
  if (!hh) return bias_ih;
  return *bias_ih + *hh;
}

// ---- the forward: hoisted input convolution, then per step one or two fused GEMMs ----

template <class Run>
std::tuple<Tensor, Tensor> forward_impl(const char* op, const Tensor& x_in, const Tensor& h0_in,
                                        const Tensor& weight_ih_in, const Tensor& weight_hh_in,
                                        const OptTensor& bias_ih, const OptTensor& bias_hh, IntArrayRef dilation,
                                        bool reset_after, Math math, Run&& run) {
  const Dims d = check_args(op, x_in, h0_in, weight_ih_in, weight_hh_in, bias_ih, bias_hh, dilation, reset_after);
  const int64_t T = d.T, B = d.B, C = d.C, H = d.H, W = d.W;
  const auto opts = x_in.options();
  Tensor out = at::empty({T, B, H, W, C}, opts);          // h_1 .. h_T
  Tensor gates = at::empty({T, B, H, W, d.G() * C}, opts);  // r, z, n (, U_n*h + b_hn)
  if (T == 0 || B == 0) return {logical(out), logical(gates)};

  const Tensor x = physical(x_in), h0 = physical(h0_in);
  const Tensor weight_ih = weight_ih_in.contiguous(), weight_hh = weight_hh_in.contiguous();

  // W*x_t + biases for every step at once: one convolution over T*B frames; gx is (T*B, H, W, 3C).
  const Tensor gx = physical(at::conv2d(logical(x.view({T * B, H, W, d.Cin})), weight_ih,
                                        input_bias(bias_ih, bias_hh, reset_after, C), {1, 1},
                                        {d.pad_h, d.pad_w}, {d.dil_h, d.dil_w}));

  Params p = base_params(d);
  if (reset_after) {
    const Tensor w_all = pack_forward(weight_hh, 0, Kernel::FwdAfter, math);
    const Tensor b_hn = bias_hh ? bias_hh->contiguous().narrow(0, 2 * C, C) : Tensor();
    p.bias_hn = bias_hh ? b_hn.data_ptr() : nullptr;
    set_w(p, w_all);
    for (int64_t t = 0; t < T; ++t) {
      const Tensor h = t == 0 ? h0 : out[t - 1];
      p.h = h.data_ptr(), p.gx = gx.narrow(0, t * B, B).data_ptr();
      p.gates = gates[t].data_ptr(), p.out = out[t].data_ptr();
      set_a(p, h, C, C);
      run(Kernel::FwdAfter, p);
    }
  } else {
    const Tensor w_rz = pack_forward(weight_hh, 0, Kernel::FwdRZ, math);
    const Tensor w_n = pack_forward(weight_hh, 2, Kernel::FwdN, math);
    const Tensor rh = at::empty({B, H, W, C}, opts);
    p.rh = rh.data_ptr();
    for (int64_t t = 0; t < T; ++t) {
      const Tensor h = t == 0 ? h0 : out[t - 1];
      p.h = h.data_ptr(), p.gx = gx.narrow(0, t * B, B).data_ptr();
      p.gates = gates[t].data_ptr(), p.out = out[t].data_ptr();
      set_a(p, h, C, C);
      set_w(p, w_rz);
      run(Kernel::FwdRZ, p);
      set_a(p, rh, C, C);
      set_w(p, w_n);
      run(Kernel::FwdN, p);
    }
  }
  return {logical(out), logical(gates)};
}

// d(input) and d(weight) of conv2d(input, weight) for the output gradient `grad`.
std::tuple<Tensor, Tensor> conv_backward(const Tensor& grad, const Tensor& input, const Tensor& weight,
                                         const Dims& d, bool need_input) {
  auto [d_input, d_weight, d_bias] = at::convolution_backward(
      grad, input, weight, std::nullopt, {1, 1}, {d.pad_h, d.pad_w}, {d.dil_h, d.dil_w}, false, {0, 0}, 1,
      {need_input, true, false});
  return {d_input, d_weight};
}

// ---- the backward: per step (reverse) the data-gradient GEMMs with the gate-gradient ----
// ---- math fused in; the weight and bias gradients once after the loop.             ----

template <class Run>
Grads backward_impl(const char* op, const Tensor& grad_out_in, const Tensor& x_in, const Tensor& h0_in,
                    const Tensor& out_in, const Tensor& gates_in, const Tensor& weight_ih_in,
                    const Tensor& weight_hh_in, IntArrayRef dilation, bool reset_after, bool need_dx, Math math,
                    Run&& run) {
  const Dims d = check_args(op, x_in, h0_in, weight_ih_in, weight_hh_in, std::nullopt, std::nullopt, dilation,
                            reset_after);
  const int64_t T = d.T, B = d.B, C = d.C, H = d.H, W = d.W, G = d.G();
  check_shape(op, "out", out_in, {T, B, C, H, W}, "(T, B, hidden, H, W)", x_in);
  check_shape(op, "grad_out", grad_out_in, {T, B, C, H, W}, "(T, B, hidden, H, W)", x_in);
  check_shape(op, "gates", gates_in, {T, B, G * C, H, W}, "(T, B, G*hidden, H, W)", x_in);
  const auto opts = x_in.options();
  const Tensor weight_ih = weight_ih_in.contiguous(), weight_hh = weight_hh_in.contiguous();
  if (T == 0 || B == 0) {
    return {need_dx ? logical(at::zeros({T, B, H, W, d.Cin}, opts)) : at::empty({0}, opts),
            logical(at::zeros({B, H, W, C}, opts)), at::zeros_like(weight_ih), at::zeros_like(weight_hh),
            at::zeros({3 * C}, opts), at::zeros({3 * C}, opts)};
  }
  const Tensor grad_out = physical(grad_out_in), x = physical(x_in), h0 = physical(h0_in);
  const Tensor out = physical(out_in), gates = physical(gates_in);

  // dgh[t]: step t's gate pre-activation gradients (dr, dz, dn) as the recurrent
  // convolution(s) see them; also the input convolution's, except the n block under
  // reset "after", which differs by the factor r and is kept in dxn until the loop is over.
  Tensor dgh = at::empty({T, B, H, W, 3 * C}, opts);
  Tensor dxn = reset_after ? at::empty({T, B, H, W, C}, opts) : Tensor();
  // dL/dh, carried back through the steps in the accumulation type.
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor dh = at::empty({B, H, W, C}, opts.dtype(acc_type));

  auto state = [&](int64_t t) { return t == 0 ? h0 : out[t - 1]; };  // h_{t-1}, entering step t
  Params p = base_params(d);
  p.dh = dh.data_ptr();
  auto set_prev = [&](int64_t t) {  // step t as the "prev" step of the epilogues
    p.has_prev = 1;
    p.grad_out_prev = grad_out[t].data_ptr(), p.gates_prev = gates[t].data_ptr();
    p.h_prev = state(t).data_ptr(), p.dgh_prev = dgh[t].data_ptr();
    p.dxn_prev = reset_after ? dxn[t].data_ptr() : nullptr;
  };
  set_prev(T - 1);
  run(Kernel::BwdInit, p);  // dh = grad_out[T-1]; step T-1's gate gradients

  Tensor wb_all, wb_n, wb_rz;
  if (reset_after) {
    wb_all = pack_backward(weight_hh, 0, 3 * C, Kernel::BwdAfter, math);
  } else {
    wb_n = pack_backward(weight_hh, 2 * C, C, Kernel::BwdN, math);
    wb_rz = pack_backward(weight_hh, 0, 2 * C, Kernel::BwdRZ, math);
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    const Tensor dgh_t = dgh[t];
    p.gates = gates[t].data_ptr(), p.h = state(t).data_ptr(), p.dgh = dgh_t.data_ptr();
    if (t > 0) {
      set_prev(t - 1);
    } else {
      p.has_prev = 0;
      p.grad_out_prev = p.gates_prev = p.h_prev = nullptr;
      p.dgh_prev = p.dxn_prev = nullptr;
    }
    if (reset_after) {
      set_a(p, dgh_t, 3 * C, 3 * C);
      set_w(p, wb_all);
      run(Kernel::BwdAfter, p);
    } else {
      set_a(p, dgh_t.narrow(-1, 2 * C, C), 3 * C, C);
      set_w(p, wb_n);
      run(Kernel::BwdN, p);
      set_a(p, dgh_t, 3 * C, 2 * C);
      set_w(p, wb_rz);
      run(Kernel::BwdRZ, p);
    }
  }

  // Weight and bias gradients, once over all T*B frames (cuDNN / ATen).
  Tensor h_prev_all = at::empty({T, B, H, W, C}, opts);
  h_prev_all[0].copy_(h0);
  if (T > 1) h_prev_all.narrow(0, 1, T - 1).copy_(out.narrow(0, 0, T - 1));
  auto frames = [&](const Tensor& t, int64_t channels) { return logical(t.view({T * B, H, W, channels})); };
  const Tensor dgh_all = frames(dgh, 3 * C);
  const Tensor db_hh = dgh_all.sum({0, 2, 3});
  Tensor dw_hh, db_ih;
  if (reset_after) {
    dw_hh = std::get<1>(conv_backward(dgh_all, frames(h_prev_all, C), weight_hh, d, false));
    dgh.narrow(-1, 2 * C, C).copy_(dxn);  // dgh now holds the input convolution's gradient
    db_ih = dgh_all.sum({0, 2, 3});
  } else {
    const Tensor dw_rz =
        std::get<1>(conv_backward(dgh_all.narrow(1, 0, 2 * C), frames(h_prev_all, C), weight_hh.narrow(0, 0, 2 * C),
                                  d, false));
    const Tensor rh_all = h_prev_all.mul_(gates.narrow(-1, 0, C));  // r_t * h_{t-1}
    const Tensor dw_n = std::get<1>(
        conv_backward(dgh_all.narrow(1, 2 * C, C), frames(rh_all, C), weight_hh.narrow(0, 2 * C, C), d, false));
    dw_hh = at::cat({dw_rz, dw_n});
    db_ih = db_hh.clone();
  }
  auto [dx, dw_ih] = conv_backward(dgh_all, frames(x, d.Cin), weight_ih, d, need_dx);
  return {need_dx ? logical(physical(dx.view({T, B, d.Cin, H, W}))) : at::empty({0}, opts),
          logical(dh.to(x.scalar_type())),
          dw_ih.contiguous(),
          dw_hh.contiguous(),
          db_ih,
          db_hh};
}

// ---- the registered implementations ----

void needs_cuda(const char* op, const Tensor& x) {
  TORCH_CHECK(false, "convgru_ext::", op, " needs CUDA tensors: backend=\"cuda\" runs hand-written GPU kernels; "
              "got `x` on ", x.device(), ". Use backend=\"torch\" (or \"auto\") for CPU tensors.");
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& x, const Tensor&, const Tensor&, const Tensor&,
                                       const OptTensor&, const OptTensor&, IntArrayRef, bool) {
  needs_cuda("cuda_forward", x);
  return {};
}

Grads backward_cpu(const Tensor&, const Tensor& x, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                   const Tensor&, IntArrayRef, bool, bool) {
  needs_cuda("cuda_backward", x);
  return {};
}

void check_cuda_inputs(const char* op, const Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "convgru_ext::", op, ": `x` must be a CUDA tensor; got ", x.device());
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& x, const Tensor& h0, const Tensor& weight_ih,
                                        const Tensor& weight_hh, const OptTensor& bias_ih, const OptTensor& bias_hh,
                                        IntArrayRef dilation, bool reset_after) {
  check_cuda_inputs("cuda_forward", x);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const Math math = math_for(x.scalar_type(), conv_allows_tf32(at::globalContext()));
  return forward_impl("convgru_ext::cuda_forward", x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation,
                      reset_after, math, [&](Kernel k, const Params& p) {
                        switch (math) {
                          case Math::F16: return launch_forward_f16(math, k, p, stream);
                          case Math::BF16: return launch_forward_bf16(math, k, p, stream);
                          case Math::TF32:
                          case Math::F32: return launch_forward_f32(math, k, p, stream);
                          case Math::F64: return launch_forward_f64(math, k, p, stream);
                        }
                      });
}

Grads backward_cuda(const Tensor& grad_out, const Tensor& x, const Tensor& h0, const Tensor& out,
                    const Tensor& gates, const Tensor& weight_ih, const Tensor& weight_hh, IntArrayRef dilation,
                    bool reset_after, bool need_dx) {
  check_cuda_inputs("cuda_backward", x);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const Math math = math_for(x.scalar_type(), conv_allows_tf32(at::globalContext()));
  return backward_impl("convgru_ext::cuda_backward", grad_out, x, h0, out, gates, weight_ih, weight_hh, dilation,
                       reset_after, need_dx, math, [&](Kernel k, const Params& p) {
                         switch (math) {
                           case Math::F16: return launch_backward_f16(math, k, p, stream);
                           case Math::BF16: return launch_backward_bf16(math, k, p, stream);
                           case Math::TF32:
                           case Math::F32: return launch_backward_f32(math, k, p, stream);
                           case Math::F64: return launch_backward_f64(math, k, p, stream);
                         }
                       });
}

std::tuple<Tensor, Tensor> emulate_forward_op(const Tensor& x, const Tensor& h0, const Tensor& weight_ih,
                                              const Tensor& weight_hh, const OptTensor& bias_ih,
                                              const OptTensor& bias_hh, IntArrayRef dilation, bool reset_after,
                                              std::string math) {
  const Math m = parse_math(math, x.scalar_type());
  return forward_impl("convgru_ext::_cuda_emulate_forward", x, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                      dilation, reset_after, m, [&](Kernel k, const Params& p) { emulate_forward(m, k, p); });
}

Grads emulate_backward_op(const Tensor& grad_out, const Tensor& x, const Tensor& h0, const Tensor& out,
                          const Tensor& gates, const Tensor& weight_ih, const Tensor& weight_hh, IntArrayRef dilation,
                          bool reset_after, bool need_dx, std::string math) {
  const Math m = parse_math(math, x.scalar_type());
  return backward_impl("convgru_ext::_cuda_emulate_backward", grad_out, x, h0, out, gates, weight_ih, weight_hh,
                       dilation, reset_after, need_dx, m,
                       [&](Kernel k, const Params& p) { emulate_backward(m, k, p); });
}

// What the kernels read as the TF32 switch (tests compare it with convgru_ext._tf32.conv_allows_tf32).
bool conv_tf32_op() { return conv_allows_tf32(at::globalContext()); }

}  // namespace
}  // namespace convgru

// The schemas of convgru_ext/backends/_op.py.  A fragment, because the Python backends add
// their own ops to the same namespace.
TORCH_LIBRARY_FRAGMENT(convgru_ext, m) {
  m.set_python_module("convgru_ext.backends.cuda");  // where the fake kernels are registered
  m.def("cuda_forward(Tensor x, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
        "int[] dilation, bool reset_after) -> (Tensor, Tensor)");
  m.def("cuda_backward(Tensor grad_out, Tensor x, Tensor h0, Tensor out, Tensor gates, Tensor weight_ih, "
        "Tensor weight_hh, int[] dilation, bool reset_after, bool need_dx) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("_cuda_emulate_forward(Tensor x, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh, int[] dilation, bool reset_after, str math) -> (Tensor, Tensor)");
  m.def("_cuda_emulate_backward(Tensor grad_out, Tensor x, Tensor h0, Tensor out, Tensor gates, Tensor weight_ih, "
        "Tensor weight_hh, int[] dilation, bool reset_after, bool need_dx, str math) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("_cuda_conv_tf32() -> bool", &convgru::conv_tf32_op);
}

TORCH_LIBRARY_IMPL(convgru_ext, CPU, m) {
  m.impl("cuda_forward", &convgru::forward_cpu);
  m.impl("cuda_backward", &convgru::backward_cpu);
  m.impl("_cuda_emulate_forward", &convgru::emulate_forward_op);
  m.impl("_cuda_emulate_backward", &convgru::emulate_backward_op);
}

TORCH_LIBRARY_IMPL(convgru_ext, CUDA, m) {
  m.impl("cuda_forward", &convgru::forward_cuda);
  m.impl("cuda_backward", &convgru::backward_cuda);
}

// Importing the extension as a Python module (prebuilt: `import convgru_ext._cuda`) runs the
// registrations above; the module itself is empty.
#define CONVGRU_CAT_(a, b) a##b
#define CONVGRU_CAT(a, b) CONVGRU_CAT_(a, b)
#define CONVGRU_STR_(a) #a
#define CONVGRU_STR(a) CONVGRU_STR_(a)

PyMODINIT_FUNC CONVGRU_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, CONVGRU_STR(TORCH_EXTENSION_NAME),
                                      "convgru-ext's CUDA kernels; importing it registers the convgru_ext ops",
                                      -1, nullptr};
  return PyModule_Create(&module);
}
