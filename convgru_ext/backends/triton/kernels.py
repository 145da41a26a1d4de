"""The fused Triton kernels of one ConvGRU time step, forward and backward.

Notation (the op contract is in ``convgru_ext/backends/_op.py``): B frames, C hidden
channels, Cin input channels, H x W pixels, M = B*H*W pixels per step, a kh x kw kernel
with dilation (dil_h, dil_w) and "same" padding ``dil*(k-1)//2``, gate order r, z, n.
Every activation is channels-last, so one step of a (B, X, H, W) tensor is an (M, X)
row-major matrix whose rows are pixels.

One step of the recurrence is an implicit GEMM -- a convolution without im2col::

    acc_g[m, c] = sum_{tap, k} A[nbr(m, tap), k] * Wp[tap, g, c, k]

where ``nbr(m, tap)`` is pixel m moved by the tap's offset (zero outside the image), A an
(M, K) activation and Wp a packed weight (``ops.pack_forward``/``pack_backward``: K-contiguous,
as TF32 wgmma wants its B operand, and zero-padded so that no B load needs a mask).  A program
computes BLOCK_M pixels x BLOCK_N channels of up to three gates at once, so that its epilogue holds
every gate of a (pixel, channel) and applies the gate math there: no gate pre-activation makes a
round trip through global memory.

The main loop (``_conv_tile``) is **one loop over taps x channel chunks**: the software pipeline
keeps the next tap's copies in flight while this one multiplies, and drains once, after the loop
(a cell call has two loops, x's and h's); its tap and channel chunk are counters carried across
iterations (no division), A's and B's addresses loop-invariant 32-bit offsets from a 64-bit scalar that
moves with (tap, chunk) (the forward's weights are packed in the loop's order, so that B's offsets
are constants), and A's mask one bit test per pixel (each pixel's in-image taps are bits of an int32,
found before the loop, for kernels of at most 32 taps).  Every dot reads the same A tile, and BLOCK_N
spans every channel of a gate up to 64 (``ops.tile_for``), so A is read once per tap for all gates up
to C = 64 (twice at C = 128).  FWD_RZ multiplies r's and z's columns in one
dot (N = 2 x BLOCK_N), and its epilogue works on that tile as it is (every column knows its gate and
channel: no split of the accumulator).  FWD_AFTER keeps one dot per gate: its epilogue needs r, z and
U_n*h of one channel together, and Triton's blocks are powers of two, so one dot over three gates would
pad N by a third and need a split of the accumulator (a layout conversion through shared memory).
A's copies are 16 bytes wide and bypass L1, except at FWD_RZ's 128-pixel tile (``A_L1``, below).
These loops are safe at ``num_warps=4``, the default tiles' setting (FWD_RZ's 128-pixel tile included:
one warpgroup): the miscompile of pytorch/pytorch#173068 was seen at 8.  The 8-warp tiles (BLOCK_M =
128 in two warpgroups) compile cleanly but stay off until a GPU has run each against the reference
(``config.CONFIG.wide``).  The compile report (``compile_report.py``, committed under
``benchmarks/results/compile/``) holds every kept tile to 0 spills and at most one full pipeline drain
per main loop, and counts each main loop's SASS instructions, loaded bytes and bytes loaded through L1
per HGMMA.64x64x16-equivalent.

Decisions taken from the static cost model (``model.py``), not measured:

* **FWD_RZ: 128-pixel tiles whose A copies allocate in L1; elsewhere 64-pixel tiles whose A copies
  bypass it; B read once per pixel block and tap.**  At the video shape the model put a bf16 FWD_RZ
  step at 64x64x64 tiles at 212 MB of L2 traffic: the taps' A tiles 58 MB, the weights' B tiles
  116 MB, the epilogue 39 MB.  FWD_RZ's 128 x 64 x 64 tile at 4 warps (``ops.RZ_M``, bfloat16 where
  C is a multiple of 64 and the grid fills a wave) reads B half as often (58 MB), and copies A in 8-byte
  pieces (``tl.max_contiguous(..., 4)``: ``cp.async.ca``, ``LDGSTS.E.64``; 16-byte copies are
  ``LDGSTS.E.BYPASS.128`` whatever the cache modifier), which allocate in L1: a block's 9 shifted rows
  span 242 pixels, not 9 x 128, so A is 12 MB, and the epilogue's read of h (an ordinary cached load
  of the centre tap's pixels) hits L1 too: 102 MB in all, under half of 212 (``model.py``, which
  credits L1 exactly where ``ops.l1_taps`` holds).  The 8-byte copies give each thread 16 pixel rows of
  A instead of 8, whose offsets and tap bits stay in registers through the loop: with C at run time the
  kernel spilled 24-32 B on Triton 3.8 (255 registers), so these launches take C as a constant
  (``A_L1``; one compiled kernel per C), which folds the rows' offsets into immediates.  Even so the
  tile holds 0 spills only in bfloat16 at 3 stages (the compile report, C = 64 and 128), and the
  same 128-pixel 4-warp tile spills in FWD_N, FWD_AFTER, BWD_RZ and TF32, where the epilogue holds more;
  at 64 pixels the 8-byte copies cost 19-20 SASS instructions per HGMMA instead of 14-15 (at 128
  pixels twice the HGMMA share each iteration's overhead), so no other launch takes them.  Not taken:
  the weights resident in shared memory in a persistent program per SM (132 x 147 KB: B 116 -> 19 MB),
  since Triton offers no way to keep a dot's B operand in shared memory across a persistent
  program's pixel blocks (held in registers, 9 taps' weights at C = 64 are 288 per thread at 4 warps);
  and a 2-D halo tile, which would need a TMA descriptor per tap (Triton cannot index a shared-memory
  window per tap) and read the L2 per tap all the same.
* **reset "before" keeps two kernels per step.**  One pass would need r on the halo of each pixel
  tile to convolve r*h: with 64-pixel rows at W = 56 that is 3 rows x 66 pixels, ~3x the r
  convolution, +70% of the step's MMA work, to save one launch (at these shapes the launches hide
  behind the GPU's work; where they do not, the CUDA graph of ``graphs.py`` takes them off the host)
  and the r*h round trip (M*C written, read back through L2: 64 of the step's 250 MB of L2
  traffic).

=============  ==  ===================================  ===============================================
kernel / KIND  NG  A operand (this step)                epilogue
=============  ==  ===================================  ===============================================
FWD_RZ          2  h_{t-1} [and x_t in cell mode]       r, z -> gates; r*h -> rh          (reset before)
FWD_N           1  r*h [and x_t in cell mode]           n = tanh(.) -> gates; h_t -> out  (reset before)
FWD_AFTER       3  h_{t-1} [and x_t in cell mode]       r, z, n, U_n*h+b_hn -> gates; h_t (reset after)
BWD_N           1  dgh[t] n block (conv^T)              dr -> dgh[t]; partial dh_{t-1}    (reset before)
BWD_RZ          1  dgh[t] r, z blocks (conv^T)          dh_{t-1}; step t-1's dz, dn       (reset before)
BWD_AFTER       1  dgh[t] r, z, n blocks (conv^T)       dh_{t-1}; step t-1's dr, dz, dn   (reset after)
(init)          -  elementwise                          dh_T = grad_out[T-1]; step T-1's gate grads
=============  ==  ===================================  ===============================================

The backward's data gradient is the same GEMM with the weight transposed and its taps
flipped (odd kernels, symmetric padding).  Accumulation is float32 (``tl.dot`` on tensor
cores for float16/bfloat16, TF32 or exact IEEE float32 for float32) and float64 for
float64 (a multiply-and-sum on the CUDA cores: ``tl.dot`` has no float64 path in every
Triton release we support).  Values a later kernel reads back (r, z, ghn) are rounded to
the storage dtype before they are used, so the backward differentiates exactly what the
forward stored.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Epilogue kinds (the table above).
FWD_RZ = tl.constexpr(0)
FWD_N = tl.constexpr(1)
FWD_AFTER = tl.constexpr(2)
BWD_N = tl.constexpr(3)
BWD_RZ = tl.constexpr(4)
BWD_AFTER = tl.constexpr(5)


# ------------------------------------------------------------------------------------- helpers


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # exp of a non-positive argument only: no overflow; NaN stays NaN.  The absolute error
    # is a few units of the accumulation type's roundoff (also near 0).
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _round(x, like_ptr):
    """``x`` rounded to the element type of ``like_ptr`` and back (what a reload would give)."""
    return x.to(like_ptr.dtype.element_ty).to(x.dtype)


@triton.jit
def _mma(acc, b_a, b_w, IS_F64: tl.constexpr, PRECISION: tl.constexpr):
    """acc + b_a @ b_w: (BLOCK_M, BLOCK_K) @ (BLOCK_K, BLOCK_N)."""
    if IS_F64:
        acc += tl.sum(b_a[:, :, None] * b_w[None, :, :], axis=1)
    else:
        acc = tl.dot(b_a, b_w, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _tap_bits(py, px, m_mask, H, W, pad_h, pad_w, DIL_H, DIL_W, KH: tl.constexpr, KW: tl.constexpr):
    """(BLOCK_M,) int32 whose bit ``row * KW + col`` says that the pixel (py, px) moved by that tap is in
    range and inside the image (KH * KW <= 32): the K loop's A mask is then one test per pixel."""
    bits = tl.zeros_like(py)
    for t in tl.static_range(KH * KW):
        y = py + (DIL_H * (t // KW) - pad_h)
        x = px + (DIL_W * (t % KW) - pad_w)
        inside = m_mask & (y >= 0) & (y < H) & (x >= 0) & (x < W)
        bits |= inside.to(tl.int32) << t
    return bits


@triton.jit
def _conv_tile(
    acc0, acc1, acc2,   # (BLOCK_M, N) accumulators of dots 0, 1, 2 (NG of them are used)
    src_ptr,            # A: the activation, A[p, k] = src_ptr[p * src_stride + k] for k < K
    src_stride,         # elements between consecutive pixels of A
    K,                  # channels of one tap in the reduction
    w_ptr,              # B of dot g at iteration (tap, chunk), K-contiguous and zero-padded past K and past the
    w_k_step,           #   channels (no mask needed): B[k, n] = w_ptr[w_off + g * w_gate_stride + w_cols[n] + k],
    w_tap_step,         #   w_off growing by w_k_step every iteration and by w_tap_step more at a tap's end
    w_gate_stride,
    w_cols,             # (N,) int32: where each output column's weights start within an iteration's B tiles
    row0,               # int64: the tile's first pixel
    loc,                # (BLOCK_M,) int32: the tile's pixels, from row0
    py, px,             # (BLOCK_M,) row and column of the tile's pixels in their frame
    m_mask,             # (BLOCK_M,) pixel in range
    H, W,
    DIL_H, DIL_W,       # dilation (runtime: one compiled kernel serves every dilation)
    NG: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, IS_F64: tl.constexpr, PRECISION: tl.constexpr,
    A_L1: tl.constexpr,  # A's copies 8 bytes wide (cp.async.ca), so that they allocate in L1: the next taps hit there
):
    """Add the 'same' convolution of A with NG blocks of W to the accumulators.

    One loop over taps x channel chunks, so that the software pipeline keeps the next tap's loads in
    flight while this one multiplies, and drains once, after the loop.  The tap and the chunk are
    counters carried from one iteration to the next (no division); A and B are addressed with
    loop-invariant 32-bit offsets from 64-bit scalars that move by a scalar step per iteration; A's
    mask is one bit test per pixel (:func:`_tap_bits`) where the kernel has at most 32 taps.  Every dot
    reads the same A tile: A is loaded once per (tap, chunk) for all NG dots.
    """
    BITS: tl.constexpr = KH * KW <= 32  # each pixel's in-image taps as the bits of an int32
    ROW_ENDS: tl.constexpr = ((1 << (KH * KW)) - 1) // ((1 << KW) - 1) << (KW - 1)  # the bits of each row's last tap
    offs_k = tl.arange(0, BLOCK_K)
    # loop invariants: A's and B's element offsets from a scalar that moves with (tap, chunk)
    a_inv = (loc * src_stride)[:, None] + offs_k[None, :]
    if A_L1:
        a_inv = tl.max_contiguous(a_inv, [1, 4])
    w_inv = w_cols[None, :] + offs_k[:, None]
    a_base = src_ptr + row0 * src_stride
    pad_h = DIL_H * ((KH - 1) // 2)
    pad_w = DIL_W * ((KW - 1) // 2)
    KC = tl.cdiv(K, BLOCK_K) * BLOCK_K  # the channels one tap's chunks span
    # the scalar steps at the end of a tap: to the next tap of the row, and to the next row's first tap
    a_col_step = DIL_W * src_stride - KC
    a_row_step = (DIL_H * W - (KW - 1) * DIL_W) * src_stride - KC
    if BITS:
        bits = _tap_bits(py, px, m_mask, H, W, pad_h, pad_w, DIL_H, DIL_W, KH, KW)
    tap_bit = 1
    dy = -pad_h
    dx = -pad_w
    col = 0
    k0 = 0
    a_off = (dy * W + dx) * src_stride
    w_off = 0
    for _ in range(0, KH * KW * tl.cdiv(K, BLOCK_K)):
        if BITS:
            inside = (bits & tap_bit) != 0
        else:
            y = py + dy
            x = px + dx
            inside = m_mask & (y >= 0) & (y < H) & (x >= 0) & (x < W)
        # the shifted pixel is in the same frame whenever it is inside the image
        p_a = (a_base + a_off) + a_inv
        if EVEN_K:
            b_a = tl.load(p_a, mask=inside[:, None], other=0.0)
        else:
            b_a = tl.load(p_a, mask=inside[:, None] & (offs_k < K - k0)[None, :], other=0.0)
        p_w = (w_ptr + w_off) + w_inv
        acc0 = _mma(acc0, b_a, tl.load(p_w), IS_F64, PRECISION)
        if NG >= 2:
            acc1 = _mma(acc1, b_a, tl.load(p_w + w_gate_stride), IS_F64, PRECISION)
        if NG >= 3:
            acc2 = _mma(acc2, b_a, tl.load(p_w + 2 * w_gate_stride), IS_F64, PRECISION)
        # the next (tap, chunk): chunks first, then the taps of a kernel row, then the rows
        k0 += BLOCK_K
        next_tap = k0 >= K
        k0 = tl.where(next_tap, 0, k0)
        if BITS:
            next_row = next_tap & ((ROW_ENDS & tap_bit) != 0)
            tap_bit = tl.where(next_tap, tap_bit << 1, tap_bit)
        else:
            col += tl.where(next_tap, 1, 0)
            next_row = col == KW
            col = tl.where(next_row, 0, col)
            dx = tl.where(next_row, -pad_w, dx + tl.where(next_tap, DIL_W, 0))
            dy += tl.where(next_row, DIL_H, 0)
        a_off += BLOCK_K + tl.where(next_tap, tl.where(next_row, a_row_step, a_col_step), 0)
        w_off += w_k_step + tl.where(next_tap, w_tap_step, 0)
    return acc0, acc1, acc2


@triton.jit
def _pixels(M, H, W, BLOCK_M: tl.constexpr):
    """This program's BLOCK_M pixels: the first one (int64), their int32 offsets from it, their int64
    indices, the in-range mask, and their (int32) row and column in the frame.

    The epilogue addresses ``ptr + row0 * stride + (loc * stride + channel)``: a scalar 64-bit base and
    32-bit offsets, which halves the registers its pointer tensors would hold as 64-bit offsets."""
    row0 = tl.program_id(0).to(tl.int64) * BLOCK_M
    loc = tl.arange(0, BLOCK_M)
    offs_m = row0 + loc
    hw = (offs_m % (H * W)).to(tl.int32)  # a frame has fewer than 2**31 pixels: the K loop's masks stay 32-bit
    return row0, loc, offs_m, offs_m < M, hw // W, hw % W


@triton.jit
def _input_part(gx_ptr, bias_x_ptr, row0, loc, offs_n, mask, C, gate: tl.constexpr,
                HAS_X: tl.constexpr, HAS_BIAS_X: tl.constexpr, acc):
    """The part of gate ``gate``'s pre-activation that comes from x, as far as it is not in ``acc``.

    Sequence mode: the hoisted projection gx[m, gate*C + c] (biases included).  Cell mode
    (``HAS_X``, x convolved in this kernel): the input bias alone.
    """
    if HAS_X:
        if HAS_BIAS_X:
            b = tl.load(bias_x_ptr + gate * C + offs_n, mask=offs_n < C, other=0.0)
            return tl.zeros_like(acc) + b[None, :].to(acc.dtype)
        return tl.zeros_like(acc)
    p = gx_ptr + row0 * (3 * C) + (loc[:, None] * (3 * C) + gate * C + offs_n[None, :])
    return tl.load(p, mask=mask, other=0.0).to(acc.dtype)


@triton.jit
def _gate_grads_prev(dh, row0, loc, offs_n, mask, C,
                     gates_prev_ptr, h_prev_ptr, dgh_prev_ptr, dxn_prev_ptr, RESET_AFTER: tl.constexpr):
    """Step t-1's gate-gradients from dh = dL/dh_{t-1} (BLOCK_M, BLOCK_N).

    With r, z, n = gates[t-1] and h = h_{t-2}, ``h_{t-1} = h + z*(n - h)`` gives
    ``dz_pre = dh*(n - h)*z*(1 - z)`` and ``dn_pre = dh*z*(1 - n^2)``.  reset "before": dgh[t-1]
    gets dz_pre and dn_pre (dr_pre needs U_n^T dn_pre: step t-1's BWD_N).  reset "after"
    (n = tanh(gx_n + r*ghn)): dxn[t-1] = dn_pre (the input conv's n-gradient), dgh's n block
    = dn_pre*r, dr_pre = dn_pre*ghn*r*(1 - r).
    """
    G: tl.constexpr = 4 if RESET_AFTER else 3
    p_g = gates_prev_ptr + row0 * (G * C) + (loc[:, None] * (G * C) + offs_n[None, :])
    z = tl.load(p_g + C, mask=mask, other=0.0).to(dh.dtype)
    n = tl.load(p_g + 2 * C, mask=mask, other=0.0).to(dh.dtype)
    mc0 = row0 * C
    p_mc = loc[:, None] * C + offs_n[None, :]
    h = tl.load(h_prev_ptr + mc0 + p_mc, mask=mask, other=0.0).to(dh.dtype)
    p_d = dgh_prev_ptr + row0 * (3 * C) + (loc[:, None] * (3 * C) + offs_n[None, :])
    ty = dgh_prev_ptr.dtype.element_ty
    tl.store(p_d + C, (dh * (n - h) * z * (1.0 - z)).to(ty), mask=mask)
    dn = dh * z * (1.0 - n * n)
    if RESET_AFTER:
        r = tl.load(p_g, mask=mask, other=0.0).to(dh.dtype)
        ghn = tl.load(p_g + 3 * C, mask=mask, other=0.0).to(dh.dtype)
        tl.store(dxn_prev_ptr + mc0 + p_mc, dn.to(ty), mask=mask)
        tl.store(p_d + 2 * C, (dn * r).to(ty), mask=mask)
        tl.store(p_d, (dn * ghn * r * (1.0 - r)).to(ty), mask=mask)
    else:
        tl.store(p_d + 2 * C, dn.to(ty), mask=mask)


# ------------------------------------------------------------------------------------- forward


@triton.jit(do_not_specialize=["M", "H", "W", "DIL_H", "DIL_W"])
def forward_step_kernel(
    h_ptr,          # (M, C)          h_{t-1}, the state entering step t
    rh_ptr,         # (M, C)          r*h_{t-1}: FWD_RZ writes it, FWD_N convolves it (reset "before")
    w_h_ptr,        # (taps, K chunks, NP / BLOCK_N, 3, BLOCK_N, BLOCK_K)  weight_hh packed (ops.pack_forward):
                    #                 [tap, kc, nb, g, c, k] = weight_hh[g*C + nb*BLOCK_N + c, kc*BLOCK_K + k, tap]
    x_ptr,          # (M, Cin)        x_t (cell mode, HAS_X)
    w_x_ptr,        # (taps, Cin chunks, NP / BLOCK_N, 3, BLOCK_N, BLOCK_K)  weight_ih packed likewise (HAS_X)
    gx_ptr,         # (M, 3C)         W*x_t + input bias, hoisted before the loop (not HAS_X)
    bias_x_ptr,     # (3C,)           input bias (HAS_X and HAS_BIAS_X)
    bias_hn_ptr,    # (C,)            b_hn (reset "after" and HAS_BIAS_HN)
    gates_ptr,      # (M, G*C)        step t's saved gates r, z, n [, ghn]
    out_ptr,        # (M, C)          h_t
    M, H, W, C, Cin,
    NP,                          # the packed weights' padded channels: C rounded up to BLOCK_N
    KIND: tl.constexpr,          # FWD_RZ, FWD_N or FWD_AFTER
    HAS_X: tl.constexpr,         # cell mode: convolve x_t here (K spans x and h) instead of reading gx
    HAS_BIAS_X: tl.constexpr,
    HAS_BIAS_HN: tl.constexpr,
    DIL_H, DIL_W,                # dilation
    KH: tl.constexpr, KW: tl.constexpr,
    IS_F64: tl.constexpr,        # float64 storage: float64 accumulation on the CUDA cores
    PRECISION: tl.constexpr,     # tl.dot input precision for float32: "tf32" or "ieee"
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr,        # C % BLOCK_K == 0 and (not HAS_X or Cin % BLOCK_K == 0): no channel mask on A
    A_L1: tl.constexpr,          # 0, or C (``ops.l1_taps``): A's copies allocate in L1, h's stride a constant
):
    row0, loc, offs_m, m_mask, py, px = _pixels(M, H, W, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < C
    acc_ty = tl.float64 if IS_F64 else tl.float32
    # The dots of this kernel and their A operand.  FWD_RZ: one dot over r's and z's columns side by side
    # (N = 2 * BLOCK_N: column j is gate j // BLOCK_N, channel offs_n[j % BLOCK_N]); FWD_N: n's; FWD_AFTER:
    # one per gate (its epilogue needs r, z and U_n*h of one channel together).
    if KIND == FWD_RZ:
        NG: tl.constexpr = 1
        N: tl.constexpr = 2 * BLOCK_N
        j = tl.arange(0, N)
        gate = j // BLOCK_N
        chan = tl.program_id(1) * BLOCK_N + j % BLOCK_N
    else:
        NG: tl.constexpr = 1 if KIND == FWD_N else 3
        N: tl.constexpr = BLOCK_N
        gate = tl.zeros((N,), tl.int32)
        chan = offs_n
    FIRST: tl.constexpr = 2 if KIND == FWD_N else 0
    # B: an iteration's tiles are contiguous (ops.pack_forward), so a column's offset in them is a constant
    # (FWD_RZ's column j, of gate j // BLOCK_N, starts j * BLOCK_K after r's first)
    GATE_TILE: tl.constexpr = BLOCK_N * BLOCK_K
    w_cols = FIRST * GATE_TILE + tl.arange(0, N) * BLOCK_K
    w_block = tl.program_id(1) * (3 * GATE_TILE)  # this program's channel block within them
    w_step = 3 * NP * BLOCK_K
    acc0 = tl.zeros((BLOCK_M, N), dtype=acc_ty)
    acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_ty)
    acc2 = tl.zeros_like(acc1)
    acc_xn = tl.zeros_like(acc1)  # reset "after", cell mode: W_n*x_t, kept apart from U_n*h
    if KIND == FWD_N:
        a_ptr = rh_ptr
    else:
        a_ptr = h_ptr
    if A_L1:  # C as a constant: the offsets of A's rows fold into immediates (fewer registers through the loop)
        C_A = A_L1
    else:
        C_A = C
    acc0, acc1, acc2 = _conv_tile(acc0, acc1, acc2, a_ptr, C_A, C_A, w_h_ptr + w_block, w_step, 0, GATE_TILE,
                                  w_cols, row0, loc, py, px, m_mask, H, W, DIL_H, DIL_W, NG, KH, KW, BLOCK_K, EVEN_K,
                                  IS_F64, PRECISION, A_L1)
    if HAS_X:  # cell mode: a second loop over x_t; W_n*x stays apart from U_n*h under reset "after"
        if KIND == FWD_AFTER:
            acc0, acc1, acc_xn = _conv_tile(acc0, acc1, acc_xn, x_ptr, Cin, Cin, w_x_ptr + w_block, w_step, 0,
                                            GATE_TILE, w_cols, row0, loc, py, px, m_mask, H, W, DIL_H, DIL_W, NG,
                                            KH, KW, BLOCK_K, EVEN_K, IS_F64, PRECISION, A_L1)
        else:
            acc0, acc1, acc2 = _conv_tile(acc0, acc1, acc2, x_ptr, Cin, Cin, w_x_ptr + w_block, w_step, 0,
                                          GATE_TILE, w_cols, row0, loc, py, px, m_mask, H, W, DIL_H, DIL_W, NG,
                                          KH, KW, BLOCK_K, EVEN_K, IS_F64, PRECISION, A_L1)

    # ---- epilogue: the gate math of (pixel, channel), in the accumulation type
    mc0 = row0 * C
    ty = gates_ptr.dtype.element_ty
    if KIND == FWD_RZ:  # on r's and z's columns at once: r, z -> gates; r*h -> rh
        mask = m_mask[:, None] & (chan < C)[None, :]
        col3 = gate * C + chan  # the column of (gate, channel) in gx and gates, both (M, 3C)
        if HAS_X:
            pre = acc0
            if HAS_BIAS_X:
                pre += tl.load(bias_x_ptr + col3, mask=chan < C, other=0.0).to(acc_ty)[None, :]
        else:
            pre = acc0 + tl.load(gx_ptr + row0 * (3 * C) + (loc[:, None] * (3 * C) + col3[None, :]), mask=mask,
                                 other=0.0).to(acc_ty)
        rz = _round(_sigmoid(pre), gates_ptr)
        tl.store(gates_ptr + row0 * (3 * C) + (loc[:, None] * (3 * C) + col3[None, :]), rz.to(ty), mask=mask)
        r_mask = mask & (gate == 0)[None, :]
        p_rh = loc[:, None] * C + chan[None, :]
        h = tl.load(h_ptr + mc0 + p_rh, mask=r_mask, other=0.0).to(acc_ty)
        tl.store(rh_ptr + mc0 + p_rh, (rz * h).to(ty), mask=r_mask)
    else:
        mask = m_mask[:, None] & n_mask[None, :]
        p_mc = loc[:, None] * C + offs_n[None, :]
        G: tl.constexpr = 4 if KIND == FWD_AFTER else 3
        p_g = gates_ptr + row0 * (G * C) + (loc[:, None] * (G * C) + offs_n[None, :])
        h = tl.load(h_ptr + mc0 + p_mc, mask=mask, other=0.0).to(acc_ty)
        if KIND == FWD_N:
            n = _tanh(acc0 + _input_part(gx_ptr, bias_x_ptr, row0, loc, offs_n, mask, C, 2, HAS_X, HAS_BIAS_X,
                                         acc0))
            z = tl.load(p_g + C, mask=mask, other=0.0).to(acc_ty)
            tl.store(p_g + 2 * C, n.to(ty), mask=mask)
            tl.store(out_ptr + mc0 + p_mc, (h + z * (n - h)).to(ty), mask=mask)
        else:
            r = _round(_sigmoid(acc0 + _input_part(gx_ptr, bias_x_ptr, row0, loc, offs_n, mask, C, 0,
                                                   HAS_X, HAS_BIAS_X, acc0)), gates_ptr)
            z = _round(_sigmoid(acc1 + _input_part(gx_ptr, bias_x_ptr, row0, loc, offs_n, mask, C, 1,
                                                   HAS_X, HAS_BIAS_X, acc0)), gates_ptr)
            ghn = acc2
            if HAS_BIAS_HN:
                ghn += tl.load(bias_hn_ptr + offs_n, mask=n_mask, other=0.0).to(acc_ty)[None, :]
            ghn = _round(ghn, gates_ptr)
            xn = acc_xn + _input_part(gx_ptr, bias_x_ptr, row0, loc, offs_n, mask, C, 2, HAS_X, HAS_BIAS_X, acc0)
            n = _tanh(xn + r * ghn)
            tl.store(p_g, r.to(ty), mask=mask)
            tl.store(p_g + C, z.to(ty), mask=mask)
            tl.store(p_g + 2 * C, n.to(ty), mask=mask)
            tl.store(p_g + 3 * C, ghn.to(ty), mask=mask)
            tl.store(out_ptr + mc0 + p_mc, (h + z * (n - h)).to(ty), mask=mask)


# ------------------------------------------------------------------------------------ backward


@triton.jit(do_not_specialize=["M"])
def backward_init_kernel(
    grad_last_ptr,  # (M, C)      grad_out[T-1]
    dh_ptr,         # (M, C)      acc dtype: dL/dh_{T-1} (written)
    gates_prev_ptr, # (M, G*C)    gates[T-1]
    h_prev_ptr,     # (M, C)      h_{T-2}, the state entering step T-1
    dgh_prev_ptr,   # (M, 3C)     dgh[T-1] (written)
    dxn_prev_ptr,   # (M, C)      dxn[T-1] (written, reset "after")
    M, C,
    RESET_AFTER: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row0 = tl.program_id(0).to(tl.int64) * BLOCK_M
    loc = tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (row0 + loc < M)[:, None] & (offs_n < C)[None, :]
    mc0 = row0 * C
    p_mc = loc[:, None] * C + offs_n[None, :]
    dh = tl.load(grad_last_ptr + mc0 + p_mc, mask=mask, other=0.0).to(dh_ptr.dtype.element_ty)
    tl.store(dh_ptr + mc0 + p_mc, dh, mask=mask)
    _gate_grads_prev(dh, row0, loc, offs_n, mask, C, gates_prev_ptr, h_prev_ptr, dgh_prev_ptr, dxn_prev_ptr,
                     RESET_AFTER)


@triton.jit(do_not_specialize=["M", "H", "W", "DIL_H", "DIL_W"])
def backward_step_kernel(
    dgh_ptr,        # (M, 3C)     dgh[t], step t's gate pre-activation gradients (dr, dz, dn)
    w_t_ptr,        # (taps, NP, KP) weight_hh transposed, taps flipped (ops.pack_backward):
                    #             [tap, c, o] = weight_hh[o, c, taps-1-tap]
    gates_ptr,      # (M, G*C)    gates[t]
    h_ptr,          # (M, C)      h_{t-1}
    dh_in_ptr,      # (M, C)      acc dtype: BWD_N, BWD_AFTER: dL/dh_t;  BWD_RZ: BWD_N's partial
    dh_out_ptr,     # (M, C)      acc dtype: BWD_N: partial;  BWD_RZ, BWD_AFTER: dL/dh_{t-1}
    grad_prev_ptr,  # (M, C)      grad_out[t-1]        (HAS_PREV)
    gates_prev_ptr, # (M, G*C)    gates[t-1]           (HAS_PREV)
    h_prev_ptr,     # (M, C)      h_{t-2}              (HAS_PREV)
    dgh_prev_ptr,   # (M, 3C)     dgh[t-1] (written)   (HAS_PREV)
    dxn_prev_ptr,   # (M, C)      dxn[t-1] (written)   (HAS_PREV, reset "after")
    M, H, W, C,
    NP, KP,                      # the packed weight's padded channel and reduction sizes
    KIND: tl.constexpr,          # BWD_N, BWD_RZ or BWD_AFTER
    HAS_PREV: tl.constexpr,      # t > 0: complete dL/dh_{t-1} with grad_out[t-1], compute step t-1's gate grads
    DIL_H, DIL_W,                # dilation
    KH: tl.constexpr, KW: tl.constexpr,
    IS_F64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr,        # (this kind's reduction size) % BLOCK_K == 0: no channel mask on A
):
    row0, loc, offs_m, m_mask, py, px = _pixels(M, H, W, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < C
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64 if IS_F64 else tl.float32)
    C3 = 3 * C
    # The A operand: gate blocks FIRST .. FIRST+BLOCKS-1 of dgh[t], with the matching rows of w_t:
    # BWD_N: U_n^T dn_pre = d(r*h);  BWD_RZ: U_rz^T [dr_pre, dz_pre];  BWD_AFTER: U^T [dr_pre, dz_pre, dghn]
    FIRST: tl.constexpr = 2 if KIND == BWD_N else 0
    BLOCKS: tl.constexpr = 1 if KIND == BWD_N else (2 if KIND == BWD_RZ else 3)
    KC = tl.cdiv(BLOCKS * C, BLOCK_K) * BLOCK_K
    acc, _, _ = _conv_tile(acc, acc, acc, dgh_ptr + FIRST * C, C3, BLOCKS * C, w_t_ptr + FIRST * C, BLOCK_K,
                           NP * KP - KC, 0,
                           offs_n * KP, row0, loc, py, px, m_mask, H, W,
                           DIL_H, DIL_W, 1, KH, KW, BLOCK_K, EVEN_K, IS_F64, PRECISION, False)

    # ---- epilogue
    mask = m_mask[:, None] & n_mask[None, :]
    mc0 = row0 * C
    p_mc = loc[:, None] * C + offs_n[None, :]
    G: tl.constexpr = 4 if KIND == BWD_AFTER else 3
    p_g = gates_ptr + row0 * (G * C) + (loc[:, None] * (G * C) + offs_n[None, :])
    dh_in = tl.load(dh_in_ptr + mc0 + p_mc, mask=mask, other=0.0)
    if KIND == BWD_N:
        # acc = d(r*h): dr_pre -> dgh[t]'s r block; dh_{t-1} but for the r/z convolutions' part
        r = tl.load(p_g, mask=mask, other=0.0).to(acc.dtype)
        z = tl.load(p_g + C, mask=mask, other=0.0).to(acc.dtype)
        h = tl.load(h_ptr + mc0 + p_mc, mask=mask, other=0.0).to(acc.dtype)
        p_dr = dgh_ptr + row0 * C3 + (loc[:, None] * C3 + offs_n[None, :])
        tl.store(p_dr, (acc * h * r * (1.0 - r)).to(dgh_ptr.dtype.element_ty), mask=mask)
        dh = acc * r + dh_in * (1.0 - z)
        if HAS_PREV:
            dh += tl.load(grad_prev_ptr + mc0 + p_mc, mask=mask, other=0.0).to(acc.dtype)
        tl.store(dh_out_ptr + mc0 + p_mc, dh, mask=mask)
    else:
        if KIND == BWD_RZ:  # acc = U_rz^T [dr, dz]: dh_{t-1} = acc + BWD_N's partial
            dh = acc + dh_in
        else:  # acc = U^T [dr, dz, dghn]: dh_{t-1} = acc + dh_t*(1 - z) + grad_out[t-1]
            z = tl.load(p_g + C, mask=mask, other=0.0).to(acc.dtype)
            dh = acc + dh_in * (1.0 - z)
            if HAS_PREV:
                dh += tl.load(grad_prev_ptr + mc0 + p_mc, mask=mask, other=0.0).to(acc.dtype)
        tl.store(dh_out_ptr + mc0 + p_mc, dh, mask=mask)
        if HAS_PREV:
            _gate_grads_prev(dh, row0, loc, offs_n, mask, C, gates_prev_ptr, h_prev_ptr, dgh_prev_ptr,
                             dxn_prev_ptr, KIND == BWD_AFTER)


@triton.jit
def interpreter_probe_kernel(x_ptr, n):
    """Writes ``x[i] = i`` for ``i < n`` in a loop with a runtime bound, as every step kernel's K loop has
    (``ops.interpreter_problem``: Triton 3.6's interpreter cannot run one under NumPy 2)."""
    for i in range(0, n):
        tl.store(x_ptr + i, i)
