// The gate math fused into the GEMMs' epilogues (see the table in convgru.h).
//
// Each function handles one (pixel m, channel c) of one step, given the NG accumulated
// convolution values acc[g] of that pixel and channel.  T is the storage type, A the
// accumulation type; values that later kernels read back from memory are rounded to T
// first (round_to), so the backward differentiates exactly what the forward stored.
#pragma once

#include "common.cuh"

namespace convgru {

template <typename T> CG_HD const T* cptr(const void* p) { return static_cast<const T*>(p); }
template <typename T> CG_HD T* mptr(void* p) { return static_cast<T*>(p); }

// Step t-1's gate-gradients from dh = dL/dh_{t-1} at (m, c): with r, z, n = gates[t-1] and
// h = h_{t-2},  h_{t-1} = h + z*(n - h)  gives
//   dz_pre = dh*(n - h)*z*(1 - z),   dn_pre = dh*z*(1 - n^2),
// reset "before": dgh[t-1] gets dz_pre and dn_pre (dr_pre needs U_n^T dn_pre: BwdN, next step);
// reset "after" (n = tanh(gx_n + r*ghn)): dxn = dn_pre, dghn = dn_pre*r, dr_pre = dn_pre*ghn*r*(1-r).
template <typename T, typename A, bool kAfter>
CG_HD void gate_grads_prev(const Params& p, int64_t m, int c, A dh) {
  const int64_t C = p.C;
  const T* g = cptr<T>(p.gates_prev) + m * p.G * C;
  const A z = to_acc(g[C + c]);
  const A n = to_acc(g[2 * C + c]);
  const A h = to_acc(cptr<T>(p.h_prev)[m * C + c]);
  T* d = mptr<T>(p.dgh_prev) + m * 3 * C;
  d[C + c] = Store<T>::from(dh * (n - h) * z * (A(1) - z));
  const A dn = dh * z * (A(1) - n * n);
  if (kAfter) {
    const A r = to_acc(g[c]);
    const A ghn = to_acc(g[3 * C + c]);
    mptr<T>(p.dxn_prev)[m * C + c] = Store<T>::from(dn);
    d[2 * C + c] = Store<T>::from(dn * r);
    d[c] = Store<T>::from(dn * ghn * r * (A(1) - r));
  } else {
    d[2 * C + c] = Store<T>::from(dn);
  }
}

template <Kernel kKernel> struct Epilogue;

// r = sigmoid(U_r*h + gx_r), z = sigmoid(U_z*h + gx_z) -> gates; r*h -> rh.
template <> struct Epilogue<Kernel::FwdRZ> {
  template <typename T, typename A> static CG_HD void apply(const Params& p, int64_t m, int c, const A* acc) {
    const int64_t C = p.C;
    const T* gx = cptr<T>(p.gx) + m * 3 * C;
    const A r = round_to<T>(sigmoid(acc[0] + to_acc(gx[c])));
    const A z = sigmoid(acc[1] + to_acc(gx[C + c]));
    T* g = mptr<T>(p.gates) + m * p.G * C;
    g[c] = Store<T>::from(r);
    g[C + c] = Store<T>::from(z);
    const A h = to_acc(cptr<T>(p.h)[m * C + c]);
    mptr<T>(p.rh)[m * C + c] = Store<T>::from(r * h);
  }
};

// n = tanh(U_n*(r*h) + gx_n) -> gates; h_t = h + z*(n - h) -> out.
template <> struct Epilogue<Kernel::FwdN> {
  template <typename T, typename A> static CG_HD void apply(const Params& p, int64_t m, int c, const A* acc) {
    const int64_t C = p.C;
    const A n = tanh_(acc[0] + to_acc(cptr<T>(p.gx)[m * 3 * C + 2 * C + c]));
    T* g = mptr<T>(p.gates) + m * p.G * C;
    const A z = to_acc(g[C + c]);
    const A h = to_acc(cptr<T>(p.h)[m * C + c]);
    g[2 * C + c] = Store<T>::from(n);
    mptr<T>(p.out)[m * C + c] = Store<T>::from(h + z * (n - h));
  }
};

// r, z as above, ghn = U_n*h + b_hn, n = tanh(gx_n + r*ghn) -> gates (r, z, n, ghn); h_t -> out.
template <> struct Epilogue<Kernel::FwdAfter> {
  template <typename T, typename A> static CG_HD void apply(const Params& p, int64_t m, int c, const A* acc) {
    const int64_t C = p.C;
    const T* gx = cptr<T>(p.gx) + m * 3 * C;
    const A r = round_to<T>(sigmoid(acc[0] + to_acc(gx[c])));
    const A z = round_to<T>(sigmoid(acc[1] + to_acc(gx[C + c])));
    const A bias = p.bias_hn ? to_acc(cptr<T>(p.bias_hn)[c]) : A(0);
    const A ghn = round_to<T>(acc[2] + bias);
    const A n = tanh_(to_acc(gx[2 * C + c]) + r * ghn);
    const A h = to_acc(cptr<T>(p.h)[m * C + c]);
    T* g = mptr<T>(p.gates) + m * 4 * C;
    g[c] = Store<T>::from(r);
    g[C + c] = Store<T>::from(z);
    g[2 * C + c] = Store<T>::from(n);
    g[3 * C + c] = Store<T>::from(ghn);
    mptr<T>(p.out)[m * C + c] = Store<T>::from(h + z * (n - h));
  }
};

// acc = (U_n^T dn_pre)[m, c] = d(r*h): dr_pre -> dgh (r block);
// dh <- acc*r + dh*(1 - z) + grad_out[t-1]   (dh_{t-1} but for the r/z convolutions' part).
template <> struct Epilogue<Kernel::BwdN> {
  template <typename T, typename A> static CG_HD void apply(const Params& p, int64_t m, int c, const A* acc) {
    const int64_t C = p.C;
    const T* g = cptr<T>(p.gates) + m * p.G * C;
    const A r = to_acc(g[c]);
    const A z = to_acc(g[C + c]);
    const A h = to_acc(cptr<T>(p.h)[m * C + c]);
    const A drh = acc[0];
    mptr<T>(p.dgh)[m * 3 * C + c] = Store<T>::from(drh * h * r * (A(1) - r));
    A* dh = mptr<A>(p.dh) + m * C + c;
    A partial = drh * r + *dh * (A(1) - z);
    if (p.has_prev) partial += to_acc(cptr<T>(p.grad_out_prev)[m * C + c]);
    *dh = partial;
  }
};

// acc = (U_rz^T [dr_pre, dz_pre])[m, c]: dh_{t-1} = acc + partial; step t-1's gate gradients.
template <> struct Epilogue<Kernel::BwdRZ> {
  template <typename T, typename A> static CG_HD void apply(const Params& p, int64_t m, int c, const A* acc) {
    A* dh = mptr<A>(p.dh) + m * p.C + c;
    const A dh_prev = acc[0] + *dh;
    *dh = dh_prev;
    if (p.has_prev) gate_grads_prev<T, A, false>(p, m, c, dh_prev);
  }
};

// acc = (U^T [dr_pre, dz_pre, dghn])[m, c]: dh_{t-1} = acc + dh*(1 - z) + grad_out[t-1];
// step t-1's gate gradients.
template <> struct Epilogue<Kernel::BwdAfter> {
  template <typename T, typename A> static CG_HD void apply(const Params& p, int64_t m, int c, const A* acc) {
    const int64_t C = p.C;
    const A z = to_acc(cptr<T>(p.gates)[m * 4 * C + C + c]);
    A* dh = mptr<A>(p.dh) + m * C + c;
    A dh_prev = acc[0] + *dh * (A(1) - z);
    if (p.has_prev) dh_prev += to_acc(cptr<T>(p.grad_out_prev)[m * C + c]);
    *dh = dh_prev;
    if (p.has_prev) gate_grads_prev<T, A, true>(p, m, c, dh_prev);
  }
};

// BwdInit at element i of the (M, C) step: dh = grad_out[T-1] (passed as grad_out_prev,
// with the "prev" tensors set to step T-1), and step T-1's gate gradients.
template <typename T, typename A, bool kAfter> CG_HD void backward_init(const Params& p, int64_t i) {
  const int64_t m = i / p.C;
  const int c = static_cast<int>(i - m * p.C);
  const A dh = to_acc(cptr<T>(p.grad_out_prev)[i]);
  mptr<A>(p.dh)[i] = dh;
  gate_grads_prev<T, A, kAfter>(p, m, c, dh);
}

}  // namespace convgru
