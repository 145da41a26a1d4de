// The gate math fused into the GEMMs' epilogues (see the table in convgru.h).
//
// Each function handles V consecutive channels c .. c+V of one pixel m of one step (n <= V of
// them inside the tensor: the others are neither read nor written), given the NG accumulated
// convolution values acc[g][e] of that pixel and channel c+e.  T is the storage type, A the
// accumulation type; values that later kernels read back from memory are rounded to T first
// (round_to), so the backward differentiates exactly what the forward stored.  Each one reads
// every input first (read-only loads of what no kernel of the launch writes), then computes,
// then stores: with V*sizeof(T) a multiple of 16 bytes and an aligned full run, one 16-byte
// access per 16 bytes, else element by element.
#pragma once

#include "common.cuh"

namespace convgru {

template <typename T> CG_HD const T* cptr(const void* p) { return static_cast<const T*>(p); }
template <typename T> CG_HD T* mptr(void* p) { return static_cast<T*>(p); }

// Whether n elements at ptr are V full ones on a 16-byte boundary that 16-byte accesses cover.
template <typename T, int V> CG_HD bool whole_vectors(const T* ptr, int n) {
  if constexpr (V * sizeof(T) % 16 != 0) {
    return false;
  } else {
    return n == V && reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  }
}

// out[e] = ptr[e] for e < n, 0 past n.  kReadOnly: nothing in this launch writes ptr (the
// read-only data path; the emulator reads it like any other memory).
template <bool kReadOnly, typename T, typename A, int V> CG_HD void gather(A (&out)[V], const T* ptr, int n) {
  T v[V];
  if (whole_vectors<T, V>(ptr, n)) {
#pragma unroll
    for (int b = 0; b < int(V * sizeof(T) / 16); ++b) {
#if defined(__CUDA_ARCH__)
      const uint4* src = reinterpret_cast<const uint4*>(ptr) + b;
      reinterpret_cast<uint4*>(v)[b] = kReadOnly ? __ldg(src) : *src;
#else
      std::memcpy(reinterpret_cast<unsigned char*>(v) + 16 * b, reinterpret_cast<const unsigned char*>(ptr) + 16 * b,
                  16);
#endif
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) {
#if defined(__CUDA_ARCH__)
      v[e] = e < n ? (kReadOnly ? __ldg(ptr + e) : ptr[e]) : T();
#else
      v[e] = e < n ? ptr[e] : T();
#endif
    }
  }
#pragma unroll
  for (int e = 0; e < V; ++e) out[e] = e < n ? to_acc(v[e]) : A(0);
}

// ptr[e] = v[e] (rounded to T) for e < n.
template <typename T, typename A, int V> CG_HD void scatter(T* ptr, const A (&v)[V], int n) {
  T t[V];
#pragma unroll
  for (int e = 0; e < V; ++e) t[e] = Store<T>::from(v[e]);
  if (whole_vectors<T, V>(ptr, n)) {
#pragma unroll
    for (int b = 0; b < int(V * sizeof(T) / 16); ++b) {
#if defined(__CUDA_ARCH__)
      reinterpret_cast<uint4*>(ptr)[b] = reinterpret_cast<const uint4*>(t)[b];
#else
      std::memcpy(reinterpret_cast<unsigned char*>(ptr) + 16 * b, reinterpret_cast<const unsigned char*>(t) + 16 * b,
                  16);
#endif
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (e < n) ptr[e] = t[e];
    }
  }
}

// Step t-1's tensors at (m, c .. c+V) for its gate-gradients, read ahead of the math that needs
// them.  From dh = dL/dh_{t-1} with r, z, n = gates[t-1] and h = h_{t-2},  h_{t-1} = h + z*(n - h)
// gives
//   dz_pre = dh*(n - h)*z*(1 - z),   dn_pre = dh*z*(1 - n^2),
// reset "before": dgh[t-1] gets dz_pre and dn_pre (dr_pre needs U_n^T dn_pre: BwdN, next step);
// reset "after" (n = tanh(gx_n + r*ghn)): dxn = dn_pre, dghn = dn_pre*r, dr_pre = dn_pre*ghn*r*(1-r).
template <typename T, typename A, bool kAfter, int V> struct PrevStep {
  A z[V], n_[V], h[V], r[V], ghn[V];

  CG_HD void gather_inputs(const Params& p, int64_t m, int c, int n) {
    const int64_t C = p.C;
    const T* g = cptr<T>(p.gates_prev) + m * p.G * C;
    gather<true>(z, g + C + c, n);
    gather<true>(n_, g + 2 * C + c, n);
    gather<true>(h, cptr<T>(p.h_prev) + m * C + c, n);
    if constexpr (kAfter) {
      gather<true>(r, g + c, n);
      gather<true>(ghn, g + 3 * C + c, n);
    }
  }
  CG_HD void finish(const Params& p, int64_t m, int c, int n, const A (&dh)[V]) const {
    const int64_t C = p.C;
    A dz[V], dn[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      dz[e] = dh[e] * (n_[e] - h[e]) * z[e] * (A(1) - z[e]);
      dn[e] = dh[e] * z[e] * (A(1) - n_[e] * n_[e]);
    }
    T* d = mptr<T>(p.dgh_prev) + m * 3 * C;
    scatter(d + C + c, dz, n);
    if constexpr (kAfter) {
      A dghn[V], dr[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        dghn[e] = dn[e] * r[e];
        dr[e] = dn[e] * ghn[e] * r[e] * (A(1) - r[e]);
      }
      scatter(mptr<T>(p.dxn_prev) + m * C + c, dn, n);
      scatter(d + 2 * C + c, dghn, n);
      scatter(d + c, dr, n);
    } else {
      scatter(d + 2 * C + c, dn, n);
    }
  }
};

template <Kernel kKernel> struct Epilogue;

// r = sigmoid(U_r*h + gx_r), z = sigmoid(U_z*h + gx_z) -> gates; r*h -> rh.
template <> struct Epilogue<Kernel::FwdRZ> {
  template <typename T, typename A, int V>
  static CG_HD void apply(const Params& p, int64_t m, int c, int n, const A (*acc)[V]) {
    const int64_t C = p.C;
    const T* gx = cptr<T>(p.gx) + m * 3 * C;
    A xr[V], xz[V], h[V], r[V], z[V], rh[V];
    gather<true>(xr, gx + c, n);
    gather<true>(xz, gx + C + c, n);
    gather<true>(h, cptr<T>(p.h) + m * C + c, n);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      r[e] = round_to<T>(gate_sigmoid<T>(acc[0][e] + xr[e]));
      z[e] = gate_sigmoid<T>(acc[1][e] + xz[e]);
      rh[e] = r[e] * h[e];
    }
    T* g = mptr<T>(p.gates) + m * p.G * C;
    scatter(g + c, r, n);
    scatter(g + C + c, z, n);
    scatter(mptr<T>(p.rh) + m * C + c, rh, n);
  }
};

// n = tanh(U_n*(r*h) + gx_n) -> gates; h_t = h + z*(n - h) -> out.
template <> struct Epilogue<Kernel::FwdN> {
  template <typename T, typename A, int V>
  static CG_HD void apply(const Params& p, int64_t m, int c, int n, const A (*acc)[V]) {
    const int64_t C = p.C;
    T* g = mptr<T>(p.gates) + m * p.G * C;
    A xn[V], z[V], h[V], nn[V], out[V];
    gather<true>(xn, cptr<T>(p.gx) + m * 3 * C + 2 * C + c, n);
    gather<true>(z, g + C + c, n);  // FwdRZ's, an earlier launch
    gather<true>(h, cptr<T>(p.h) + m * C + c, n);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      nn[e] = gate_tanh<T>(acc[0][e] + xn[e]);
      out[e] = h[e] + z[e] * (nn[e] - h[e]);
    }
    scatter(g + 2 * C + c, nn, n);
    scatter(mptr<T>(p.out) + m * C + c, out, n);
  }
};

// r, z as above, ghn = U_n*h + b_hn, n = tanh(gx_n + r*ghn) -> gates (r, z, n, ghn); h_t -> out.
template <> struct Epilogue<Kernel::FwdAfter> {
  template <typename T, typename A, int V>
  static CG_HD void apply(const Params& p, int64_t m, int c, int n, const A (*acc)[V]) {
    const int64_t C = p.C;
    const T* gx = cptr<T>(p.gx) + m * 3 * C;
    A xr[V], xz[V], xn[V], bias[V], h[V], r[V], z[V], ghn[V], nn[V], out[V];
    gather<true>(xr, gx + c, n);
    gather<true>(xz, gx + C + c, n);
    gather<true>(xn, gx + 2 * C + c, n);
    gather<true>(bias, cptr<T>(p.bias_hn) + c, p.bias_hn ? n : 0);  // zeros without a bias
    gather<true>(h, cptr<T>(p.h) + m * C + c, n);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      r[e] = round_to<T>(gate_sigmoid<T>(acc[0][e] + xr[e]));
      z[e] = round_to<T>(gate_sigmoid<T>(acc[1][e] + xz[e]));
      ghn[e] = round_to<T>(acc[2][e] + bias[e]);
      nn[e] = gate_tanh<T>(xn[e] + r[e] * ghn[e]);
      out[e] = h[e] + z[e] * (nn[e] - h[e]);
    }
    T* g = mptr<T>(p.gates) + m * 4 * C;
    scatter(g + c, r, n);
    scatter(g + C + c, z, n);
    scatter(g + 2 * C + c, nn, n);
    scatter(g + 3 * C + c, ghn, n);
    scatter(mptr<T>(p.out) + m * C + c, out, n);
  }
};

// acc = (U_n^T dn_pre)[m, c] = d(r*h): dr_pre -> dgh (r block);
// dh <- acc*r + dh*(1 - z) + grad_out[t-1]   (dh_{t-1} but for the r/z convolutions' part).
template <> struct Epilogue<Kernel::BwdN> {
  template <typename T, typename A, int V>
  static CG_HD void apply(const Params& p, int64_t m, int c, int n, const A (*acc)[V]) {
    const int64_t C = p.C;
    const T* g = cptr<T>(p.gates) + m * p.G * C;
    A* dh = mptr<A>(p.dh) + m * C + c;
    A r[V], z[V], h[V], dh_in[V], go[V], dr[V], partial[V];
    gather<true>(r, g + c, n);
    gather<true>(z, g + C + c, n);
    gather<true>(h, cptr<T>(p.h) + m * C + c, n);
    gather<false>(dh_in, dh, n);  // this thread writes it back
    gather<true>(go, cptr<T>(p.grad_out_prev) + m * C + c, p.has_prev ? n : 0);  // zeros at t = 0
#pragma unroll
    for (int e = 0; e < V; ++e) {
      dr[e] = acc[0][e] * h[e] * r[e] * (A(1) - r[e]);
      partial[e] = acc[0][e] * r[e] + dh_in[e] * (A(1) - z[e]) + go[e];
    }
    scatter(mptr<T>(p.dgh) + m * 3 * C + c, dr, n);
    scatter(dh, partial, n);
  }
};

// acc = (U_rz^T [dr_pre, dz_pre])[m, c]: dh_{t-1} = acc + partial; step t-1's gate gradients.
template <> struct Epilogue<Kernel::BwdRZ> {
  template <typename T, typename A, int V>
  static CG_HD void apply(const Params& p, int64_t m, int c, int n, const A (*acc)[V]) {
    A* dh = mptr<A>(p.dh) + m * p.C + c;
    A dh_in[V], dh_prev[V];
    PrevStep<T, A, false, V> prev;
    gather<false>(dh_in, dh, n);
    if (p.has_prev) prev.gather_inputs(p, m, c, n);
#pragma unroll
    for (int e = 0; e < V; ++e) dh_prev[e] = acc[0][e] + dh_in[e];
    scatter(dh, dh_prev, n);
    if (p.has_prev) prev.finish(p, m, c, n, dh_prev);
  }
};

// acc = (U^T [dr_pre, dz_pre, dghn])[m, c]: dh_{t-1} = acc + dh*(1 - z) + grad_out[t-1];
// step t-1's gate gradients.
template <> struct Epilogue<Kernel::BwdAfter> {
  template <typename T, typename A, int V>
  static CG_HD void apply(const Params& p, int64_t m, int c, int n, const A (*acc)[V]) {
    const int64_t C = p.C;
    A* dh = mptr<A>(p.dh) + m * C + c;
    A z[V], dh_in[V], go[V], dh_prev[V];
    PrevStep<T, A, true, V> prev;
    gather<true>(z, cptr<T>(p.gates) + m * 4 * C + C + c, n);
    gather<false>(dh_in, dh, n);
    gather<true>(go, cptr<T>(p.grad_out_prev) + m * C + c, p.has_prev ? n : 0);
    if (p.has_prev) prev.gather_inputs(p, m, c, n);
#pragma unroll
    for (int e = 0; e < V; ++e) dh_prev[e] = acc[0][e] + dh_in[e] * (A(1) - z[e]) + go[e];
    scatter(dh, dh_prev, n);
    if (p.has_prev) prev.finish(p, m, c, n, dh_prev);
  }
};

// BwdInit at element i of the (M, C) step: dh = grad_out[T-1] (passed as grad_out_prev,
// with the "prev" tensors set to step T-1), and step T-1's gate gradients.
template <typename T, typename A, bool kAfter> CG_HD void backward_init(const Params& p, int64_t i) {
  const int64_t m = i / p.C;
  const int c = static_cast<int>(i - m * p.C);
  A dh[1];
  PrevStep<T, A, kAfter, 1> prev;
  gather<true>(dh, cptr<T>(p.grad_out_prev) + i, 1);
  prev.gather_inputs(p, m, c, 1);
  mptr<A>(p.dh)[i] = dh[0];
  prev.finish(p, m, c, 1, dh);
}

}  // namespace convgru
