"""The built CUDA extension's machine code (SASS), read with cuobjdump; no GPU needed.

For every GPU architecture the extension carries SASS for:

* every GEMM kernel (5 math modes x 6 kernels x the two A-operand instantiations: 16-byte copies, and
  element by element for unaligned channels; for bf16 / f16 / tf32 each with the narrow and the wide
  tile, csrc/cuda/gemm.cuh's Tile) is there;
* the bf16 / fp16 kernels load fragments with LDSM (ldmatrix) and multiply with HMMA, the TF32 ones
  use HMMA too (the tensor cores), exact fp32 / fp64 none;
* the main loop of each aligned tensor-core kernel reads global memory only through LDGSTS
  (cp.async): no LDG (global load) and no generic LD / ST.  "Main loop" here: every basic block
  holding an HMMA, where a basic block is a run of instructions between branch targets and branches
  (the addresses cuobjdump prints), so the definition does not depend on how ptxas orders the
  blocks.  (The element-wise A loads for unaligned channels are the other instantiation's.);
* the K loop of each tensor-core kernel (the smallest backward branch's range holding every HMMA)
  calls no subroutine (code after the kernel's last EXIT: integer division, for one; the tap and
  channel counters advance without it);
* the K loop of each bf16 / f16 kernel, every tile and instantiation, issues at most MAX_PER_HMMA
  instructions per HMMA, counting every instruction in its range (all its paths, the tap change
  and the unaligned element loads included): the budget under which mma.sync, not instruction
  issue, should bound the loop (issue 21; unverified on a GPU);
* the wide tile's K loop issues fewer fragment loads (LDSM, LDS) per HMMA than the narrow one's;
* no kernel spills: no local-memory instruction (LDL / STL) in any kernel, and cuobjdump -res-usage
  reports STACK:0 and LOCAL:0; the GEMM kernels fit their __launch_bounds__: (256, 2), <= 128 registers,
  for the narrow tile; (256, 1), <= 255, for the wide one.

Skips, with the reason, only where the extension is not built or no cuobjdump exists.
``python tests/test_cuda_sass.py`` prints every GEMM kernel's registers and K-loop figures (LDS: 32-bit
shared loads, TF32's fragments; "loads per HMMA": (LDSM + LDS) / HMMA)
(benchmarks/results/compile/cuda-sass-loop.txt keeps them).
"""

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MATHS = {0: "f16", 1: "bf16", 2: "tf32", 3: "f32", 4: "f64"}
KERNELS = {0: "FwdRZ", 1: "FwdN", 2: "FwdAfter", 4: "BwdN", 5: "BwdRZ", 6: "BwdAfter"}  # 3: BwdInit (elementwise)
GEMM = re.compile(r"gemm_kernelILNS_4MathE(\d)ELNS_6KernelE(\d)ELb(\d)ELb(\d)E")
TILES = {0: "narrow", 1: "wide"}  # gemm_kernel's kWide
ALIGNED = {1: "aligned", 0: "unaligned"}  # gemm_kernel's kVec
WIDE_MATHS = ("bf16", "f16", "tf32")
MAX_REGISTERS = {"narrow": 65536 // (256 * 2), "wide": 255}  # __launch_bounds__(256, 2), (256, 1)
MAX_PER_HMMA = 13  # SASS instructions per HMMA in the K loop of the bf16 / f16 kernels


def _library() -> Path:
    spec = importlib.util.find_spec("convgru_ext._cuda")
    if spec is None or not spec.origin:
        pytest.skip("the CUDA extension convgru_ext._cuda is not built")
    return Path(spec.origin)


def _cuobjdump() -> str:
    candidates = [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"]
    triton = importlib.util.find_spec("triton")
    if triton is not None and triton.origin:
        candidates.append(os.path.join(os.path.dirname(triton.origin), "backends", "nvidia", "bin", "cuobjdump"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    pytest.skip("no cuobjdump (CUDA toolkit's or Triton's bundled one) to read the SASS with")


def _run(*args) -> str:
    return subprocess.run([_cuobjdump(), *args, str(_library())], check=True, capture_output=True, text=True,
                          timeout=600).stdout


@pytest.fixture(scope="module")
def sass() -> dict:
    return _sass()


@pytest.fixture(scope="module")
def resources() -> dict:
    return _resources()


def _sass() -> dict:
    """{arch: {function name: [(address, instruction text)]}} of every kernel."""
    out: dict = {}
    arch, fn = None, None
    for line in _run("-sass").splitlines():
        if m := re.match(r"\s*arch = (sm_\d+\w*)", line):
            arch = m.group(1)
        elif m := re.match(r"\s*Function : (\S+)", line):
            fn = out.setdefault(arch, {}).setdefault(m.group(1), [])
        elif fn is not None and (m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)):
            fn.append((int(m.group(1), 16), m.group(2)))
    assert out, "cuobjdump -sass listed no kernels"
    return out


def _resources() -> dict:
    """{(arch, function name): {"REG": n, "STACK": n, "LOCAL": n, ...}} from cuobjdump -res-usage."""
    out, arch = {}, None
    lines = _run("-res-usage").splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"\s*arch = (sm_\d+\w*)", line):
            arch = m.group(1)
        elif (m := re.match(r"\s*Function (\S+):", line)) and i + 1 < len(lines):
            out[(arch, m.group(1))] = {k: int(v) for k, v in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", lines[i + 1])}
    return out


def _opcode(text: str) -> str:
    """The instruction's opcode without modifiers ("@P0 LDG.E.U16 R5, ..." -> "LDG"); "" for a never-executed
    (@!PT) padding instruction."""
    tokens = text.split()
    if tokens and tokens[0].startswith("@"):
        if tokens[0] == "@!PT":
            return ""
        tokens = tokens[1:]
    return tokens[0].split(".")[0] if tokens else ""


def _basic_blocks(code: list) -> list:
    """The function's basic blocks: split before every branch target and after every branch."""
    targets = {int(t, 16) for _, text in code for t in re.findall(r"\b(?:BRA|BRX|JMP|CALL\.\w+|BSSY)\b.*?(0x[0-9a-f]+)",
                                                                  text)}
    blocks, current = [], []
    for address, text in code:
        if address in targets and current:
            blocks.append(current)
            current = []
        current.append((address, text))
        if _opcode(text) in ("BRA", "BRX", "JMP", "EXIT", "RET", "CALL"):
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _gemm_kernels(functions: dict) -> dict:
    """{(math, kernel, tile, instantiation): (name, instructions)} of the GEMM kernels."""
    found = {}
    for name, code in functions.items():
        if m := GEMM.search(name):
            key = (MATHS[int(m.group(1))], KERNELS[int(m.group(2))], TILES[int(m.group(3))], ALIGNED[int(m.group(4))])
            found[key] = (name, code)
    return found


def _k_loop(code: list) -> list:
    """The instructions of the innermost loop holding every HMMA: the smallest backward branch's range
    [target, branch] that contains them all; [] when there is none."""
    hmma = [a for a, t in code if _opcode(t) == "HMMA"]
    loops = [(int(m.group(1), 16), a) for a, t in code if _opcode(t) == "BRA"
             and (m := re.search(r"0x([0-9a-f]+)", t)) and int(m.group(1), 16) < a]
    enclosing = [(lo, hi) for lo, hi in loops if hmma and lo <= min(hmma) and max(hmma) <= hi]
    if not enclosing:
        return []
    lo, hi = min(enclosing, key=lambda r: r[1] - r[0])
    return [(a, t) for a, t in code if lo <= a <= hi]


def test_every_gemm_kernel_is_compiled_for_each_architecture(sass):
    for arch, functions in sass.items():
        kernels = _gemm_kernels(functions)
        want = [(m, k, t, v) for m in MATHS.values() for k in KERNELS.values() for v in ALIGNED.values()
                for t in (TILES.values() if m in WIDE_MATHS else ["narrow"])]
        missing = ["/".join(key) for key in want if key not in kernels]
        assert not missing, f"{arch}: no SASS for {missing}"
        assert len(kernels) == len(want), f"{arch}: unexpected GEMM kernels {sorted(set(kernels) - set(want))}"


def test_tensor_core_kernels_use_ldmatrix_and_mma(sass):
    for arch, functions in sass.items():
        for (math, kernel, tile, aligned), (_, code) in _gemm_kernels(functions).items():
            ops = {_opcode(text) for _, text in code}
            where = f"{arch} {math} {kernel} {tile} {aligned}"
            if math in ("bf16", "f16"):
                assert {"LDSM", "HMMA"} <= ops, f"{where}: no LDSM / HMMA"
            elif math == "tf32":
                assert "HMMA" in ops, f"{where}: no HMMA"
                assert any("TF32" in text for _, text in code if _opcode(text) == "HMMA"), f"{where}: HMMA not TF32"
            else:
                assert "HMMA" not in ops, f"{where}: exact {math} must not use the tensor cores"


def test_main_loop_reads_global_memory_only_by_cp_async(sass):
    forbidden = {"LDG", "LD", "ST", "STG", "LDL", "STL"}
    for arch, functions in sass.items():
        for (math, kernel, tile, aligned), (_, code) in _gemm_kernels(functions).items():
            if math not in ("bf16", "f16", "tf32") or aligned != "aligned":
                continue
            loop = [b for b in _basic_blocks(code) if any(_opcode(t) == "HMMA" for _, t in b)]
            assert loop, f"{arch} {math} {kernel} {tile}: no basic block with HMMA"
            bad = [f"{a:#x}: {t}" for b in loop for a, t in b if _opcode(t) in forbidden]
            assert not bad, f"{arch} {math} {kernel} {tile}: global / generic memory access in the main loop: {bad[:5]}"


def test_k_loop_calls_no_subroutine(sass):
    for arch, functions in sass.items():
        for (math, kernel, tile, aligned), (_, code) in _gemm_kernels(functions).items():
            if math not in ("bf16", "f16", "tf32"):
                continue
            loop = _k_loop(code)
            assert loop, f"{arch} {math} {kernel} {tile} {aligned}: no loop around the HMMAs"
            # ptxas places subroutines after the kernel's last EXIT; a CALL a few instructions
            # ahead is its reconvergence idiom, not a subroutine
            last_exit = max(a for a, t in code if _opcode(t) == "EXIT")
            calls = [f"{a:#x}: {t}" for a, t in loop if _opcode(t) == "CALL"
                     and int(re.search(r"0x([0-9a-f]+)", t).group(1), 16) > last_exit]
            assert not calls, f"{arch} {math} {kernel} {tile} {aligned}: the K loop calls subroutines: {calls[:3]}"


def test_k_loop_fits_the_instruction_budget(sass):
    over = []
    for arch, functions in sass.items():
        for (math, kernel, tile, aligned), (_, code) in _gemm_kernels(functions).items():
            if math not in ("bf16", "f16"):
                continue
            loop = _k_loop(code)
            assert loop, f"{arch} {math} {kernel} {tile} {aligned}: no loop around the HMMAs"
            hmma = sum(1 for _, t in loop if _opcode(t) == "HMMA")
            if len(loop) > MAX_PER_HMMA * hmma:
                over.append(f"{arch} {math} {kernel} {tile} {aligned}: {len(loop)} instructions for {hmma} HMMA")
    assert not over, f"K loops over {MAX_PER_HMMA} instructions per HMMA: {over}"


def _loads_per_hmma(code: list) -> float:
    """Fragment loads (LDSM, and LDS: TF32's 32-bit ones) per HMMA in the kernel's K loop."""
    ops = [_opcode(t) for _, t in _k_loop(code)]
    return (ops.count("LDSM") + ops.count("LDS")) / ops.count("HMMA")


def test_wide_tile_loads_fewer_fragments_per_hmma(sass):
    """The wide tile's point (csrc/cuda/gemm.cuh's Tile): each fragment feeds more mma.sync."""
    for arch, functions in sass.items():
        kernels = _gemm_kernels(functions)
        for (math, kernel, tile, aligned), (_, code) in kernels.items():
            if tile != "wide":
                continue
            wide, narrow = _loads_per_hmma(code), _loads_per_hmma(kernels[(math, kernel, "narrow", aligned)][1])
            assert wide < narrow, f"{arch} {math} {kernel} {aligned}: {wide:.2f} loads per HMMA, narrow {narrow:.2f}"


def test_no_kernel_spills(sass, resources):
    for arch, functions in sass.items():
        for name, code in functions.items():
            local = [t for _, t in code if _opcode(t) in ("LDL", "STL")]
            assert not local, f"{arch} {name}: local-memory (spill) instructions {local[:3]}"
            usage = resources.get((arch, name))
            assert usage is not None, f"{arch} {name}: not in cuobjdump -res-usage"
            assert usage.get("STACK") == 0 and usage.get("LOCAL") == 0, f"{arch} {name}: {usage}"
            if m := GEMM.search(name):
                limit = MAX_REGISTERS[TILES[int(m.group(3))]]
                assert usage["REG"] <= limit, f"{arch} {name}: {usage['REG']} registers > {limit}"


def loop_report() -> str:
    """One line per GEMM kernel and architecture: registers, K-loop instructions, HMMA, LDSM, LDS and LDGSTS
    in it, instructions per HMMA and fragment loads per HMMA (what benchmarks/results/compile/cuda-sass-loop.txt
    holds)."""
    functions_by_arch, usage = _sass(), _resources()
    lines = [f"{'arch':6} {'kernel':48} {'regs':>4} {'loop':>5} {'HMMA':>4} {'LDSM':>4} {'LDS':>4} {'LDGSTS':>6} "
             f"{'per HMMA':>8} {'loads per HMMA':>14}"]
    for arch, functions in sorted(functions_by_arch.items()):
        for (math, kernel, tile, aligned), (name, code) in sorted(_gemm_kernels(functions).items()):
            loop = _k_loop(code)
            count = {op: sum(1 for _, t in loop if _opcode(t) == op) for op in ("HMMA", "LDSM", "LDS", "LDGSTS")}
            per = f"{len(loop) / count['HMMA']:.1f}" if count["HMMA"] else "-"
            loads = f"{(count['LDSM'] + count['LDS']) / count['HMMA']:.2f}" if count["HMMA"] else "-"
            label = f"gemm_kernel<{math}, {kernel}, {tile}, {aligned}>"
            lines.append(f"{arch:6} {label:48} {usage[(arch, name)]['REG']:>4} {len(loop) if loop else '-':>5} "
                         f"{count['HMMA']:>4} {count['LDSM']:>4} {count['LDS']:>4} {count['LDGSTS']:>6} {per:>8} "
                         f"{loads:>14}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(loop_report())
