"""The CPU implementations of the CUDA kernels' warp primitives (csrc/cuda/mma.cuh), which the emulator
runs in place of the inline PTX, against the PTX ISA's fragment tables written out here independently:

(a) ldmatrix.x4 [.trans] hands each lane the elements the table says;
(b) mma.sync (m16n8k16 bf16/f16, m16n8k8 tf32) of fragments built by the table is A @ B + C;
(c) the kernel's own composition (swizzled shared tiles, ldmatrix / 32-bit fragment loads, mma.sync,
    and the epilogue's reading of the accumulator registers) is the CTA tile's matrix product,
    for every math mode and every forward kernel's tile.

No GPU needed: the ops are the extension's test-only CPU entry points.
"""

import pytest
import torch

from convgru_ext.backends.cuda import load_extension
from convgru_ext.testing import rel_err

LANES = range(32)
LOWP = {"bf16": torch.bfloat16, "f16": torch.float16}


@pytest.fixture(autouse=True)
def _extension():
    reason = load_extension()
    if reason:
        pytest.skip(reason)


def _u16(t: torch.Tensor) -> torch.Tensor:
    """The 16-bit patterns of a 16-bit tensor, as int64 in [0, 2**16)."""
    return t.contiguous().view(torch.int16).long() & 0xFFFF


def _reg(lo: int, hi: int) -> int:
    """Two 16-bit patterns as one 32-bit register (lo in the low half), as a signed int32 value."""
    v = (lo & 0xFFFF) | ((hi & 0xFFFF) << 16)
    return v - (1 << 32) if v >= 1 << 31 else v


def _halves(reg: int) -> tuple:
    return reg & 0xFFFF, (reg >> 16) & 0xFFFF


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to TF32: 10 mantissa bits, to nearest with ties away from zero (cvt.rna.tf32.f32)."""
    bits = x.float().contiguous().view(torch.int32).long() & 0xFFFFFFFF
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = torch.where(finite, (bits + 0x1000) & 0xFFFFE000, bits)
    return torch.where(rounded >= 1 << 31, rounded - (1 << 32), rounded).to(torch.int32).view(torch.float32)


def _bits32(x: torch.Tensor) -> list:
    return x.float().contiguous().view(torch.int32).tolist()


# ---- (a) ldmatrix ----

@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
def test_ldmatrix_x4_distributes_rows_as_the_isa_table(trans, rng):
    """Lane l gives the address of row l % 8 of matrix l // 8; register j of lane l holds, of matrix j,
    elements (l//4, 2*(l%4)) and (l//4, 2*(l%4)+1), or with .trans (2*(l%4), l//4) and (2*(l%4)+1, l//4)."""
    smem = torch.randint(-2**15, 2**15, (64 * 64,), generator=rng, dtype=torch.int64).to(torch.int16)
    rows = torch.randint(0, 64, (32,), generator=rng)
    chunks = torch.randint(0, 8, (32,), generator=rng)
    offsets = rows * 64 + chunks * 8  # 16-byte aligned rows anywhere in the buffer
    got = torch.ops.convgru_ext._cuda_emulate_ldmatrix(smem, offsets, trans).tolist()
    words = _u16(smem).tolist()
    for lane in LANES:
        g, t = lane // 4, lane % 4
        for j in range(4):
            matrix = [offsets[8 * j + r].item() for r in range(8)]  # row r's address
            if trans:
                lo, hi = words[matrix[2 * t] + g], words[matrix[2 * t + 1] + g]
            else:
                lo, hi = words[matrix[g] + 2 * t], words[matrix[g] + 2 * t + 1]
            assert got[lane][j] == _reg(lo, hi), (lane, j)


def test_ldmatrix_rejects_unaligned_addresses():
    smem = torch.zeros(256, dtype=torch.int16)
    offsets = torch.arange(32) * 8
    offsets[5] = 3
    with pytest.raises(RuntimeError, match="lane 5's row offset 3 must be a multiple of 8"):
        torch.ops.convgru_ext._cuda_emulate_ldmatrix(smem, offsets, False)


# ---- (b) mma.sync ----

def _fragments(math, A, B, C):
    """Lane registers of A (16 x K), B (K x 8), C (16 x 8) per the PTX ISA's fragment tables."""
    a, b, c = [], [], []
    for lane in LANES:
        g, t = lane // 4, lane % 4
        c.append([C[g, 2 * t].item(), C[g, 2 * t + 1].item(), C[g + 8, 2 * t].item(), C[g + 8, 2 * t + 1].item()])
        if math == "tf32":
            Ab, Bb = _bits32(A), _bits32(B)
            a.append([Ab[g][t], Ab[g + 8][t], Ab[g][t + 4], Ab[g + 8][t + 4]])
            b.append([Bb[t][g], Bb[t + 4][g]])
        else:
            Au, Bu = _u16(A).tolist(), _u16(B).tolist()
            a.append([_reg(Au[r][k], Au[r][k + 1]) for r, k in ((g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8),
                                                               (g + 8, 2 * t + 8))])
            b.append([_reg(Bu[k][g], Bu[k + 1][g]) for k in (2 * t, 2 * t + 8)])
    return (torch.tensor(a, dtype=torch.int32), torch.tensor(b, dtype=torch.int32),
            torch.tensor(c, dtype=torch.float32))


def _from_c_fragment(d: torch.Tensor) -> torch.Tensor:
    D = torch.empty(16, 8, dtype=d.dtype)
    for lane in LANES:
        g, t = lane // 4, lane % 4
        D[g, 2 * t], D[g, 2 * t + 1], D[g + 8, 2 * t], D[g + 8, 2 * t + 1] = d[lane]
    return D


@pytest.mark.parametrize("math", ["bf16", "f16", "tf32"])
def test_mma_sync_is_the_matrix_product_per_the_fragment_tables(math, rng):
    K = 8 if math == "tf32" else 16
    A = torch.randn(16, K, generator=rng)
    B = torch.randn(K, 8, generator=rng)
    C = torch.randn(16, 8, generator=rng)
    A, B = (_tf32(A), _tf32(B)) if math == "tf32" else (A.to(LOWP[math]), B.to(LOWP[math]))
    a, b, c = _fragments(math, A, B, C)
    d = torch.ops.convgru_ext._cuda_emulate_mma(a, b, c, math)
    want = A.double() @ B.double() + C.double()
    assert rel_err(_from_c_fragment(d).double(), want) <= 1e-6  # exact products, fp32 sum of K + 1 terms
    # the mapping matters: the same registers read as another lane's are not the product
    assert rel_err(_from_c_fragment(d.roll(1, 0)).double(), want) > 1e-2


def test_mma_rejects_non_tensor_core_math():
    z = torch.zeros(32, 4, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="math must be f16, bf16 or tf32"):
        torch.ops.convgru_ext._cuda_emulate_mma(z, z[:, :2].contiguous(), torch.zeros(32, 4), "f32")


# ---- (c) the kernel's composition of them over a CTA tile ----

MATHS = {"bf16": torch.bfloat16, "f16": torch.float16, "tf32": torch.float32, "f32": torch.float32,
         "f64": torch.float64}
TOL = {"bf16": 1e-5, "f16": 1e-5, "tf32": 1e-5, "f32": 1e-5, "f64": 1e-12}  # fp32 (fp64) sums of exact products


@pytest.mark.parametrize("kernel", ["FwdRZ", "FwdN", "FwdAfter"])
@pytest.mark.parametrize("math", list(MATHS))
def test_cta_tile_product_is_the_matrix_product(math, kernel, rng):
    """The kernel's shared layout, fragment loads, products and accumulator mapping compose to A @ B."""
    bm, bk, ng, bn = torch.ops.convgru_ext._cuda_tile_shape(math, kernel)
    dtype = MATHS[math]
    a = torch.randn(bm, bk, generator=rng, dtype=torch.float64).to(dtype)
    b = torch.randn(bk, ng * bn, generator=rng, dtype=torch.float64).to(dtype)
    got = torch.ops.convgru_ext._cuda_emulate_cta_product(a, b, math, kernel)
    a64, b64 = (_tf32(a).double(), _tf32(b).double()) if math == "tf32" else (a.double(), b.double())
    want = a64 @ b64
    assert got.shape == want.shape
    assert rel_err(got, want) <= TOL[math]
    per_row = (got - want).abs().amax(dim=1) / want.abs().amax()
    assert per_row.max() <= 100 * TOL[math], f"rows off: {per_row.nonzero().flatten().tolist()[:10]}"


def test_cta_product_checks_shapes():
    bm, bk, ng, bn = torch.ops.convgru_ext._cuda_tile_shape("bf16", "FwdN")
    a = torch.ones(bm, bk + 1, dtype=torch.bfloat16)
    b = torch.ones(bk, ng * bn, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"`a` must be a contiguous CPU BFloat16 tensor of shape"):
        torch.ops.convgru_ext._cuda_emulate_cta_product(a, b, "bf16", "FwdN")
