"""Compile the Triton kernels ahead of time for a GPU architecture -- no GPU needed -- and report
what ptxas made of them: registers, spill stack, shared memory, and whether tensor cores are used.

This is how the kernels are checked for compile errors (which Triton's CPU interpreter does not
catch) and for register spills on a machine without a GPU::

    python -m convgru_ext.backends.triton.compile_report --arch 90          # the configs autotuning keeps
    python -m convgru_ext.backends.triton.compile_report --arch 80 --math tf32 --kind FWD_N

It compiles; it does not run anything.  A kernel that compiles cleanly is still unverified
until it has run on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import kernels as K

#: the report's math modes: (Triton element type, ops.TILES key, tl.dot input precision)
MATHS = {"bf16": ("bf16", "mma", "tf32"), "f16": ("fp16", "mma", "tf32"), "tf32": ("fp32", "tf32", "tf32"),
         "ieee": ("fp32", "ieee", "ieee"), "f64": ("fp64", "f64", "ieee")}
FORWARD_KINDS = {"FWD_RZ": K.FWD_RZ.value, "FWD_N": K.FWD_N.value, "FWD_AFTER": K.FWD_AFTER.value}
BACKWARD_KINDS = {"BWD_N": K.BWD_N.value, "BWD_RZ": K.BWD_RZ.value, "BWD_AFTER": K.BWD_AFTER.value}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compiled specialization of a step kernel."""

    kind: str
    math: str           # a key of MATHS
    tile: tuple         # (BLOCK_M, BLOCK_N, BLOCK_K, num_stages)
    cell: bool = False  # forward: x convolved in the kernel (HAS_X); backward: HAS_PREV is the other way
    kernel: tuple = (3, 3)
    aligned: bool = True  # channel counts multiples of 16

    def source(self) -> ASTSource:
        m, n, k, _ = self.tile
        t, _, precision = MATHS[self.math]
        if self.kind == "INIT":  # the elementwise start of the backward; cell = reset "after"
            fn = K.backward_init_kernel
            acc = "fp64" if t == "fp64" else "fp32"
            pointers = {p: f"*{t}" for p in ("grad_last_ptr", "gates_prev_ptr", "h_prev_ptr", "dgh_prev_ptr",
                                             "dxn_prev_ptr")}
            pointers["dh_ptr"] = f"*{acc}"
            ints = ("M", "C")
            constexprs = dict(RESET_AFTER=self.cell, BLOCK_M=m, BLOCK_N=n)
        elif self.kind in FORWARD_KINDS:
            fn = K.forward_step_kernel
            pointers = {p: f"*{t}" for p in ("h_ptr", "rh_ptr", "w_h_ptr", "x_ptr", "w_x_ptr", "gx_ptr",
                                             "bias_x_ptr", "bias_hn_ptr", "gates_ptr", "out_ptr")}
            ints = ("M", "H", "W", "C", "Cin", "DIL_H", "DIL_W")
            kind = FORWARD_KINDS[self.kind]
            flags = dict(KIND=kind, HAS_X=self.cell, HAS_BIAS_X=self.cell, HAS_BIAS_HN=kind == K.FWD_AFTER.value)
        else:
            fn = K.backward_step_kernel
            acc = "fp64" if t == "fp64" else "fp32"
            pointers = {p: f"*{t}" for p in ("dgh_ptr", "w_t_ptr", "gates_ptr", "h_ptr", "grad_prev_ptr",
                                             "gates_prev_ptr", "h_prev_ptr", "dgh_prev_ptr", "dxn_prev_ptr")}
            pointers.update(dh_in_ptr=f"*{acc}", dh_out_ptr=f"*{acc}")
            ints = ("M", "H", "W", "C", "DIL_H", "DIL_W")
            flags = dict(KIND=BACKWARD_KINDS[self.kind], HAS_PREV=not self.cell)
        if self.kind != "INIT":
            constexprs = dict(flags, KH=self.kernel[0], KW=self.kernel[1], IS_F64=t == "fp64", PRECISION=precision,
                              BLOCK_M=m, BLOCK_N=n, BLOCK_K=k)
        signature = {name: pointers.get(name, "i32" if name in ints else "constexpr") for name in fn.arg_names}
        missing = set(fn.arg_names) - set(pointers) - set(ints) - set(constexprs)
        assert not missing, f"compile_report does not know the arguments {missing}"
        # What Triton's launcher specializes on for the usual call: 16-byte aligned tensors and
        # channel counts that are multiples of 16 (all the benchmark's workloads); without these
        # hints no load is vectorized and register use doubles.
        aligned = [n for n in fn.arg_names if n in pointers or (self.aligned and n in ("C", "Cin"))]
        return ASTSource(fn=fn, signature=signature,
                         constexprs={(fn.arg_names.index(c),): v for c, v in constexprs.items()},
                         attrs={(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned})

    def label(self) -> str:
        m, n, k, s = self.tile
        extra = ({"INIT": "after"}.get(self.kind, "cell" if self.kind in FORWARD_KINDS else "t=0")
                 if self.cell else "")
        extra += "" if self.kernel == (3, 3) else f" k{self.kernel[0]}x{self.kernel[1]}"
        extra += "" if self.aligned else " C%16!=0"
        return f"{self.kind:9s} {self.math:5s} {m}x{n}x{k}/s{s} {extra}".rstrip()


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def compile_variant(variant: Variant, arch: int) -> dict:
    """Compile ``variant`` for sm_``arch``: registers, spill stack (bytes), shared memory, tensor-core use."""
    start = time.perf_counter()
    compiled = triton.compile(variant.source(), target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": 4, "num_stages": variant.tile[3]})
    seconds = time.perf_counter() - start
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin.name],
                               capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    ptx = compiled.asm["ptx"]
    mma = "wgmma" if "wgmma" in ptx else "mma.sync" if "mma.sync" in ptx else "none (FMA)"
    return {"variant": variant.label(), "registers": int(fields["REG"]), "spill_stack": int(fields["STACK"]),
            "shared": compiled.metadata.shared, "tensor_cores": mma, "compile_s": round(seconds, 1)}


def default_variants(maths=("bf16", "tf32", "ieee", "f64")) -> list[Variant]:
    """Every kernel kind at every tile autotuning keeps for its math mode (``ops.TILES``)."""
    from .ops import TILES

    return [Variant(kind, math, tile) for math in maths for kind in list(FORWARD_KINDS) + list(BACKWARD_KINDS)
            for tile in TILES[MATHS[math][1]]]


def quick_variants() -> list[Variant]:
    """One compile of every kernel and code path (CI's check): each kind at its first tile in bfloat16,
    the cell and t = 0 paths, a 1x5 kernel, the other math modes once, the backward's init kernel."""
    from .ops import TILES

    first = {math: TILES[key][0] for math, (_, key, _) in MATHS.items()}
    kinds = list(FORWARD_KINDS) + list(BACKWARD_KINDS)
    return ([Variant(kind, "bf16", first["bf16"]) for kind in kinds]
            + [Variant(kind, "bf16", first["bf16"], cell=True) for kind in ("FWD_RZ", "FWD_AFTER", "BWD_AFTER")]
            + [Variant("FWD_N", "bf16", first["bf16"], cell=True, kernel=(1, 5))]
            + [Variant(kind, math, first[math]) for math in ("f16", "tf32", "ieee", "f64")
               for kind in ("FWD_AFTER", "BWD_N")]
            + [Variant("INIT", "bf16", (64, 32, 0, 1)), Variant("INIT", "f64", (64, 32, 0, 1), cell=True)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convgru_ext.backends.triton.compile_report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (80 = A100, 90 = H100)")
    parser.add_argument("--math", action="append", choices=list(MATHS),
                        help="repeatable; default bf16, tf32, ieee (exact float32), f64")
    parser.add_argument("--kind", action="append", choices=list(FORWARD_KINDS) + list(BACKWARD_KINDS))
    parser.add_argument("--quick", action="store_true", help="one compile of every kernel and code path (CI)")
    parser.add_argument("--max-spill", type=int, default=None,
                        help="exit with status 1 if a variant spills more bytes than this")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the kernels are interpreted functions, not compilable; unset it")
    if args.quick:
        variants = quick_variants()
    else:
        variants = default_variants(tuple(args.math or ("bf16", "tf32", "ieee", "f64")))
    if args.kind:
        variants = [v for v in variants if v.kind in args.kind]
    print(f"Triton {triton.__version__}, sm_{args.arch}, {len(variants)} kernel variants, 4 warps", flush=True)
    print(f"{'variant':40s} {'regs':>5s} {'spill B':>8s} {'smem B':>8s}  tensor cores  compile s")
    spilled, worst = 0, 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(compile_variant, variants, [args.arch] * len(variants)):
            spilled += r["spill_stack"] > 0
            worst = max(worst, r["spill_stack"])
            print(f"{r['variant']:40s} {r['registers']:5d} {r['spill_stack']:8d} {r['shared']:8d}  "
                  f"{r['tensor_cores']:12s}  {r['compile_s']:.1f}", flush=True)
    print(f"{spilled} of {len(variants)} variants spill registers (at most {worst} bytes)")
    if args.max_spill is not None and worst > args.max_spill:
        print(f"FAIL: a variant spills {worst} bytes, more than --max-spill {args.max_spill}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
