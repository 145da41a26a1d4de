"""The CPU implementations of the CUDA kernels' warp primitives (csrc/cuda/mma.cuh), which the emulator
runs in place of the inline PTX, against the PTX ISA's fragment tables written out here independently:

(a) ldmatrix.x4 [.trans] hands each lane the elements the table says;
(b) mma.sync (m16n8k16 bf16/f16, m16n8k8 tf32) of fragments built by the table is A @ B + C;
(c) the kernel's own composition (swizzled shared tiles, ldmatrix / 32-bit fragment loads, mma.sync,
    and the epilogue's reading of the accumulator registers) is the CTA tile's matrix product,
    for every math mode and every forward kernel's tile, narrow and (bf16, f16, tf32) wide;
(d) the shared-memory addresses of every fragment load the emulated kernels issue (every GEMM kernel,
    bf16 / f16 / tf32, both tiles) meet no bank conflict, under the banking model written out here.

``python tests/test_cuda_primitives.py`` prints (d)'s count per kernel
(benchmarks/results/compile/cuda-bank-conflicts.txt keeps it).

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


TILES = [(m, w) for m in MATHS for w in ([False, True] if m in ("bf16", "f16", "tf32") else [False])]


@pytest.mark.parametrize("kernel", ["FwdRZ", "FwdN", "FwdAfter"])
@pytest.mark.parametrize("math,wide", TILES, ids=[f"{m}-{'wide' if w else 'narrow'}" for m, w in TILES])
def test_cta_tile_product_is_the_matrix_product(math, wide, kernel, rng):
    """The kernel's shared layout, fragment loads, products and accumulator mapping compose to A @ B."""
    bm, bk, ng, bn = torch.ops.convgru_ext._cuda_tile_shape(math, kernel, wide)
    assert bn == (2 if wide else 1) * torch.ops.convgru_ext._cuda_tile_shape(math, kernel)[3]
    dtype = MATHS[math]
    a = torch.randn(bm, bk, generator=rng, dtype=torch.float64).to(dtype)
    b = torch.randn(bk, ng * bn, generator=rng, dtype=torch.float64).to(dtype)
    got = torch.ops.convgru_ext._cuda_emulate_cta_product(a, b, math, kernel, wide)
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
    with pytest.raises(RuntimeError, match=r"`b` must be a contiguous CPU BFloat16 tensor of shape"):
        torch.ops.convgru_ext._cuda_emulate_cta_product(a[:, :bk].contiguous(), b, "bf16", "FwdN", True)
    with pytest.raises(RuntimeError, match="only f16, bf16 and tf32 have a wide tile"):
        torch.ops.convgru_ext._cuda_tile_shape("f32", "FwdRZ", True)


# ---- (d) bank conflicts of the fragment loads ----
#
# The model: shared memory is 32 banks of 4 bytes; a warp's load instruction is served in passes
# ("wavefronts") over groups of 128 bytes' worth of lanes (all 32 lanes for 4-byte loads; for ldmatrix,
# whose lanes each give one 16-byte row, the 8 lanes of each 8 x 8 matrix); within a group, lanes reading
# the same 4-byte word share it, and each bank serves one word per wavefront, so a group takes as many
# wavefronts as the most distinct words any one bank holds among its reads.  "n-way": wavefronts over the
# conflict-free count.

TENSOR_MATHS = ["bf16", "f16", "tf32"]
GEMM_KERNELS = ["FwdRZ", "FwdN", "FwdAfter", "BwdN", "BwdRZ", "BwdAfter"]
TILE_OF = {"BwdN": "FwdN", "BwdRZ": "FwdN", "BwdAfter": "FwdN"}  # one gate of BN channels, as FwdN


def wavefronts(loads) -> int:
    """Wavefronts of one warp-wide load: loads[lane] = (byte offset, bytes), every lane the same width."""
    width = loads[0][1]
    assert all(b == width for _, b in loads) and width in (4, 8, 16), loads
    group = 128 // width
    total = 0
    for first in range(0, len(loads), group):
        banks: dict = {}
        for offset, _ in loads[first:first + group]:
            assert offset % width == 0, f"misaligned {width}-byte load at {offset}"
            for word in range(offset // 4, (offset + width) // 4):
                banks.setdefault(word % 32, set()).add(word)
        total += max(len(words) for words in banks.values())
    return total


def test_wavefront_model_counts_conflicts():
    assert wavefronts([(4 * lane, 4) for lane in LANES]) == 1
    assert wavefronts([(0, 4)] * 32) == 1  # one word: a broadcast
    assert wavefronts([(8 * lane, 4) for lane in LANES]) == 2  # stride 2 words: lanes l and l + 16 share a bank
    assert wavefronts([(128 * lane, 4) for lane in LANES]) == 32
    rows = [(128 * (lane % 8) + 16 * (lane // 8), 16) for lane in LANES]  # 8 rows of 128 bytes, one chunk each
    assert wavefronts(rows) == 4 * 8  # each matrix's 8 rows on one bank group
    swizzled = [(128 * (lane % 8) + 16 * ((lane // 8) ^ (lane % 8)), 16) for lane in LANES]
    assert wavefronts(swizzled) == 4


def fragment_loads(math: str, kernel: str, wide: bool) -> dict:
    """{(warp, instruction): [(byte offset, bytes) per lane]} of the emulated kernel's fragment loads."""
    rows = torch.ops.convgru_ext._cuda_emulate_fragment_loads(math, kernel, wide).tolist()
    out: dict = {}
    for warp, instruction, lane, offset, width in rows:
        out.setdefault((warp, instruction), {})[lane] = (offset, width)
    assert all(sorted(lanes) == list(LANES) for lanes in out.values())
    return {key: [lanes[lane] for lane in LANES] for key, lanes in out.items()}


def conflict_summary(math: str, kernel: str, wide: bool) -> tuple:
    """(load instructions per warp, their wavefronts, conflict-free wavefronts, worst n-way) of one K-step."""
    loads = fragment_loads(math, kernel, wide)
    counts = [wavefronts(v) for v in loads.values()]
    ideal = [32 * v[0][1] // 128 for v in loads.values()]
    warps = len({w for w, _ in loads})
    return len(loads) // warps, sum(counts) // warps, sum(ideal) // warps, max(c / i for c, i in zip(counts, ideal))


@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("kernel", GEMM_KERNELS)
@pytest.mark.parametrize("math", TENSOR_MATHS)
def test_fragment_loads_meet_no_bank_conflict(math, kernel, wide):
    loads = fragment_loads(math, kernel, wide)
    assert {w for w, _ in loads} == set(range(8)), "every warp loads"
    # as many loads as the warp tile has fragments: per K-fragment, one ldmatrix.x4 per 16 A rows and per
    # 16 B columns; or for TF32, 4 lds per 16 A rows and 2 per 8 B columns
    bm, bk, ng, bn = torch.ops.convgru_ext._cuda_tile_shape(math, TILE_OF.get(kernel, kernel), wide)
    wm, wc = bm // 4, bn // 2
    want = bk // 16 * (wm // 16 + ng * wc // 16) if math != "tf32" else bk // 8 * (4 * wm // 16 + 2 * ng * wc // 8)
    assert len(loads) == 8 * want
    over = {key: wavefronts(v) for key, v in loads.items() if wavefronts(v) > 32 * v[0][1] // 128}
    assert not over, f"{math} {kernel}: {len(over)} of {len(loads)} loads conflict, e.g. {list(over.items())[:3]}"


def bank_report() -> str:
    """Per tensor-core kernel tile: its fragment loads per warp and K-step, their wavefronts against the
    conflict-free count, and the worst n-way conflict (benchmarks/results/compile/cuda-bank-conflicts.txt)."""
    lines = [f"{'math':5} {'kernel':9} {'tile':6} {'loads':>5} {'wavefronts':>10} {'conflict-free':>13} {'worst':>6}"]
    for math in TENSOR_MATHS:
        for kernel in GEMM_KERNELS:
            for wide in (False, True):
                n, got, ideal, worst = conflict_summary(math, kernel, wide)
                tile = "wide" if wide else "narrow"
                lines.append(f"{math:5} {kernel:9} {tile:6} {n:>5} {got:>10} {ideal:>13} {worst:>5.1f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    if reason := load_extension():
        raise SystemExit(reason)
    print(bank_report())
