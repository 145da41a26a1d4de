// convgru-ext CUDA backend: the two time loops that launch the kernels of csrc/cuda/ (convgru.h
// says what each kernel computes).  Everything around the loops (argument checking for users, the
// input projection, the weight and bias gradients, layouts) is composed once in Python
// (convgru_ext/backends/_op.py); these ops check only what guards memory: the sizes, dtypes,
// devices and dense layout of every tensor the kernels touch.
//
//   convgru_ext::_cuda_forward_loop / _cuda_backward_loop (schemas: TORCH_LIBRARY_FRAGMENT below, their one home):
//     CUDA tensors run the kernels on PyTorch's current stream; CPU tensors run every kernel's
//     CPU emulation (tests).  Activations come and go as dense (..., H, W, C) tensors; the forward's
//     `x` gives only sizes, dtype and device.  The weights packed for the GEMMs are cached per
//     weight version (PackCache below).
//   convgru_ext::_cuda_emulate_ldmatrix / _mma / _cta_product / _fragment_loads / _schedule, _cuda_tile_shape,
//   _cuda_wide_tile, _cuda_pack_cache_info: test-only entry points to the device primitives' CPU implementations, the
//   emulator's schedule, and the cache's counters.
#include <Python.h>

#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "convgru.h"

namespace convgru {
namespace {

using at::IntArrayRef;
using at::Tensor;
using OptTensor = std::optional<Tensor>;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---- what guards memory: every tensor a kernel touches has the size, dtype, device and dense layout it assumes ----

struct Dims {
  int64_t T, B, C, H, W, kh, kw;
  int64_t dil_h, dil_w, pad_h, pad_w;
  bool reset_after;
  int64_t G() const { return reset_after ? 4 : 3; }
  int64_t M() const { return B * H * W; }
};

// `t` holds `anchor`'s dtype and device, and is dense with `shape` (`layout` names it in the message).
void check_dense(const char* op, const char* name, const Tensor& t, IntArrayRef shape, const char* layout,
                 const char* anchor_name, const Tensor& anchor) {
  TORCH_CHECK(t.scalar_type() == anchor.scalar_type(), op, ": `", name, "` has dtype ", t.scalar_type(), " but `",
              anchor_name, "` has ", anchor.scalar_type(), "; they must match");
  TORCH_CHECK(t.device() == anchor.device(), op, ": `", name, "` is on ", t.device(), " but `", anchor_name,
              "` is on ", anchor.device(), "; they must be on one device");
  TORCH_CHECK(t.sizes() == shape && t.is_contiguous(), op, ": `", name, "` must have shape ", layout,
              ", stored dense as ", shape, "; got shape ", t.sizes(), " with strides ", t.strides());
}

Dims dims(const char* op, const Tensor& weight_hh, int64_t T, int64_t B, int64_t H, int64_t W, IntArrayRef dilation,
          bool reset_after) {
  Dims d;
  d.T = T, d.B = B, d.H = H, d.W = W;
  TORCH_CHECK(weight_hh.dim() == 4, op, ": `weight_hh` must be 4-D (3*hidden, hidden, kh, kw); got ",
              weight_hh.sizes());
  d.C = weight_hh.size(1), d.kh = weight_hh.size(2), d.kw = weight_hh.size(3);
  d.reset_after = reset_after;
  TORCH_CHECK(d.C >= 1 && weight_hh.size(0) == 3 * d.C, op,
              ": `weight_hh` must have shape (3*hidden, hidden, kh, kw) with hidden >= 1; got ", weight_hh.sizes());
  TORCH_CHECK(d.kh % 2 == 1 && d.kw % 2 == 1, op, ": `weight_hh` must have odd kernel sizes; got ",
              weight_hh.sizes());
  TORCH_CHECK(dilation.size() == 2 && dilation[0] >= 1 && dilation[1] >= 1, op,
              ": `dilation` must be two positive ints; got ", dilation);
  TORCH_CHECK(T >= 1 && B >= 1, op, ": the loops need T >= 1 and B >= 1 (the composition handles empty calls)");
  d.dil_h = dilation[0], d.dil_w = dilation[1];
  d.pad_h = d.dil_h * (d.kh - 1) / 2, d.pad_w = d.dil_w * (d.kw - 1) / 2;  // the kernels' "same" padding
  TORCH_CHECK(d.M() * 4 * d.C < (int64_t(1) << 62), op, ": tensors too large");
  return d;
}

Math math_for(at::ScalarType dt, bool tf32) {
  switch (dt) {
    case at::kHalf: return Math::F16;
    case at::kBFloat16: return Math::BF16;
    case at::kFloat: return tf32 ? Math::TF32 : Math::F32;
    default: return Math::F64;
  }
}

// The math mode Python chose (convgru_ext/backends/_math.py: the one list of modes); it must fit the dtype.
Math parse_math(const std::string& name, at::ScalarType dt) {
  TORCH_CHECK(dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat || dt == at::kDouble,
              "convgru_ext: the CUDA kernels take float16, bfloat16, float32 or float64; got ", dt);
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
  const int64_t bn = block_n(kernel, wide_tile(math, kernel, C));
  Tensor packed = at::zeros({taps, round_up(C, block_k(math)), ng, round_up(C, bn)}, weight_hh.options());
  packed.narrow(1, 0, C).narrow(3, 0, C).copy_(u);
  return packed;
}

// The backward's data gradient through weight_hh's rows k0 .. k0+kc (the gate blocks whose
// gradients form A): the transposed, tap-flipped weight (taps, k_pad, 1, n_pad),
// packed[tap, k, 0, c] = weight_hh[k0 + k, c, taps-1-tap], zero padded.
Tensor pack_backward(const Tensor& weight_hh, int64_t k0, int64_t kc, Kernel kernel, Math math) {
  const int64_t C = weight_hh.size(1), taps = weight_hh.size(2) * weight_hh.size(3);
  Tensor u = weight_hh.reshape({3 * C, C, taps}).narrow(0, k0, kc).flip({2}).permute({2, 0, 1}).unsqueeze(2);
  const int64_t bn = block_n(kernel, wide_tile(math, kernel, C));
  Tensor packed = at::zeros({taps, round_up(kc, block_k(math)), 1, round_up(C, bn)}, weight_hh.options());
  packed.narrow(1, 0, kc).narrow(3, 0, C).copy_(u);
  return packed;
}

// ---- packed weights, cached per weight version ----
//
// Every call used to repack weight_hh for its GEMMs; the cache keeps the last kEntries packings.
// An entry is found by what identifies a weight's contents: its storage (held weakly, so that
// while the entry exists no other storage can take the address), data pointer, version counter
// (bumped by every in-place write through the tensor or its views), sizes, strides, dtype and
// device; plus the packing (kernel, rows, math) and, on CUDA, the stream whose work produced it
// (the packing is ordered before that stream's GEMMs only).
// Not cached, so always repacked: weights that require grad (gradcheck and older training code
// write them through `.data`, which has its own version counter, so such writes would go
// unseen; a training step changes its weights anyway) and inference tensors (no version counter).
struct PackKey {
  const void* storage;
  const void* data;
  int64_t version;
  std::vector<int64_t> sizes, strides;
  at::ScalarType dtype;
  at::Device device;
  int64_t stream;
  Kernel kernel;
  int64_t first, count;
  Math math;
  bool operator==(const PackKey& o) const {
    return storage == o.storage && data == o.data && version == o.version && sizes == o.sizes &&
           strides == o.strides && dtype == o.dtype && device == o.device && stream == o.stream &&
           kernel == o.kernel && first == o.first && count == o.count && math == o.math;
  }
};

class PackCache {
 public:
  static constexpr size_t kEntries = 16;

  template <class Pack>
  Tensor get(const Tensor& weight, Kernel kernel, int64_t first, int64_t count, Math math, Pack&& pack) {
    if (weight.requires_grad() || weight.is_inference()) return pack();
    const int64_t stream =
        weight.is_cuda() ? c10::cuda::getCurrentCUDAStream(weight.device().index()).id() : int64_t(0);
    PackKey key{weight.storage().unsafeGetStorageImpl(), weight.data_ptr(), weight._version(),
                weight.sizes().vec(), weight.strides().vec(), weight.scalar_type(), weight.device(), stream,
                kernel, first, count, math};
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_.remove_if([](const Entry& e) { return e.storage.expired(); });
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key == key) {
        ++hits_;
        entries_.splice(entries_.begin(), entries_, it);  // most recently used first
        return entries_.front().packed;
      }
    }
    ++misses_;
    Tensor packed = pack();
    entries_.push_front({std::move(key), weight.storage().getWeakStorageImpl(), packed});
    if (entries_.size() > kEntries) entries_.pop_back();
    return packed;
  }
  std::vector<int64_t> info() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return {hits_, misses_, static_cast<int64_t>(entries_.size())};
  }
  void clear() {  // entries and counters
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
    hits_ = misses_ = 0;
  }

 private:
  struct Entry {
    PackKey key;
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    Tensor packed;
  };
  std::mutex mutex_;
  std::list<Entry> entries_;
  int64_t hits_ = 0, misses_ = 0;
};

// Never destroyed: its CUDA tensors must not be freed after the CUDA runtime shuts down at exit.
PackCache& pack_cache() {
  static PackCache* cache = new PackCache;
  return *cache;
}

Tensor packed_forward(const Tensor& weight_hh, int64_t g0, Kernel kernel, Math math) {
  return pack_cache().get(weight_hh, kernel, g0, gates_in_n(kernel), math,
                          [&] { return pack_forward(weight_hh, g0, kernel, math); });
}

Tensor packed_backward(const Tensor& weight_hh, int64_t k0, int64_t kc, Kernel kernel, Math math) {
  return pack_cache().get(weight_hh, kernel, k0, kc, math,
                          [&] { return pack_backward(weight_hh, k0, kc, kernel, math); });
}

// ---- the forward loop: per step one or two fused GEMMs reading the hoisted projection ----

// x (T, B, Cin, H, W): sizes, dtype and device only; gx (T, B, H, W, 3C) = W*x_t + biases; h0 (B, H, W, C);
// bias_hn (C,) or none.  Returns out (T, B, H, W, C) = h_1..h_T and gates (T, B, H, W, G*C).
template <class Run>
std::tuple<Tensor, Tensor> forward_loop(const char* op, const Tensor& x, const Tensor& gx, const Tensor& h0,
                                        const Tensor& weight_hh, const OptTensor& bias_hn_in, IntArrayRef dilation,
                                        bool reset_after, Math math, Run&& run) {
  TORCH_CHECK(x.dim() == 5, op, ": `x` must be 5-D (T, B, C_in, H, W); got shape ", x.sizes());
  const Dims d = dims(op, weight_hh, x.size(0), x.size(1), x.size(3), x.size(4), dilation, reset_after);
  const int64_t T = d.T, B = d.B, C = d.C, H = d.H, W = d.W;
  check_dense(op, "gx", gx, {T, B, H, W, 3 * C}, "(T, B, 3*hidden, H, W)", "x", x);
  check_dense(op, "h0", h0, {B, H, W, C}, "(B, hidden, H, W)", "x", x);
  check_dense(op, "weight_hh", weight_hh, weight_hh.sizes(), "(3*hidden, hidden, kh, kw)", "x", x);
  const Tensor bias_hn = bias_hn_in ? *bias_hn_in : Tensor();
  if (bias_hn.defined()) check_dense(op, "bias_hn", bias_hn, {C}, "(hidden,)", "x", x);
  const auto opts = x.options();
  Tensor out = at::empty({T, B, H, W, C}, opts);
  Tensor gates = at::empty({T, B, H, W, d.G() * C}, opts);

  Params p = base_params(d);
  p.bias_hn = bias_hn.defined() ? bias_hn.data_ptr() : nullptr;
  const Tensor w_first = packed_forward(weight_hh, 0, reset_after ? Kernel::FwdAfter : Kernel::FwdRZ, math);
  const Tensor w_n = reset_after ? Tensor() : packed_forward(weight_hh, 2, Kernel::FwdN, math);
  const Tensor rh = reset_after ? Tensor() : at::empty({B, H, W, C}, opts);
  p.rh = rh.defined() ? rh.data_ptr() : nullptr;
  for (int64_t t = 0; t < T; ++t) {
    const Tensor h = t == 0 ? h0 : out[t - 1];
    p.h = h.data_ptr(), p.gx = gx[t].data_ptr();
    p.gates = gates[t].data_ptr(), p.out = out[t].data_ptr();
    set_a(p, h, C, C);
    set_w(p, w_first);
    run(reset_after ? Kernel::FwdAfter : Kernel::FwdRZ, p);
    if (!reset_after) {
      set_a(p, rh, C, C);
      set_w(p, w_n);
      run(Kernel::FwdN, p);
    }
  }
  return {out, gates};
}

// ---- the backward loop: per step (reverse) the data-gradient GEMMs with the gate-gradient math fused in ----

// grad_out, out (T, B, H, W, C); h0 (B, H, W, C); gates (T, B, H, W, G*C).  Returns dgh (T, B, H, W, 3C):
// every step's gate pre-activation gradients as the recurrent convolution(s) see them; dxn (T, B, H, W, C)
// for reset "after" (the n-gradient as the input convolution sees it; else an empty tensor); dh0 (B, H, W, C).
template <class Run>
std::tuple<Tensor, Tensor, Tensor> backward_loop(const char* op, const Tensor& grad_out, const Tensor& h0,
                                                 const Tensor& out, const Tensor& gates, const Tensor& weight_hh,
                                                 IntArrayRef dilation, bool reset_after, Math math, Run&& run) {
  TORCH_CHECK(out.dim() == 5, op, ": `out` must be 5-D (T, B, H, W, hidden); got shape ", out.sizes());
  const Dims d = dims(op, weight_hh, out.size(0), out.size(1), out.size(2), out.size(3), dilation, reset_after);
  const int64_t T = d.T, B = d.B, C = d.C, H = d.H, W = d.W;
  check_dense(op, "out", out, {T, B, H, W, C}, "(T, B, hidden, H, W)", "out", out);
  check_dense(op, "grad_out", grad_out, {T, B, H, W, C}, "(T, B, hidden, H, W)", "out", out);
  check_dense(op, "gates", gates, {T, B, H, W, d.G() * C}, "(T, B, G*hidden, H, W)", "out", out);
  check_dense(op, "h0", h0, {B, H, W, C}, "(B, hidden, H, W)", "out", out);
  check_dense(op, "weight_hh", weight_hh, weight_hh.sizes(), "(3*hidden, hidden, kh, kw)", "out", out);
  const auto opts = out.options();
  Tensor dgh = at::empty({T, B, H, W, 3 * C}, opts);
  Tensor dxn = reset_after ? at::empty({T, B, H, W, C}, opts) : at::empty({0}, opts);
  // dL/dh, carried back through the steps in the accumulation type.
  Tensor dh = at::empty({B, H, W, C}, opts.dtype(out.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));

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
    wb_all = packed_backward(weight_hh, 0, 3 * C, Kernel::BwdAfter, math);
  } else {
    wb_n = packed_backward(weight_hh, 2 * C, C, Kernel::BwdN, math);
    wb_rz = packed_backward(weight_hh, 0, 2 * C, Kernel::BwdRZ, math);
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
  return {dgh, dxn, dh.to(out.scalar_type())};
}

// ---- the registered implementations: CUDA tensors launch the kernels, CPU tensors emulate them ----

using Launcher = void (*)(Math, Kernel, const Params&, cudaStream_t);

// The per-dtype launcher of csrc/cuda/{forward,backward}_*.cu, bound to PyTorch's current stream.
auto on_stream(const Tensor& anchor, Math math, bool backward) {
  Launcher launch;
  switch (math) {
    case Math::F16: launch = backward ? launch_backward_f16 : launch_forward_f16; break;
    case Math::BF16: launch = backward ? launch_backward_bf16 : launch_forward_bf16; break;
    case Math::TF32:
    case Math::F32: launch = backward ? launch_backward_f32 : launch_forward_f32; break;
    default: launch = backward ? launch_backward_f64 : launch_forward_f64;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(anchor.device().index()).stream();
  return [=](Kernel k, const Params& p) { launch(math, k, p, stream); };
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& x, const Tensor& gx, const Tensor& h0, const Tensor& weight_hh,
                                        const OptTensor& bias_hn, IntArrayRef dilation, bool reset_after,
                                        std::string math_name) {
  const Math math = parse_math(math_name, x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  return forward_loop("convgru_ext::_cuda_forward_loop", x, gx, h0, weight_hh, bias_hn, dilation, reset_after, math,
                      on_stream(x, math, false));
}

std::tuple<Tensor, Tensor, Tensor> backward_cuda(const Tensor& grad_out, const Tensor& h0, const Tensor& out,
                                                 const Tensor& gates, const Tensor& weight_hh, IntArrayRef dilation,
                                                 bool reset_after, std::string math_name) {
  const Math math = parse_math(math_name, out.scalar_type());
  const c10::cuda::CUDAGuard guard(out.device());
  return backward_loop("convgru_ext::_cuda_backward_loop", grad_out, h0, out, gates, weight_hh, dilation, reset_after,
                       math, on_stream(out, math, true));
}

std::tuple<Tensor, Tensor> forward_emulated(const Tensor& x, const Tensor& gx, const Tensor& h0,
                                            const Tensor& weight_hh, const OptTensor& bias_hn, IntArrayRef dilation,
                                            bool reset_after, std::string math_name) {
  const Math m = parse_math(math_name, x.scalar_type());
  return forward_loop("convgru_ext::_cuda_forward_loop (emulated)", x, gx, h0, weight_hh, bias_hn, dilation,
                      reset_after, m, [&](Kernel k, const Params& p) { emulate_forward(m, k, p); });
}

std::tuple<Tensor, Tensor, Tensor> backward_emulated(const Tensor& grad_out, const Tensor& h0, const Tensor& out,
                                                     const Tensor& gates, const Tensor& weight_hh,
                                                     IntArrayRef dilation, bool reset_after, std::string math_name) {
  const Math m = parse_math(math_name, out.scalar_type());
  return backward_loop("convgru_ext::_cuda_backward_loop (emulated)", grad_out, h0, out, gates, weight_hh, dilation,
                       reset_after, m, [&](Kernel k, const Params& p) { emulate_backward(m, k, p); });
}

// ---- test-only ops: the primitives' CPU implementations (tests/test_cuda_primitives.py) ----

Kernel parse_forward_kernel(const std::string& name) {
  if (name == "FwdRZ") return Kernel::FwdRZ;
  if (name == "FwdN") return Kernel::FwdN;
  if (name == "FwdAfter") return Kernel::FwdAfter;
  TORCH_CHECK(false, "convgru_ext: kernel must be one of FwdRZ, FwdN, FwdAfter; got \"", name, "\"");
  return Kernel::FwdRZ;
}

Kernel parse_gemm_kernel(const std::string& name) {
  const std::vector<std::pair<std::string, Kernel>> kernels = {
      {"FwdRZ", Kernel::FwdRZ}, {"FwdN", Kernel::FwdN}, {"FwdAfter", Kernel::FwdAfter},
      {"BwdN", Kernel::BwdN},   {"BwdRZ", Kernel::BwdRZ}, {"BwdAfter", Kernel::BwdAfter}};
  for (const auto& [n, k] : kernels) {
    if (n == name) return k;
  }
  TORCH_CHECK(false, "convgru_ext: kernel must be one of FwdRZ, FwdN, FwdAfter, BwdN, BwdRZ, BwdAfter; got \"", name,
              "\"");
  return Kernel::FwdRZ;
}

Math parse_math_name(const std::string& name) {
  const std::vector<std::pair<std::string, at::ScalarType>> dtypes = {
      {"f16", at::kHalf}, {"bf16", at::kBFloat16}, {"tf32", at::kFloat}, {"f32", at::kFloat}, {"f64", at::kDouble}};
  for (const auto& [n, dt] : dtypes) {
    if (n == name) return parse_math(name, dt);
  }
  return parse_math(name, at::kDouble);  // the error naming the choices
}

void check_cpu(const char* op, const char* name, const Tensor& t, at::ScalarType dtype, IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.sizes() == shape && t.is_contiguous(), op,
              ": `", name, "` must be a contiguous CPU ", dtype, " tensor of shape ", shape, "; got ", t.scalar_type(),
              " on ", t.device(), " with shape ", t.sizes(), " and strides ", t.strides());
}

// Whether math `m` has the wide tile asked for (the test-only ops' check).
void check_wide(const char* op, Math m, bool wide) {
  TORCH_CHECK(!wide || has_wide_tile(m), op, ": only f16, bf16 and tf32 have a wide tile");
}

// (BM, BK, NG, BN) of kernel `kernel` in math `math`, narrow or wide tile.
std::vector<int64_t> tile_shape(std::string math, std::string kernel, bool wide) {
  const Math m = parse_math_name(math);
  const Kernel k = parse_forward_kernel(kernel);
  check_wide("convgru_ext::_cuda_tile_shape", m, wide);
  return {block_m(m), block_k(m), gates_in_n(k), block_n(k, wide)};
}

// smem: int16 (n,); row_offsets: int64 (32,), lane l's row address in elements.  Returns int32 (32, 4).
Tensor ldmatrix_op(const Tensor& smem, const Tensor& row_offsets, bool trans) {
  const char* op = "convgru_ext::_cuda_emulate_ldmatrix";
  TORCH_CHECK(smem.dim() == 1, op, ": `smem` must be 1-D; got shape ", smem.sizes());
  check_cpu(op, "smem", smem, at::kShort, {smem.size(0)});
  check_cpu(op, "row_offsets", row_offsets, at::kLong, {32});
  const int64_t* off = row_offsets.data_ptr<int64_t>();
  for (int l = 0; l < 32; ++l) {
    TORCH_CHECK(off[l] >= 0 && off[l] % 8 == 0 && off[l] + 8 <= smem.size(0), op, ": lane ", l,
                "'s row offset ", off[l], " must be a multiple of 8 (16 bytes) with 8 elements inside `smem` (",
                smem.size(0), " elements)");
  }
  Tensor out = at::empty({32, 4}, smem.options().dtype(at::kInt));
  emulate_ldmatrix_x4(reinterpret_cast<const uint16_t*>(smem.data_ptr()), off, trans,
                      reinterpret_cast<uint32_t*>(out.data_ptr()));
  return out;
}

// a: int32 (32, 4), b: int32 (32, 2), c: float32 (32, 4) fragment registers.  Returns d: float32 (32, 4).
Tensor mma_op(const Tensor& a, const Tensor& b, const Tensor& c, std::string math) {
  const char* op = "convgru_ext::_cuda_emulate_mma";
  const Math m = parse_math_name(math);
  TORCH_CHECK(m == Math::F16 || m == Math::BF16 || m == Math::TF32, op, ": math must be f16, bf16 or tf32; got \"",
              math, "\"");
  check_cpu(op, "a", a, at::kInt, {32, 4});
  check_cpu(op, "b", b, at::kInt, {32, 2});
  check_cpu(op, "c", c, at::kFloat, {32, 4});
  Tensor d = at::empty({32, 4}, c.options());
  emulate_mma_sync(m, reinterpret_cast<const uint32_t*>(a.data_ptr()), reinterpret_cast<const uint32_t*>(b.data_ptr()),
                   c.data_ptr<float>(), d.data_ptr<float>());
  return d;
}

// a (BM, BK), b (BK, NG*BN) in the math's dtype.  Returns (BM, NG*BN) float64.
Tensor cta_product_op(const Tensor& a, const Tensor& b, std::string math, std::string kernel, bool wide) {
  const char* op = "convgru_ext::_cuda_emulate_cta_product";
  const Math m = parse_math_name(math);
  const Kernel k = parse_forward_kernel(kernel);
  check_wide(op, m, wide);
  const at::ScalarType dt = m == Math::F16 ? at::kHalf : m == Math::BF16 ? at::kBFloat16
                            : m == Math::F64 ? at::kDouble : at::kFloat;
  const int64_t bm = block_m(m), bk = block_k(m), bnt = gates_in_n(k) * block_n(k, wide);
  check_cpu(op, "a", a, dt, {bm, bk});
  check_cpu(op, "b", b, dt, {bk, bnt});
  Tensor out = at::empty({bm, bnt}, a.options().dtype(at::kDouble));
  emulate_cta_product(m, k, wide, a.data_ptr(), b.data_ptr(), out.data_ptr<double>());
  return out;
}

// Whether a launch of GEMM kernel `kernel` in math `math` for `channels` output channels takes the wide tile.
bool launch_tile_is_wide(std::string math, std::string kernel, int64_t channels) {
  return wide_tile(parse_math_name(math), parse_gemm_kernel(kernel), channels);
}

// Every warp's fragment loads of one K-step of GEMM kernel `kernel` in math f16, bf16 or tf32, narrow or
// wide tile: int64 (n, 5) rows (warp, instruction, lane, byte offset in shared memory, bytes).
Tensor fragment_loads_op(std::string math, std::string kernel, bool wide) {
  const char* op = "convgru_ext::_cuda_emulate_fragment_loads";
  const Math m = parse_math_name(math);
  TORCH_CHECK(m == Math::F16 || m == Math::BF16 || m == Math::TF32, op, ": math must be f16, bf16 or tf32; got \"",
              math, "\"");
  std::vector<int64_t> rows = emulate_fragment_loads(m, parse_gemm_kernel(kernel), wide);
  const int64_t n = static_cast<int64_t>(rows.size()) / 5;
  return at::tensor(rows, at::kLong).reshape({n, 5});
}

// [hits, misses, entries] of the packed-weight cache; clear=True first empties it and zeroes the counts.
// Sets the emulator's schedule ("late" or "early": csrc/cuda/gemm.cuh) and returns the previous one.
std::string emulate_schedule(std::string name) {
  TORCH_CHECK(name == "late" || name == "early", "convgru_ext: schedule must be \"late\" or \"early\"; got \"",
              name, "\"");
  const bool was_early = emulated_schedule() == EmulatedSchedule::Early;
  set_emulated_schedule(name == "early" ? EmulatedSchedule::Early : EmulatedSchedule::Late);
  return was_early ? "early" : "late";
}

std::vector<int64_t> pack_cache_info(bool clear) {
  if (clear) pack_cache().clear();
  return pack_cache().info();
}

}  // namespace
}  // namespace convgru

// The loops' schemas (convgru_ext/backends/cuda.py calls them as written here).
// A fragment, because the Python backends add their own ops to the same namespace.
TORCH_LIBRARY_FRAGMENT(convgru_ext, m) {
  m.def("_cuda_forward_loop(Tensor x, Tensor gx, Tensor h0, Tensor weight_hh, Tensor? bias_hn, int[] dilation, "
        "bool reset_after, str math) -> (Tensor, Tensor)");
  m.def("_cuda_backward_loop(Tensor grad_out, Tensor h0, Tensor out, Tensor gates, Tensor weight_hh, "
        "int[] dilation, bool reset_after, str math) -> (Tensor, Tensor, Tensor)");
  // test-only (tests/test_cuda_primitives.py, tests/test_cuda.py)
  m.def("_cuda_emulate_ldmatrix(Tensor smem, Tensor row_offsets, bool trans) -> Tensor");
  m.def("_cuda_emulate_mma(Tensor a, Tensor b, Tensor c, str math) -> Tensor");
  m.def("_cuda_emulate_cta_product(Tensor a, Tensor b, str math, str kernel, bool wide=False) -> Tensor");
  m.def("_cuda_tile_shape(str math, str kernel, bool wide=False) -> int[]", &convgru::tile_shape);
  m.def("_cuda_emulate_fragment_loads(str math, str kernel, bool wide=False) -> Tensor", &convgru::fragment_loads_op);
  m.def("_cuda_wide_tile(str math, str kernel, int channels) -> bool", &convgru::launch_tile_is_wide);
  m.def("_cuda_pack_cache_info(bool clear=False) -> int[]", &convgru::pack_cache_info);
  m.def("_cuda_emulate_schedule(str schedule) -> str", &convgru::emulate_schedule);
}

TORCH_LIBRARY_IMPL(convgru_ext, CPU, m) {
  m.impl("_cuda_forward_loop", &convgru::forward_emulated);
  m.impl("_cuda_backward_loop", &convgru::backward_emulated);
  m.impl("_cuda_emulate_ldmatrix", &convgru::ldmatrix_op);
  m.impl("_cuda_emulate_mma", &convgru::mma_op);
  m.impl("_cuda_emulate_cta_product", &convgru::cta_product_op);
}

TORCH_LIBRARY_IMPL(convgru_ext, CUDA, m) {
  m.impl("_cuda_forward_loop", &convgru::forward_cuda);
  m.impl("_cuda_backward_loop", &convgru::backward_cuda);
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
