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
import json
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

from .._math import Math
from . import kernels as K

#: the Triton element type of each math mode (the report's order)
ELEMENT = {Math.BF16: "bf16", Math.F16: "fp16", Math.TF32: "fp32", Math.F32: "fp32", Math.F64: "fp64"}
MATHS = tuple(m.value for m in ELEMENT)
FORWARD_KINDS = {"FWD_RZ": K.FWD_RZ.value, "FWD_N": K.FWD_N.value, "FWD_AFTER": K.FWD_AFTER.value}
BACKWARD_KINDS = {"BWD_N": K.BWD_N.value, "BWD_RZ": K.BWD_RZ.value, "BWD_AFTER": K.BWD_AFTER.value}


#: the channel counts C at which the report compiles the kernels that take C as a constant (``A_L1``: the tiles
#: ``ops.l1_taps`` names; each C is its own specialization): those of the model's workloads that use them
L1_CS = (64, 128)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compiled specialization of a step kernel."""

    kind: str
    math: str           # a math mode (``_math.Math``)
    tile: tuple         # (BLOCK_M, BLOCK_N, BLOCK_K, num_stages)
    cell: bool = False  # forward: x convolved in the kernel (HAS_X); backward: HAS_PREV is the other way
    kernel: tuple = (3, 3)
    aligned: bool = True  # channel counts multiples of 16
    constant_c: int = L1_CS[0]  # C, where the kernel takes it as a constant (``ops.l1_taps``)

    def source(self) -> ASTSource:
        from .ops import dot_precision, l1_taps

        m, n, k = self.tile[:3]
        t, precision = ELEMENT[Math(self.math)], dot_precision(self.math)
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
            ints = ("M", "H", "W", "C", "Cin", "NP", "DIL_H", "DIL_W")
            kind = FORWARD_KINDS[self.kind]
            flags = dict(KIND=kind, HAS_X=self.cell, HAS_BIAS_X=self.cell, HAS_BIAS_HN=kind == K.FWD_AFTER.value,
                         A_L1=self.constant_c if l1_taps(kind, self.tile) else 0)
        else:
            fn = K.backward_step_kernel
            acc = "fp64" if t == "fp64" else "fp32"
            pointers = {p: f"*{t}" for p in ("dgh_ptr", "w_t_ptr", "gates_ptr", "h_ptr", "grad_prev_ptr",
                                             "gates_prev_ptr", "h_prev_ptr", "dgh_prev_ptr", "dxn_prev_ptr")}
            pointers.update(dh_in_ptr=f"*{acc}", dh_out_ptr=f"*{acc}")
            ints = ("M", "H", "W", "C", "NP", "KP", "DIL_H", "DIL_W")
            flags = dict(KIND=BACKWARD_KINDS[self.kind], HAS_PREV=not self.cell)
        if self.kind != "INIT":
            constexprs = dict(flags, KH=self.kernel[0], KW=self.kernel[1], IS_F64=t == "fp64", PRECISION=precision,
                              BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, EVEN_K=self.aligned)
        signature = {name: pointers.get(name, "i32" if name in ints else "constexpr") for name in fn.arg_names}
        missing = set(fn.arg_names) - set(pointers) - set(ints) - set(constexprs)
        assert not missing, f"compile_report does not know the arguments {missing}"
        # What Triton's launcher specializes on for the usual call: 16-byte aligned tensors and
        # channel counts that are multiples of 16 (all the benchmark's workloads); without these
        # hints no load is vectorized and register use doubles.
        padded = ("NP", "KP")  # the packed weights' sizes: multiples of 16 (ops.py pads them)
        aligned = [n for n in fn.arg_names if n in pointers or n in padded or (self.aligned and n in ("C", "Cin"))]
        return ASTSource(fn=fn, signature=signature,
                         constexprs={(fn.arg_names.index(c),): v for c, v in constexprs.items()},
                         attrs={(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned})

    def label(self) -> str:
        from .ops import l1_taps

        m, n, k, s, w = self.tile
        extra = ({"INIT": "after"}.get(self.kind, "cell" if self.kind in FORWARD_KINDS else "t=0")
                 if self.cell else "")
        extra += "" if self.kernel == (3, 3) else f" k{self.kernel[0]}x{self.kernel[1]}"
        extra += "" if self.aligned else " C%16!=0"
        warps = "" if w == 4 else f"/w{w}"
        if self.kind in FORWARD_KINDS and l1_taps(FORWARD_KINDS[self.kind], self.tile):
            extra += f" C={self.constant_c}"
        return f"{self.kind:9s} {self.math:5s} {m}x{n}x{k}/s{s}{warps} {extra}".rstrip()


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);")
_PRODUCT = re.compile(r"wgmma\.mma_async|mma\.sync|\bfma\.rn")
_WAIT = re.compile(r"(cp\.async\.wait_group|wgmma\.wait_group\.sync\.aligned)\s+(\d+);")


def pipeline_facts(ptx: str) -> dict:
    """The main loops of a kernel's PTX and the pipeline waits inside them.

    A loop is a backward branch to a label; a *main* loop is one whose body multiplies (wgmma, mma.sync
    or FMA).  A *full drain* is ``cp.async.wait_group 0`` or ``wgmma.wait_group 0``: it empties the
    pipeline, so inside a main loop it would serialize loads and products (the old per-tap loops ended
    in one each).  ``waits`` lists the waits inside the main loops as "cp N" / "wgmma N"."""
    lines = ptx.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line.strip()))}
    loops = [(labels[m.group(1)], i) for i, line in enumerate(lines)
             if (m := _BRANCH.search(line)) and labels.get(m.group(1), i) < i]
    main = [(a, b) for a, b in loops if any(_PRODUCT.search(lines[j]) for j in range(a, b))]
    waits = [(("cp " if w.group(1).startswith("cp") else "wgmma ") + w.group(2))
             for a, b in main for j in range(a, b) if (w := _WAIT.search(lines[j]))]
    drains = sum(1 for line in lines if (w := _WAIT.search(line)) and w.group(2) == "0")
    return {"main_loops": len(main), "drains_in_loops": sum(w.endswith(" 0") for w in waits),
            "drains": drains, "waits": " ".join(sorted(set(waits)))}


_SASS = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_SASS_BRANCH = re.compile(r"\bBRA\b.*?0x([0-9a-f]+)")
_HGMMA = re.compile(r"\b[HQ]GMMA\.64x(\d+)x(\d+)")
_MMA = re.compile(r"\b(HMMA|DMMA|IMMA)\.")
_GLOBAL_LOAD = re.compile(r"\b(LDGSTS|LDG|UTMALDG|UBLKCP)\b(\S*)")


def _load_bytes(suffix: str) -> int:
    """Bytes per thread of a global or async load, from its SASS suffix (.128, .64, .U16, ...)."""
    for width, size in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if width in suffix:
            return size
    return 4


def sass_facts(sass: str, warps: int) -> dict:
    """The main loop of a kernel's SASS (the longest loop, a backward branch, whose body holds a tensor-core
    instruction, or else the longest loop): its instruction count, its tensor-core work in
    HGMMA.64x64x16-equivalents (wgmma; HMMA/DMMA count one each), instructions per equivalent, the
    global/async bytes it loads per equivalent (per thread bytes x 32 lanes x warps, over the
    equivalents of every warpgroup), and of those the bytes whose loads allocate in L1 (all but
    ``.BYPASS`` async copies: A's 8-byte ``LDGSTS.E.64`` where ``ops.l1_taps`` holds, and B's copies
    where its tile is too narrow for 16 bytes per thread).  Zero work: no tensor core (FMA loops)."""
    lines = [(int(m.group(1), 16), m.group(2)) for line in sass.splitlines() if (m := _SASS.match(line))]
    at = {a: i for i, (a, _) in enumerate(lines)}
    loops = [lines[at[int(m.group(1), 16)]:i + 1] for i, (_, ins) in enumerate(lines)
             if (m := _SASS_BRANCH.search(ins)) and at.get(int(m.group(1), 16), i) < i]
    if not loops:
        return {"loop_sass": 0, "loop_mma": 0.0, "sass_per_mma": None, "load_bytes_per_mma": None,
                "l1_bytes_per_mma": None}
    mma = [body for body in loops if any(_HGMMA.search(x) or _MMA.search(x) for _, x in body)]
    body = [x for _, x in max(mma or loops, key=len)]
    work = sum(int(m.group(1)) / 64 * int(m.group(2)) / 16 for x in body if (m := _HGMMA.search(x)))
    wgmma = work > 0
    work = work * max(warps // 4, 1) if wgmma else float(sum(1 for x in body if _MMA.search(x)) * warps)
    loads = [m.group(2) for x in body if (m := _GLOBAL_LOAD.search(x))]
    loaded = sum(_load_bytes(suffix) for suffix in loads) * 32 * warps
    cached = sum(_load_bytes(suffix) for suffix in loads if "BYPASS" not in suffix) * 32 * warps
    per = work / (max(warps // 4, 1) if wgmma else warps)  # the equivalents one warp's stream issues
    return {"loop_sass": len(body), "loop_mma": round(work, 2),
            "sass_per_mma": round(len(body) / per, 1) if per else None,
            "load_bytes_per_mma": round(loaded / work) if work else None,
            "l1_bytes_per_mma": round(cached / work) if work else None}


def compile_variant(variant: Variant, arch: int) -> dict:
    """Compile ``variant`` for sm_``arch``: registers, spill stack (bytes), shared memory, tensor-core
    instruction, and the pipeline facts of its main loops (:func:`pipeline_facts`)."""
    start = time.perf_counter()
    compiled = triton.compile(variant.source(), target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": variant.tile[4], "num_stages": variant.tile[3]})
    seconds = time.perf_counter() - start
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin.name],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", cubin.name], capture_output=True, text=True,
                              check=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    ptx = compiled.asm["ptx"]
    mma = "wgmma" if "wgmma" in ptx else "mma.sync" if "mma.sync" in ptx else "none (FMA)"
    return {"variant": variant.label(), "kind": variant.kind, "math": variant.math, "tile": list(variant.tile),
            "cell": variant.cell, "aligned": variant.aligned,
            "registers": int(fields["REG"]), "spill_stack": int(fields["STACK"]),
            "shared": compiled.metadata.shared, "tensor_cores": mma, **pipeline_facts(ptx),
            **sass_facts(sass, variant.tile[4]),
            "compile_s": round(seconds, 1)}


def _gates(kind: str) -> int:
    from .ops import GATES

    return GATES[{**FORWARD_KINDS, **BACKWARD_KINDS}[kind]]


def default_variants(maths=MATHS) -> list[Variant]:
    """Every kernel kind and path (sequence, cell or t = 0) at every tile a launch can use
    (``ops.kept_tiles``; float16 at the untuned tiles only: its code is bfloat16's), and the init kernel."""
    from .ops import kept_tiles, l1_taps

    variants = []
    for math in maths:
        for kind in list(FORWARD_KINDS) + list(BACKWARD_KINDS):
            for tile in kept_tiles(math, _gates(kind), tuned=math != "f16"):
                cs = L1_CS if l1_taps(FORWARD_KINDS.get(kind, -1), tile) else L1_CS[:1]
                variants += [Variant(kind, math, tile, cell=cell, constant_c=c) for c in cs for cell in (False, True)]
            if math in ("bf16", "tf32"):  # channel counts not multiples of 16: the narrower tiles
                variants += [Variant(kind, math, tile, cell=cell, aligned=False) for cell in (False, True)
                             for tile in kept_tiles(math, _gates(kind), tuned=False, aligned=False)]
        variants.append(Variant("INIT", math, (64, 32, 0, 1, 4), cell=True))
    return variants + [Variant("INIT", "bf16", (64, 32, 0, 1, 4))]


def quick_variants() -> list[Variant]:
    """One compile of every kernel and code path (CI's check): each kind and path at its widest 4-warp
    bfloat16 tile, a 1x5 kernel and a 7x5 one (more than 32 taps), channel counts that are not multiples
    of 16, the other math modes at their widest reset "after" tiles, the widest 8-warp tiles, and the
    backward's init kernel."""
    from .ops import kept_tiles

    def widest(math, kind, aligned=True):
        return [t for t in kept_tiles(math, _gates(kind), tuned=False, aligned=aligned) if t[4] == 4][-1]

    kinds = list(FORWARD_KINDS) + list(BACKWARD_KINDS)
    return ([Variant(kind, "bf16", widest("bf16", kind), cell=cell) for kind in kinds for cell in (False, True)]
            + [Variant("FWD_N", "bf16", widest("bf16", "FWD_N"), cell=True, kernel=(1, 5)),
               Variant("FWD_RZ", "bf16", widest("bf16", "FWD_RZ"), kernel=(7, 5)),  # > 32 taps: no tap bits
               Variant("FWD_AFTER", "bf16", widest("bf16", "FWD_AFTER", False), aligned=False),
               Variant("BWD_RZ", "bf16", widest("bf16", "BWD_RZ", False), aligned=False)]
            + [Variant(kind, math, widest(math, kind), cell=cell) for math in ("f16", "tf32", "f32", "f64")
               for kind in ("FWD_AFTER", "BWD_AFTER") for cell in (False, True)]
            + [Variant(kind, math, max(kept_tiles(math, _gates(kind), tuned=False),
                                       key=lambda t: (t[4], t[1])))  # the widest 8-warp tile
               for math in ("bf16", "tf32") for kind in ("FWD_RZ", "FWD_AFTER", "BWD_AFTER")]
            + [Variant("INIT", "bf16", (64, 32, 0, 1, 4)), Variant("INIT", "f64", (64, 32, 0, 1, 4), cell=True)])


def failures(rows: list[dict], max_spill: int = 0) -> list[str]:
    """The CPU-checkable targets a report's rows miss: spills above ``max_spill`` bytes, and more than one
    full pipeline drain per main loop where the channel counts are multiples of 16.  (Otherwise Triton
    cannot prove A's rows 16-byte aligned: A is loaded through registers, outside the async copies, and
    each wgmma waits for its predecessor: one drain per gate's dot; reported, not held.)"""
    found = [f"{r['variant']}: spills {r['spill_stack']} B" for r in rows if r["spill_stack"] > max_spill]
    found += [f"{r['variant']}: {r['drains_in_loops']} full drains inside its {r['main_loops']} main loop(s)"
              for r in rows if r["aligned"] and r["drains_in_loops"] > r["main_loops"]]
    return found


def _per_mma(value) -> str:
    return "-" if value is None else f"{value:g}"


#: the workloads whose model rows the report prints (``convgru_ext/bench/catalog.py``), in bfloat16
MODEL_WORKLOADS = ("video", "nowcast", "raft-cell", "stream")


def model_rows() -> list[dict]:
    """The static cost model (``model.workload_steps``) of one forward step of :data:`MODEL_WORKLOADS` in
    bfloat16: per kernel its tile, CTAs, L2 bytes, estimated and bound GPU µs; per step the sums, a sequence's
    input projection and the eager peer's bound (``model.eager_launches``)."""
    import torch

    from ...bench.catalog import CATALOG
    from . import model

    def us(value):
        return None if value is None else round(value, 1)

    rows = model.workload_steps([CATALOG[name] for name in MODEL_WORKLOADS], torch.bfloat16)
    return [{"workload": r["workload"], "kernels": [{k: v for k, v in kr.items() if k != "waves"}
                                                    for kr in r["kernels"]],
             "l2_mb_per_step": round(r["l2_bytes_per_step"] / 1e6, 1), "gpu_us_per_step": us(r["gpu_us_per_step"]),
             "bound_us_per_step": us(r["bound_us_per_step"]), "projection_us_per_step": us(r["projection_us_per_step"]),
             "eager_us_per_step": us(r["eager_us_per_step"])} for r in rows if r["pass"] == "fwd"]


def markdown(rows: list[dict], header: str, model: list[dict] = ()) -> str:
    """The report as markdown tables: the variants, then the cost model's forward steps."""
    out = [header, "", "Main loop: the longest loop with a tensor-core instruction (`sass_facts`); per HGMMA: per "
           "HGMMA.64x64x16-equivalent of one warpgroup.", "",
           "| variant | regs | spill B | smem B | tensor cores | main loops | waits in loop | drains | "
           "loop SASS | SASS / HGMMA | load B / HGMMA | via L1 B / HGMMA |",
           "|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|"]
    out += [f"| `{r['variant']}` | {r['registers']} | {r['spill_stack']} | {r['shared']} | {r['tensor_cores']} | "
            f"{r['main_loops']} | {r['waits'] or '-'} | {r['drains']} | {r['loop_sass']} | "
            f"{_per_mma(r['sass_per_mma'])} | {_per_mma(r['load_bytes_per_mma'])} | "
            f"{_per_mma(r['l1_bytes_per_mma'])} |" for r in rows]
    if model:
        out += ["", "## The static cost model of one bfloat16 forward step (`model.py`; estimates, not measured)", "",
                "est.: L2 traffic at HBM's rate; bound: each launch's minimal bytes (`model.py`). The input projection "
                "of a sequence (one convolution of all frames before the loop) and the eager peer's step are "
                "bounds by the same rule (`model.py`): compare bounds with bounds.", "",
                "| workload | kernel | tile | CTAs | L2 MB | est. GPU µs | bound µs |",
                "|---|---|---|---:|---:|---:|---:|"]
        for m in model:
            out += [f"| {m['workload']} | {k['kernel']} | {k['tile']} | {k['ctas']} | {k['l2_bytes'] / 1e6:.1f} | "
                    f"{k['gpu_us']:.1f} | {k['gpu_us_bound']:.1f} |" for k in m["kernels"]]
            out.append(f"| {m['workload']} | **step** | | | **{m['l2_mb_per_step']}** | **{m['gpu_us_per_step']}** | "
                       f"**{m['bound_us_per_step']}** |")
            if m["projection_us_per_step"]:
                out.append(f"| {m['workload']} | + input projection | | | | | {m['projection_us_per_step']} |")
            if m["eager_us_per_step"] is not None:
                out.append(f"| {m['workload']} | eager peer's step | | | | | {m['eager_us_per_step']} |")
    return "\n".join(out) + "\n"


def write(out: str, meta: dict, missed: list[str], model: list[dict], rows: list[dict]) -> None:
    """``out``.json (one variant per line: reviewable diffs) and ``out``.md."""
    with open(out + ".json", "w") as f:
        f.write(f'{{"meta": {json.dumps(meta)},\n "missed": {json.dumps(missed)},\n "model": {json.dumps(model)},'
                '\n "rows": [\n  ' + ",\n  ".join(json.dumps(r) for r in rows) + "\n]}\n")
    header = f"Triton {meta['triton']}, sm_{meta['arch']}, {len(rows)} kernel variants ({meta['command']})"
    with open(out + ".md", "w") as f:
        f.write(markdown(rows, f"# Triton kernels compiled for sm_{meta['arch']}: {header}", model))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convgru_ext.backends.triton.compile_report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (80 = A100, 90 = H100)")
    parser.add_argument("--math", action="append", choices=MATHS,
                        help="repeatable; default every math mode")
    parser.add_argument("--kind", action="append", choices=list(FORWARD_KINDS) + list(BACKWARD_KINDS) + ["INIT"])
    parser.add_argument("--quick", action="store_true", help="one compile of every kernel and code path (CI)")
    parser.add_argument("--max-spill", type=int, default=None,
                        help="exit with status 1 if a variant spills more bytes than this, or drains its "
                             "pipeline inside a main loop")
    parser.add_argument("--out", help="write <out>.json and <out>.md (the committed report)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--model-only", action="store_true",
                        help="rewrite only the cost model's section of the report --out names, compiling nothing "
                             "(the model depends on no Triton version)")
    args = parser.parse_args(argv)
    if args.model_only:
        if not args.out:
            parser.error("--model-only rewrites the report that --out names; give --out")
        with open(args.out + ".json") as f:
            report = json.load(f)
        meta = report["meta"]
        write(args.out, meta, report["missed"], [] if meta["quick"] else model_rows(), report["rows"])
        return 0
    if os.environ.get("TRITON_INTERPRET", "") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the kernels are interpreted functions, not compilable; unset it")
    variants = quick_variants() if args.quick else default_variants(tuple(args.math or MATHS))
    if args.kind:
        variants = [v for v in variants if v.kind in args.kind]
    header = (f"Triton {triton.__version__}, sm_{args.arch}, {len(variants)} kernel variants "
              f"(python -m convgru_ext.backends.triton.compile_report{' --quick' if args.quick else ''})")
    print(header, flush=True)
    print(f"{'variant':44s} {'regs':>5s} {'spill B':>8s} {'smem B':>8s}  tensor cores  loops  waits in loop  drains"
          "  SASS/HGMMA  load B/HGMMA  via L1")
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(compile_variant, variants, [args.arch] * len(variants)):
            rows.append(r)
            print(f"{r['variant']:44s} {r['registers']:5d} {r['spill_stack']:8d} {r['shared']:8d}  "
                  f"{r['tensor_cores']:12s}  {r['main_loops']:5d}  {r['waits'] or '-':13s}  {r['drains']:6d}  "
                  f"{_per_mma(r['sass_per_mma']):>10s}  {_per_mma(r['load_bytes_per_mma']):>12s}  "
                  f"{_per_mma(r['l1_bytes_per_mma']):>6s}", flush=True)
    missed = failures(rows, args.max_spill or 0)
    print(f"{sum(r['spill_stack'] > 0 for r in rows)} of {len(rows)} variants spill registers; "
          f"{sum(r['drains_in_loops'] > 0 for r in rows)} drain their pipeline inside a main loop")
    if args.out:
        meta = {"triton": triton.__version__, "arch": args.arch, "quick": args.quick,
                "date": time.strftime("%Y-%m-%d"), "command": header.split("(")[-1].rstrip(")")}
        write(args.out, meta, missed, [] if args.quick else model_rows(), rows)
    if args.max_spill is not None and missed:
        print("FAIL:\n  " + "\n  ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
