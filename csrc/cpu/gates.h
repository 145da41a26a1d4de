// The gate math of one step of the CPU loops (csrc/cpu/loops.cpp), over the rows [begin, end) of a channels-last
// frame: row p is one pixel, its C channels contiguous.  Each pass reads what a convolution just wrote and writes
// what the next convolution or the next step reads, in one sweep.
//
// No include guard: loops.cpp includes this file once per instruction set, inside a namespace that defines
//   Vec     one SIMD register of floats: kWidth lanes, load/store, + - *, sigmoid, tanh, broadcast of a float;
//   Scalar  the same interface for one float (the lanes past the last multiple of Vec::kWidth);
//   CONVGRU_ISA_FN  what each function is declared with: `inline`, plus the instruction set's target attribute.
// Pointer arguments name a row's first element; `s*` are row strides in elements.  Gate rows (`gates`, of stride
// G*C) hold r, z, n (and U_n*h + b_hn under reset "after") in blocks of C; gradient rows (`dgh`, stride 3C) hold
// the gradients of the r, z, n pre-activations.  An optional output is skipped where its pointer is null.

// Runs `fn<Vec>` on whole registers of channels, then `fn<Scalar>` on the tail; `c` is the first channel.
#define CONVGRU_LANES(C, fn, args)                                                 \
  do {                                                                             \
    int64_t c = 0;                                                                 \
    for (; c + Vec::kWidth <= (C); c += Vec::kWidth) fn<Vec> args;                \
    for (; c < (C); ++c) fn<Scalar> args;                                          \
  } while (0)

// ----------------------------------------------------------------------------- forward

template <class V>
CONVGRU_ISA_FN void reset_gate_lanes(int64_t c, int64_t C, float* a, const float* h, float* rh, float* gates) {
  // a: the [r | z] pre-activations W*x + U*h + b; z goes back into a for update_lanes
  const V r = V::sigmoid(V::load(a + c)), z = V::sigmoid(V::load(a + C + c));
  z.store(a + C + c);
  (r * V::load(h + c)).store(rh + c);  // r * h, the input of U_n
  if (gates != nullptr) {
    r.store(gates + c);
    z.store(gates + C + c);
  }
}

template <class V>
CONVGRU_ISA_FN void update_lanes(int64_t c, const float* b, const float* z, const float* h, float* out, float* n_out) {
  // b: n's pre-activation W_n*x + U_n*(r*h) + b_n
  const V hc = V::load(h + c), n = V::tanh(V::load(b + c));
  (hc + V::load(z + c) * (n - hc)).store(out + c);  // h' = h + z (n - h)
  if (n_out != nullptr) n.store(n_out + c);
}

template <class V>
CONVGRU_ISA_FN void reset_after_lanes(int64_t c, int64_t C, const float* a, const float* g, const float* h, float* out,
                                      float* gates) {
  // a: [r | z | n] of U*h + (0, 0, b_hn); g: [r | z | n] of W*x + b
  const V r = V::sigmoid(V::load(a + c) + V::load(g + c));
  const V z = V::sigmoid(V::load(a + C + c) + V::load(g + C + c));
  const V ghn = V::load(a + 2 * C + c);
  const V n = V::tanh(V::load(g + 2 * C + c) + r * ghn);
  const V hc = V::load(h + c);
  (hc + z * (n - hc)).store(out + c);
  if (gates != nullptr) {
    r.store(gates + c);
    z.store(gates + C + c);
    n.store(gates + 2 * C + c);
    ghn.store(gates + 3 * C + c);
  }
}

// reset "before", after the r/z convolution: z in place of its pre-activation, r*h into `rh`, r and z to `gates`.
//   a  (P, 2C) stride sa    h  (P, C) stride sh    rh  (P, C) stride srh    gates  (P, 3C) stride 3C, or null
CONVGRU_ISA_FN void reset_gate(int64_t begin, int64_t end, int64_t C, float* a, int64_t sa, const float* h, int64_t sh,
                               float* rh, int64_t srh, float* gates) {
  for (int64_t p = begin; p < end; ++p) {
    float* gp = gates == nullptr ? nullptr : gates + p * 3 * C;
    CONVGRU_LANES(C, reset_gate_lanes, (c, C, a + p * sa, h + p * sh, rh + p * srh, gp));
  }
}

// reset "before", after the n convolution: out = h + z (tanh(b) - h), n to `gates`.
//   b  (P, C) stride sb    z  (P, C) stride sz    h, out  (P, C) strides sh, so    gates as reset_gate's, or null
CONVGRU_ISA_FN void update(int64_t begin, int64_t end, int64_t C, const float* b, int64_t sb, const float* z,
                           int64_t sz, const float* h, int64_t sh, float* out, int64_t so, float* gates) {
  for (int64_t p = begin; p < end; ++p) {
    float* np = gates == nullptr ? nullptr : gates + p * 3 * C + 2 * C;
    CONVGRU_LANES(C, update_lanes, (c, b + p * sb, z + p * sz, h + p * sh, out + p * so, np));
  }
}

// reset "after", after the one convolution of h: the whole step; r, z, n, U_n*h + b_hn to `gates`.
//   a, g  (P, 3C) strides sa, sg    h, out  (P, C) strides sh, so    gates  (P, 4C) stride 4C, or null
CONVGRU_ISA_FN void reset_after_step(int64_t begin, int64_t end, int64_t C, const float* a, int64_t sa, const float* g,
                                     int64_t sg, const float* h, int64_t sh, float* out, int64_t so, float* gates) {
  for (int64_t p = begin; p < end; ++p) {
    float* gp = gates == nullptr ? nullptr : gates + p * 4 * C;
    CONVGRU_LANES(C, reset_after_lanes, (c, C, a + p * sa, g + p * sg, h + p * sh, out + p * so, gp));
  }
}

// ----------------------------------------------------------------------------- backward
// dh is dL/dh' of the step (h' = h + z (n - h)); h its entering state; one = 1.

template <class V>
CONVGRU_ISA_FN void z_n_grad_lanes(int64_t c, int64_t C, int64_t G, const float* gates, const float* h, const float* dh,
                                   float* dgh, float* d_rz, float* d_n, float* dxn) {
  const V one = V::broadcast(1.0f), r = V::load(gates + c), z = V::load(gates + C + c), n = V::load(gates + 2 * C + c);
  const V dhc = V::load(dh + c);
  const V dz = (n - V::load(h + c)) * dhc * z * (one - z);  // through sigmoid: z (1 - z)
  const V dn = dhc * z * (one - n * n);                     // through tanh: 1 - n^2
  dz.store(dgh + C + c);
  if (G == 3) {  // reset "before": n = tanh(W_n*x + U_n*(r*h) + b_n)
    dn.store(dgh + 2 * C + c);
    dz.store(d_rz + C + c);
    dn.store(d_n + c);
  } else {  // "after": n = tanh(W_n*x + b_n + r (U_n*h + b_hn)); the input convolution's n gradient is dn itself
    const V ghn = V::load(gates + 3 * C + c);
    dn.store(dxn + c);
    (dn * r).store(dgh + 2 * C + c);
    (dn * ghn * r * (one - r)).store(dgh + c);
  }
}

template <class V>
CONVGRU_ISA_FN void r_grad_lanes(int64_t c, const float* drh, const float* h, const float* r, float* dgh, float* d_rz) {
  // reset "before": d(r*h)/dr = h, through sigmoid
  const V rc = V::load(r + c), dr = V::load(drh + c) * V::load(h + c) * rc * (V::broadcast(1.0f) - rc);
  dr.store(dgh + c);
  dr.store(d_rz + c);
}

template <class V>
CONVGRU_ISA_FN void state_grad_lanes(int64_t c, const float* dh_conv, const float* drh, const float* r,
                                     const float* z, const float* grad_next, float* dh) {
  // dL/dh = U's data gradient + (r * dL/d(r*h) under "before") + dh' (1 - z) + the gradient of the output h
  V d = V::load(dh_conv + c) + V::load(dh + c) * (V::broadcast(1.0f) - V::load(z + c));
  if (drh != nullptr) d = d + V::load(drh + c) * V::load(r + c);
  if (grad_next != nullptr) d = d + V::load(grad_next + c);
  d.store(dh + c);
}

// Before the data gradients: the z and n pre-activation gradients (and r's under "after") into `dgh`; under
// "before" also into the dense inputs of U_rz's and U_n's data gradients (d_rz, d_n); under "after" dn into dxn.
//   gates  (P, G*C)    h, dh  (P, C)    dgh  (P, 3C)    d_rz  (P, 2C)    d_n, dxn  (P, C); all dense
CONVGRU_ISA_FN void z_n_grad(int64_t begin, int64_t end, int64_t C, int64_t G, const float* gates, const float* h,
                             const float* dh, float* dgh, float* d_rz, float* d_n, float* dxn) {
  for (int64_t p = begin; p < end; ++p) {
    float* rz = d_rz == nullptr ? nullptr : d_rz + p * 2 * C;
    float* n = d_n == nullptr ? nullptr : d_n + p * C;
    float* xn = dxn == nullptr ? nullptr : dxn + p * C;
    CONVGRU_LANES(C, z_n_grad_lanes, (c, C, G, gates + p * G * C, h + p * C, dh + p * C, dgh + p * 3 * C, rz, n, xn));
  }
}

// reset "before", after U_n's data gradient drh: r's pre-activation gradient into dgh and d_rz.
CONVGRU_ISA_FN void r_grad(int64_t begin, int64_t end, int64_t C, const float* drh, const float* h,
                           const float* gates, float* dgh, float* d_rz) {
  for (int64_t p = begin; p < end; ++p)
    CONVGRU_LANES(C, r_grad_lanes, (c, drh + p * C, h + p * C, gates + p * 3 * C, dgh + p * 3 * C, d_rz + p * 2 * C));
}

// After U's data gradient dh_conv: dh becomes dL/dh of the entering state, plus grad_next (the output gradient
// of that state, null for h0).  drh: U_n's data gradient under "before", else null.
CONVGRU_ISA_FN void state_grad(int64_t begin, int64_t end, int64_t C, int64_t G, const float* dh_conv,
                               const float* drh, const float* gates, const float* grad_next, float* dh) {
  for (int64_t p = begin; p < end; ++p) {
    const float* gp = gates + p * G * C;
    CONVGRU_LANES(C, state_grad_lanes, (c, dh_conv + p * C, drh == nullptr ? nullptr : drh + p * C, gp, gp + C,
                                        grad_next == nullptr ? nullptr : grad_next + p * C, dh + p * C));
  }
}

#undef CONVGRU_LANES
