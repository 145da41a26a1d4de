"""The op pair every fused backend implements, and the one composition around each backend's time loops.

The design, described here once: a fused backend computes only the recurrence, **its two time
loops**.  Everything a layer call does outside them is composed around them by this module, the
same for every backend:

* forward: the input projection ``W*x + b`` of all T steps is one convolution over the T*B
  frames, before the loop (``_hoisted.input_projection``; a backend may instead convolve ``x``
  inside its step kernels when ``hoists(T)`` says so, as Triton does for a cell call);
  then the backend's forward loop, per step the recurrent convolution(s) with the gate math,
  writing every state ``out`` and the ``gates`` the backward needs;
* backward: the backend's backward loop, per step in reverse the data gradient of the recurrent
  convolution(s) with the gate-gradient math, giving every step's gate gradients ``dgh`` (and
  ``dxn``) and ``dh0``; then, once over all T*B frames, the weight and bias gradients and ``dx``
  (``_hoisted.weight_and_input_grads``).

Each backend registers ``convgru_ext::{name}_forward`` / ``{name}_backward`` through
:func:`define_op_pair`, with the schemas :data:`FORWARD_SCHEMA` / :data:`BACKWARD_SCHEMA`:

Shapes (one dtype, T >= 0): ``x`` (T, B, Cin, H, W), ``h0`` (B, C, H, W),
``weight_ih`` (3C, Cin, kh, kw), ``weight_hh`` (3C, C, kh, kw), biases (3C,),
``out`` (T, B, C, H, W) = every state h_1..h_T; ``context`` (Tc, B, 3C, H, W), Tc = 1 (the same for
every step) or T, added to the gate pre-activations ``W*x + b`` (blocks r, z, n): it enters the
hoisted projection, so no backend needs to know of it.

Layout: the activations (``x``, ``h0``, ``out``, ``gates``, ``grad_out``, ``dx``, ``dh0``) are
*channels-last*: logically (..., C, H, W) as above, in memory (..., H, W, C) and dense
(``_layout.py``), the layout the convolution libraries and our kernels run fastest in (channels
are the GEMM's reduction dimension).  Weights and biases are contiguous, and their gradients have exactly
the strides of ``torch.empty_like(weight)``, what the fake kernels say, whatever layout the convolution
library returned (``_layout.like``: oneDNN returns bf16 weight gradients channels-last on CPUs with
AVX-512 BF16 or AMX).  ``tests/test_layout.py`` holds this contract for every op pair; layouts compare by
the strides of dimensions larger than 1 (``_layout.significant_strides``), except these raw ones.

``gates`` is what the forward saves for the backward, in the input dtype: (T, B, G*C, H, W)
holding, channel block by channel block, the activations ``r, z, n`` (G = 3) and, for
``reset_after``, also ``U_n*h + b_hn`` (G = 4).  Together with ``x``, ``h0`` and ``out`` this is
all the backward needs; the input projection is not saved and the biases do not enter the
backward.  ``dx`` is an empty (0,) tensor when ``need_dx`` is false; ``dbias_*`` are returned even
when the bias was None (autograd drops them); ``dcontext`` (``context_steps``, B, 3C, H, W) is the
gradient of the projection, summed over the steps when ``context_steps`` is 1, and an empty (0,)
tensor when ``context_steps`` is 0 (no context).

With ``recompute`` the autograd formula saves ``x``, ``h0``, ``out``, the parameters and the context
but not ``gates``, and its backward recomputes the gates first: every step at once, as one forward
step (T = 1) over the T*B frames, since ``out`` holds every step's entering state.

The fake (meta) kernels and the autograd formula are registered here for every pair, so that
every backend gets ``torch.compile`` support and the same autograd behaviour from one piece of code.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
from torch import Tensor

from ._hoisted import input_bias, input_projection, weight_and_input_grads
from ._layout import channels_last, empty_channels_last, frames, logical, physical  # noqa: F401 (the layout's home for importers)

_FORWARD_ARGS = ("Tensor x, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
                 "int[] dilation, bool reset_after", "Tensor? context=None, bool recompute=False")
_BACKWARD_ARGS = ("Tensor grad_out, Tensor x, Tensor h0, Tensor out, Tensor gates, Tensor weight_ih, "
                  "Tensor weight_hh, int[] dilation, bool reset_after, bool need_dx", "int context_steps=0")


def forward_schema(*extra: str) -> str:
    """The schema of ``convgru_ext::{name}_forward``, with the arguments ``extra`` (e.g. ``"str math"``) after
    the required ones: (out, gates)."""
    return f"({', '.join([_FORWARD_ARGS[0], *extra, _FORWARD_ARGS[1]])}) -> (Tensor, Tensor)"


def backward_schema(*extra: str) -> str:
    """The schema of ``convgru_ext::{name}_backward``, with ``extra`` after the required arguments:
    (dx, dh0, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dcontext)."""
    return f"({', '.join([_BACKWARD_ARGS[0], *extra, _BACKWARD_ARGS[1]])}) -> ({', '.join(['Tensor'] * 7)})"


#: ``convgru_ext::{name}_forward``
FORWARD_SCHEMA = forward_schema()
#: ``convgru_ext::{name}_backward``
BACKWARD_SCHEMA = backward_schema()


def gates_per_channel(reset_after: bool) -> int:
    """G: how many (T, B, C, H, W) blocks ``gates`` holds."""
    return 4 if reset_after else 3


class StepLoops(Protocol):
    """What a fused backend supplies: its two time loops (all tensors in the op layout above)."""

    def hoists(self, T: int) -> bool:
        """Whether the forward loop reads the hoisted projection ``gx``; if not, it convolves ``x`` itself."""
        ...

    def forward(self, x: Tensor, gx: Optional[Tensor], h0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                bias_x: Optional[Tensor], bias_hn: Optional[Tensor], dilation: list[int],
                reset_after: bool) -> tuple[Tensor, Tensor]:
        """``(out, gates)`` of T >= 1 steps over B >= 1 frames.

        ``gx`` (T, B, 3C, H, W) is ``W*x_t + bias_x`` (plus the context, if any), or None when ``hoists(T)``
        is false and there is no context; ``bias_x``
        is the bias that goes with ``W*x`` (``_hoisted.input_bias``), ``bias_hn`` the part of
        ``b_hh`` that ``r`` multiplies under ``reset_after`` (else None)."""
        ...

    def backward(self, grad_out: Tensor, h0: Tensor, out: Tensor, gates: Tensor, weight_hh: Tensor,
                 dilation: list[int], reset_after: bool) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """``(dgh, dxn, dh0)``: every step's gate pre-activation gradients (T, B, 3C, H, W) as the recurrent
        convolution(s) see them; for ``reset_after`` the n-gradient as the input convolution sees it
        (T, B, C, H, W; else None); and dL/dh0 (B, C, H, W, any layout)."""
        ...


def _around_the_loop(hoist: bool, x, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after, context):
    """``(gx, bias_x, bias_hn)`` for a forward loop: the hoisted projection (None unless ``hoist`` or a context),
    the bias that goes with ``W*x`` and the part of ``b_hh`` that ``r`` multiplies (``StepLoops.forward``)."""
    C = weight_hh.shape[1]
    bias_x = input_bias(bias_ih, bias_hh, reset_after)
    gx = None
    if hoist or context is not None:  # context adds to the projection
        gx = input_projection(x, weight_ih, bias_x, dilation)
        if context is not None:
            gx.add_(context)
    bias_hn = bias_hh[2 * C:] if reset_after and bias_hh is not None else None
    return gx, bias_x, bias_hn


def compose_forward(loops: StepLoops):
    """The forward op of a backend whose time loop is ``loops.forward`` (see the module docstring)."""

    def forward(x: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Optional[Tensor],
                bias_hh: Optional[Tensor], dilation: list[int], reset_after: bool, context: Optional[Tensor] = None,
                recompute: bool = False) -> tuple[Tensor, Tensor]:
        T, B = x.shape[:2]
        if T == 0 or B == 0:
            return fake_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after)
        gx, bias_x, bias_hn = _around_the_loop(loops.hoists(T), x, weight_ih, weight_hh, bias_ih, bias_hh, dilation,
                                               reset_after, context)
        return loops.forward(x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, list(dilation), reset_after)

    return forward


def compose_inference(loops: StepLoops):
    """The forward of a call that needs no gradient, around a backend's inference loop ``loops.infer`` (the arguments
    of ``StepLoops.forward``; returns ``out`` alone): the projection of :func:`compose_forward`, no ``gates`` kept,
    no custom op and no autograd (for ``torch.compile``, :func:`define_inference_op` wraps it)."""

    def forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after, context=None) -> Tensor:
        T, B = x.shape[:2]
        if T == 0 or B == 0:
            return fake_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after)[0]
        gx, bias_x, bias_hn = _around_the_loop(loops.hoists(T), x, weight_ih, weight_hh, bias_ih, bias_hh, dilation,
                                               reset_after, context)
        return loops.infer(x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, list(dilation), reset_after)

    return forward


def compose_backward(loops: StepLoops):
    """The backward op of a backend whose time loop is ``loops.backward`` (see the module docstring)."""

    def backward(grad_out: Tensor, x: Tensor, h0: Tensor, out: Tensor, gates: Tensor, weight_ih: Tensor,
                 weight_hh: Tensor, dilation: list[int], reset_after: bool, need_dx: bool,
                 context_steps: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        T, B = x.shape[:2]
        if T == 0 or B == 0:  # no step or no frame: nothing flows back
            return tuple(t.zero_() for t in fake_backward(grad_out, x, h0, out, gates, weight_ih, weight_hh,
                                                          dilation, reset_after, need_dx, context_steps))
        dgh, dxn, dh0 = loops.backward(grad_out, h0, out, gates, weight_hh, list(dilation), reset_after)
        dx, dw_ih, dw_hh, db_ih, db_hh = weight_and_input_grads(
            x, h0, out, gates, dgh, dxn, weight_ih, weight_hh, list(dilation), reset_after, need_dx)
        # dgh now holds the projection's gradient (weight_and_input_grads put dxn in its n block), the context's
        dcontext = dgh if context_steps == T else channels_last(dgh.sum(0, keepdim=True)) if context_steps else \
            x.new_empty(0)
        return dx, channels_last(dh0.to(x.dtype)), dw_ih, dw_hh, db_ih, db_hh, dcontext

    return backward


#: ``convgru_ext::{name}_inference``: the forward of a call that needs no gradient, its output alone
INFERENCE_SCHEMA = ("(Tensor x, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
                    "int[] dilation, bool reset_after, Tensor? context=None) -> Tensor")


def define_inference_op(name: str, forward):
    """``convgru_ext::{name}_inference`` around ``forward`` (:func:`compose_inference`): what a traced call that
    needs no gradient runs where the backend's loops are Python (the torch backend off the C++ loops).  Opaque to
    ``torch.compile``, as the op pair is: traced into, Inductor's CPU code for such a loop (its own convolutions,
    the gate math fused) measured slower than ``forward`` in eager (benchmarks/results/cpu/decisions.md).  Eager
    calls ``forward`` directly (no dispatch), and so do traced calls whose loops are an op with a fake kernel of
    their own (the C++ loops): the graph then holds that op and Inductor's code around it."""
    op = torch.library.custom_op(f"convgru_ext::{name}_inference", forward, mutates_args=(), schema=INFERENCE_SCHEMA)
    op.register_fake(lambda *args: fake_forward(*args)[0])
    return op


def fake_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after, context=None,
                 recompute=False):
    T, B, _, H, W = x.shape
    C = weight_hh.shape[1]
    G = gates_per_channel(reset_after)
    return empty_channels_last(x, T, B, C, H, W), empty_channels_last(x, T, B, G * C, H, W)


def fake_backward(grad_out, x, h0, out, gates, weight_ih, weight_hh, dilation, reset_after, need_dx,
                  context_steps=0):
    C3 = weight_hh.shape[0]
    _, B, _, H, W = x.shape
    return (
        empty_channels_last(x, *x.shape) if need_dx else x.new_empty(0),
        empty_channels_last(h0, *h0.shape),
        torch.empty_like(weight_ih),
        torch.empty_like(weight_hh),
        x.new_empty(C3),
        x.new_empty(C3),
        empty_channels_last(x, context_steps, B, C3, H, W) if context_steps else x.new_empty(0),
    )


def define_op_pair(name: str, loops: StepLoops, *, triton: bool = False):
    """Define ``convgru_ext::{name}_forward`` / ``{name}_backward`` around ``loops``: the composition above,
    the fake kernels and autograd.  ``triton``: a ``torch.library.triton_op``, so that ``torch.compile``
    sees the Triton kernels inside (through ``wrap_triton``); otherwise an opaque ``custom_op``.

    Returns the two ops.  An eager call need not go through them: :func:`eager` gives the same composition and
    autograd formula as a ``torch.autograd.Function``, without the dispatcher's round trips."""
    forward, backward = compose_forward(loops), compose_backward(loops)
    define = torch.library.triton_op if triton else torch.library.custom_op
    forward_op = define(f"convgru_ext::{name}_forward", forward, mutates_args=(), schema=FORWARD_SCHEMA)
    backward_op = define(f"convgru_ext::{name}_backward", backward, mutates_args=(), schema=BACKWARD_SCHEMA)
    forward_op.register_fake(fake_forward)
    backward_op.register_fake(fake_backward)
    register_autograd(forward_op, backward_op)
    _EAGER[forward_op] = (forward, backward)
    return forward_op, backward_op


#: forward op -> its (forward, backward) composition, for :func:`eager`
_EAGER: dict = {}


def eager(forward_op):
    """What an eager call of ``forward_op`` (same arguments and results) runs: the op's composition through a
    ``torch.autograd.Function`` with the op pair's autograd formula, or the op itself under tracing (compile,
    export) or for an op that :func:`define_op_pair` did not define.  The dispatcher's work per call (schema
    parsing, the autograd kernel of ``register_autograd``, the redispatch to the backward op) costs more than a
    small call's convolutions on a CPU; a Function pays none of it."""
    pair = _EAGER.get(forward_op)
    if pair is None or torch.compiler.is_compiling():
        return forward_op
    return lambda *args: _EagerPair.apply(pair, *args)


class _EagerPair(torch.autograd.Function):
    """:func:`eager`'s Function: ``apply((forward, backward), *forward_args)`` -> (out, gates)."""

    @staticmethod
    def forward(ctx, pair, *inputs):
        output = pair[0](*inputs)
        _setup_context(ctx, inputs, output)
        ctx.pair = pair
        return output

    @staticmethod
    def backward(ctx, grad_out, _grad_gates):
        forward, backward = ctx.pair
        return (None, *_backward(ctx, grad_out, forward, backward, ctx.needs_input_grad[1:]))


def recompute_gates(forward_op, x, h0, out, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after,
                    context) -> Tensor:
    """Every step's ``gates`` again, from the states the forward returned: one forward step over T*B frames."""
    T, B, Cin, H, W = x.shape
    C = weight_hh.shape[1]
    h_prev = empty_channels_last(out, T, B, C, H, W)  # the state entering each step
    h_prev[0].copy_(h0)
    h_prev[1:].copy_(out[:-1])
    if context is not None:
        context = frames(channels_last(context.expand(T, -1, -1, -1, -1))).unsqueeze(0)
    _, gates = forward_op(frames(channels_last(x)).unsqueeze(0), frames(h_prev), weight_ih,
                          weight_hh, bias_ih, bias_hh, dilation, reset_after, context)
    return gates.view(T, B, -1, H, W)


def _setup_context(ctx, inputs, output) -> None:
    """What the backward of the op pair (either path: :func:`register_autograd`, :func:`eager`) keeps."""
    x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after, context, recompute = inputs
    out, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)  # no zero-filled gradient for `gates`
    ctx.recompute = recompute
    if recompute:
        ctx.save_for_backward(x, h0, out, weight_ih, weight_hh, bias_ih, bias_hh, context)
    else:
        ctx.save_for_backward(x, h0, out, gates, weight_ih, weight_hh)
    ctx.dilation = list(dilation)
    ctx.reset_after = reset_after
    ctx.context_steps = 0 if context is None else context.shape[0]


def _backward(ctx, grad_out, forward, backward, need) -> tuple:
    """The gradients of the forward's inputs (``need``: which are wanted), through ``backward`` (the backward op
    or its composition); ``forward`` recomputes the gates under ``recompute``."""
    if ctx.recompute:
        x, h0, out, weight_ih, weight_hh, bias_ih, bias_hh, context = ctx.saved_tensors
        gates = recompute_gates(forward, x, h0, out, weight_ih, weight_hh, bias_ih, bias_hh, ctx.dilation,
                                ctx.reset_after, context)
    else:
        x, h0, out, gates, weight_ih, weight_hh = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dcontext = backward(
        channels_last(grad_out), x, h0, out, gates, weight_ih, weight_hh,
        ctx.dilation, ctx.reset_after, bool(need[0]), ctx.context_steps if need[8:9] == (True,) else 0,
    )

    def keep(grad: Tensor, wanted: bool) -> Optional[Tensor]:
        return grad if wanted else None

    return (
        keep(dx, need[0]),
        keep(dh0, need[1]),
        keep(dw_ih, need[2]),
        keep(dw_hh, need[3]),
        keep(db_ih, need[4]),  # False where the bias is None
        keep(db_hh, need[5]),
        None,
        None,
        keep(dcontext, need[8:9] == (True,)),
        None,
    )[: len(need)]  # a call that left `context` (and `recompute`) out has no gradient slot for them


def register_autograd(forward_op, backward_op) -> None:
    """Make ``forward_op`` differentiable through ``backward_op`` (schemas above)."""

    def backward(ctx, grad_out, _grad_gates):
        return _backward(ctx, grad_out, forward_op, backward_op, ctx.needs_input_grad)

    torch.library.register_autograd(forward_op, backward, setup_context=_setup_context)
