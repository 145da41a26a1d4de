"""The Triton backend's ops traced the way ``torch.compile`` traces them on a GPU, without a GPU.

Under ``TRITON_INTERPRET=1`` (every other CPU test) the Triton op pair is an opaque ``custom_op`` launching
interpreted kernels; on a GPU it is a ``torch.library.triton_op`` whose launches go through
``torch.library.wrap_triton``.  This script imports the ops *without* the interpreter and traces the forward
and backward ops (both reset modes, a sequence and a cell call, every dtype the GPU runs) with ``make_fx`` over
fake CUDA tensors: the op registration, the schema inferred from the annotations (torch 2.11's ``triton_op``
ignores ``schema=``), the loops' host code, the tile choice, the weight packing and every ``wrap_triton``
launch with its grid and arguments, recorded as the higher-order op that ``torch.compile`` sees.  It checks
that every call launches a forward and a backward kernel.  What it cannot see: code generation for sm_90
(``compile_report`` does that), the kernels' results, and anything that asks the driver (the device guard,
streams, CUDA graphs), which it stubs or turns off.

Run by ``tests/test_triton.py`` (CI's torch and Triton) and by ``make device-stack-dry-run`` (the GPU's):
``python tests/trace_triton.py``; exit status 0 when every trace passed.
"""

from __future__ import annotations

import contextlib
import os
import sys

if os.environ.get("TRITON_INTERPRET", "") == "1":
    sys.exit("tests/trace_triton.py traces the compiled path: run it without TRITON_INTERPRET=1")
os.environ["CONVGRU_TRITON_GRAPHS"] = "0"  # CUDA graphs need a device; the eager loop is what they capture

import torch  # noqa: E402
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from convgru_ext.backends._op import channels_last, compose_backward, compose_forward  # noqa: E402
from convgru_ext.backends.triton import ops  # noqa: E402

DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def _fake_inputs(T, B, Cin, C, H, W, k, dtype):
    with FakeTensorMode():
        def act(*shape):
            return channels_last(torch.empty(*shape, device="cuda", dtype=dtype))

        return (act(T, B, Cin, H, W), act(B, C, H, W), torch.empty(3 * C, Cin, k, k, device="cuda", dtype=dtype),
                torch.empty(3 * C, C, k, k, device="cuda", dtype=dtype), torch.empty(3 * C, device="cuda", dtype=dtype),
                torch.empty(3 * C, device="cuda", dtype=dtype), act(T, B, C, H, W))


def trace(dtype, T: int, reset_after: bool, C: int = 16) -> list[str]:
    """The kernels the forward and backward ops launch for one call, traced: their names, in order."""
    x, h0, w_ih, w_hh, b_ih, b_hh, grad_out = _fake_inputs(T, 1, 8, C, 6, 7, 3, dtype)
    # the bodies the triton_ops wrap: what AOT autograd's functional decomposition of the ops traces into
    forward, backward = compose_forward(ops.TritonLoops()), compose_backward(ops.TritonLoops())

    def step(x, h0, w_ih, w_hh, b_ih, b_hh, grad_out):
        out, gates = forward(x, h0, w_ih, w_hh, b_ih, b_hh, [1, 1], reset_after)
        return backward(grad_out, x, h0, out, gates, w_ih, w_hh, [1, 1], reset_after, True)

    graph = make_fx(step, tracing_mode="fake")(x, h0, w_ih, w_hh, b_ih, b_hh, grad_out)
    names = []
    for node in graph.graph.nodes:
        if node.op == "call_function" and "triton_kernel_wrapper" in str(node.target):
            kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
            names.append(f"{getattr(kernel, 'fn', kernel).__name__}:KIND={node.kwargs['kwargs'].get('KIND')}")
    return names


def main() -> int:
    ops._device_guard = lambda t: contextlib.nullcontext()  # no device to switch to
    failures, seen = [], set()
    for dtype in DTYPES:
        for T in (1, 3):  # a cell call convolves x inside its step kernels; a sequence reads the projection
            for reset_after in (False, True):
                label = f"{str(dtype).removeprefix('torch.')} T={T} reset={'after' if reset_after else 'before'}"
                try:
                    launches = trace(dtype, T, reset_after)
                except Exception as error:  # reported per call; the exit status says whether any failed
                    failures.append(f"{label}: {type(error).__name__}: {str(error)[:400]}")
                    continue
                seen.update(launches)
                ok = any(n.startswith("forward") for n in launches) and any(n.startswith("backward") for n in
                                                                           launches)
                print(f"{'ok  ' if ok else 'FAIL'} {label}: {len(launches)} launches", flush=True)
                if not ok:
                    failures.append(f"{label}: no forward or no backward kernel among {launches}")
    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}: kernels launched: "
          + ", ".join(sorted(seen)))
    for f in failures:
        print("FAIL", f)
    print(f"trace_triton: {len(failures)} of {len(DTYPES) * 4} traces failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
