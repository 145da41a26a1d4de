// The gate math of one step of the CPU inference loop (csrc/cpu/infer.cpp), over the rows [begin, end) of a
// channels-last frame: row p is one pixel, its C channels contiguous.  Each pass reads the pre-activations
// a convolution just wrote and writes what the next convolution or the next step reads, in one sweep.
//
// No include guard: infer.cpp includes this file once per instruction set, inside a namespace that defines
//   Vec     one SIMD register of floats: kWidth lanes, load/store/broadcast, + - *, sigmoid, tanh;
//   Scalar  the same interface for one float (the lanes past the last multiple of Vec::kWidth);
//   CONVGRU_ISA_FN  what each function is declared with: `inline`, plus the instruction set's target attribute.
// Pointer arguments name a row's first element; `s*` are row strides in elements.  Each row runs whole
// registers, then its tail channels one float at a time.

template <class V>
CONVGRU_ISA_FN void reset_gate_lanes(int64_t c, int64_t C, float* a, const float* h, float* rh) {
  // a: the [r | z] pre-activations W*x + U*h + b
  V::sigmoid(V::load(a + C + c)).store(a + C + c);                 // z, in place, for update_lanes
  (V::sigmoid(V::load(a + c)) * V::load(h + c)).store(rh + c);    // r * h, the input of U_n
}

template <class V>
CONVGRU_ISA_FN void update_lanes(int64_t c, const float* b, const float* z, const float* h, float* out) {
  // b: n's pre-activation W_n*x + U_n*(r*h) + b_n
  const V hc = V::load(h + c);
  (hc + V::load(z + c) * (V::tanh(V::load(b + c)) - hc)).store(out + c);  // h' = h + z (n - h)
}

template <class V>
CONVGRU_ISA_FN void reset_after_lanes(int64_t c, int64_t C, const float* a, const float* g, const float* h, float* out) {
  // a: [r | z | n] of U*h + (0, 0, b_hn); g: [r | z | n] of W*x + b
  const V r = V::sigmoid(V::load(a + c) + V::load(g + c));
  const V z = V::sigmoid(V::load(a + C + c) + V::load(g + C + c));
  const V n = V::tanh(V::load(g + 2 * C + c) + r * V::load(a + 2 * C + c));
  const V hc = V::load(h + c);
  (hc + z * (n - hc)).store(out + c);
}

// reset "before", after the r/z convolution: z in place of its pre-activation, r*h into `rh`.
//   a  (P, 2C) rows of stride sa     h  (P, C) rows of stride sh     rh  (P, C) rows of stride srh
CONVGRU_ISA_FN void reset_gate(int64_t begin, int64_t end, int64_t C, float* a, int64_t sa, const float* h, int64_t sh,
                               float* rh, int64_t srh) {
  for (int64_t p = begin; p < end; ++p) {
    float* ap = a + p * sa;
    const float* hp = h + p * sh;
    float* rp = rh + p * srh;
    int64_t c = 0;
    for (; c + Vec::kWidth <= C; c += Vec::kWidth) reset_gate_lanes<Vec>(c, C, ap, hp, rp);
    for (; c < C; ++c) reset_gate_lanes<Scalar>(c, C, ap, hp, rp);
  }
}

// reset "before", after the n convolution: out = h + z (tanh(b) - h).
//   b  (P, C) rows of stride sb     z  (P, C) rows of stride sz     h, out  (P, C) rows of stride sh, so
CONVGRU_ISA_FN void update(int64_t begin, int64_t end, int64_t C, const float* b, int64_t sb, const float* z, int64_t sz,
                           const float* h, int64_t sh, float* out, int64_t so) {
  for (int64_t p = begin; p < end; ++p) {
    const float *bp = b + p * sb, *zp = z + p * sz, *hp = h + p * sh;
    float* op = out + p * so;
    int64_t c = 0;
    for (; c + Vec::kWidth <= C; c += Vec::kWidth) update_lanes<Vec>(c, bp, zp, hp, op);
    for (; c < C; ++c) update_lanes<Scalar>(c, bp, zp, hp, op);
  }
}

// reset "after", after the one convolution of h: the whole step.
//   a  (P, 3C) rows of stride sa     g  (P, 3C) rows of stride sg     h, out  (P, C) rows of stride sh, so
CONVGRU_ISA_FN void reset_after_step(int64_t begin, int64_t end, int64_t C, const float* a, int64_t sa, const float* g,
                             int64_t sg, const float* h, int64_t sh, float* out, int64_t so) {
  for (int64_t p = begin; p < end; ++p) {
    const float *ap = a + p * sa, *gp = g + p * sg, *hp = h + p * sh;
    float* op = out + p * so;
    int64_t c = 0;
    for (; c + Vec::kWidth <= C; c += Vec::kWidth) reset_after_lanes<Vec>(c, C, ap, gp, hp, op);
    for (; c < C; ++c) reset_after_lanes<Scalar>(c, C, ap, gp, hp, op);
  }
}
