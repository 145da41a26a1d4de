"""``backend="torch"``: the optimized pure-PyTorch fallback, for CPUs and any GPU.

Its two time loops (``_op.py`` composes the rest around them), with far fewer and larger
operations than the reference:

* forward, per step: ``reset="before"``, one convolution of ``h`` for r and z together and one of
  ``r*h`` for n (a large enough call convolves ``x`` with them instead of a projection:
  :func:`_concatenates`); ``reset="after"``, one convolution of ``h`` for all three gates; the gate
  math runs in place on the saved ``gates`` buffer;
* backward, per step in reverse (explicit, not autograd through the loop): the gate gradients
  (elementwise) and the data gradient of the recurrent convolution(s), which carries the state
  gradient back.

A call that needs no gradient (``torch.no_grad``, ``inference_mode``, or nothing requiring grad) takes
the inference path instead (:meth:`TorchLoops.infer`, composed by ``_op.compose_inference``): no autograd, no ``gates``
kept, no custom-op dispatch either.  Under ``torch.compile`` it is traced where the C++ loops run it (their op is
one node of the graph, and Inductor fuses the layout and weight work around it), else it is an opaque op of its own
(``_op.define_inference_op`` says why).  For float32 on the CPU, both loops and the inference path's run in C++
(:class:`_NativeLoops`).  On the CPU in float32 the recurrent convolutions of either loop, when
large enough, run on a weight prepacked for oneDNN once per call (:func:`packed_weight`: no packed weight
outlives its call), and the backward's data gradients run as forward convolutions of the transposed weight
(:class:`_DataGrad`).

One small step on the CPU (T = 1, fewer than :data:`CAT_MIN_PIXELS` pixels: a RAFT update, a streaming
frame) takes neither: :func:`_single_step` runs it as plain ops on the caller's NCHW tensors, differentiable by
autograd, since there the layout conversions of the loops cost more than the step.

Everything else runs channels-last (``_op.py``'s layout; on the CPU, benchmarks/results/cpu/decisions.md
says why).  Memory: the forward's ``gates`` (T*B*G*C*H*W elements, the op contract); the backward's
temporaries are the gate-gradient buffer (T*B*3C*H*W, plus T*B*C*H*W under ``"after"``).  All
arithmetic runs in the input dtype.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Optional

import torch
import torch.nn.functional as F

from ._hoisted import conv_backward, conv_nchw, input_bias, input_projection, padding
from ._layout import channels_last, empty_channels_last
from ._op import compose_inference, define_inference_op, define_op_pair, gates_per_channel
from .base import FusedBackend

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # out = grad * y * (1 - y)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # out = grad * (1 - y^2)
_mkldnn_ops = torch.ops.mkldnn
_MKLDNN_BUILT = torch.backends.mkldnn.is_available()  # whether this torch was built with oneDNN (fixed)


# ------------------------------------------------------------------------- the convolutions of the loops


#: the smallest convolution (multiply-adds per step) that runs on a prepacked weight: below it the packed call's
#: fixed cost loses to ``F.conv2d`` (the crossover measured: benchmarks/results/cpu/decisions.md)
PACK_MIN_MACS = 20_000_000


def _mkldnn_usable(t: torch.Tensor, weight: torch.Tensor, uses: int) -> bool:
    """Whether a convolution of ``t`` (N, C, H, W) with ``weight``, run ``uses`` times in one call, runs on a weight
    prepacked for oneDNN (the ops Inductor's CPU freezing emits): only where the packing is reused (``uses`` >= 2: a
    loop's steps; a single use would reorder the weight just as ``F.conv2d`` does), float32 on the CPU, not while
    tracing unless the C++ loops pack (they pack inside their op; the packing op has no fake kernel to trace), at
    least :data:`PACK_MIN_MACS`; bf16 would need AVX-512 there, so it stays with ``F.conv2d``, which behaves alike
    on every machine."""
    native = NATIVE.usable(t)
    if weight.shape[2:] == (1, 1) and native:  # the C++ loops run a 1x1 kernel as a GEMM
        return False
    return (uses >= 2 and t.shape[0] * t.shape[2] * t.shape[3] * weight.numel() >= PACK_MIN_MACS
            and t.dtype == torch.float32 and t.device.type == "cpu" and _MKLDNN_BUILT
            and torch.backends.mkldnn.enabled and (native or not torch.compiler.is_compiling()))


def packed_weight(weight: torch.Tensor, pad, dilation, frame: torch.Size, transposed: bool = False) -> torch.Tensor:
    """``weight`` packed for oneDNN's convolution of ``frame``-shaped inputs, for the steps of **one call**.

    Packing is scoped to the call that packs: no packed weight outlives it, so none can be stale, whatever
    writes to the weight between calls (an optimizer step, ``load_state_dict``, a write through ``.data``, which
    no version counter sees).  A cache across calls would have to compare the weight's values on every call,
    which costs more than the one reorder it saves (benchmarks/results/cpu/decisions.md).
    ``transposed``: pack the weight of the data gradient instead (:class:`_DataGrad`)."""
    source = weight.flip(2, 3).transpose(0, 1).contiguous() if transposed else weight
    return _mkldnn_ops._reorder_convolution_weight(source, list(pad), [1, 1], list(dilation), 1, list(frame))


class _Conv:
    """``conv(h, weight) + bias`` (``+ other``, added in place) of the 'same' convolution, run ``uses`` times in one
    call: on the weight prepacked for oneDNN where :func:`_mkldnn_usable` (``pack``: the C++ loop packs it itself,
    the Python loop through :func:`packed_weight` on its first step), else ``F.conv2d``.  (oneDNN's binary post-op
    fuses the add too, but measured no faster than the add in place: benchmarks/results/cpu/decisions.md.)"""

    def __init__(self, weight, bias, dilation, frame: torch.Tensor, uses: int):
        self.pad, self.dilation, self.bias, self.frame = padding(weight, dilation), list(dilation), bias, frame.shape
        self.pack, self.packed = _mkldnn_usable(frame, weight, uses), None
        # channels-last like the activations, once per call: else every step's F.conv2d converts it again
        self.weight = weight if self.pack else weight.contiguous(memory_format=torch.channels_last)

    def native_args(self) -> tuple:
        """What ``_cpu_forward_loop`` takes of this convolution: weight, bias, whether to pack the weight."""
        return self.weight, self.bias, self.pack

    def __call__(self, h, other=None):
        if not self.pack:
            y = F.conv2d(h, self.weight, self.bias, 1, self.pad, self.dilation)
        else:
            if self.packed is None:
                self.packed = packed_weight(self.weight, self.pad, self.dilation, self.frame)
            y = _mkldnn_ops._convolution_pointwise(h, self.packed, self.bias, self.pad, [1, 1], self.dilation, 1,
                                                   "none", [], "")
        return y if other is None else y.add_(other)


class _DataGrad:
    """``d conv(h, weight) / d h`` for an output gradient ``g``: the 'same' stride-1 convolution's data gradient is
    itself a 'same' convolution, of ``g`` with the weight flipped in space and transposed in channels, so where
    :func:`_mkldnn_usable` it runs as a forward convolution with that weight prepacked once; else through
    ``convolution_backward``."""

    def __init__(self, weight, dilation, frame: torch.Tensor, uses: int):
        self.weight, self.dilation, self.pad = weight, list(dilation), padding(weight, dilation)
        self.pack, self.packed = _mkldnn_usable(frame, weight, uses), None
        self.grads = torch.Size((frame.shape[0], weight.shape[0], *frame.shape[2:]))  # its input: the output gradient

    def __call__(self, g, h):
        if not self.pack:
            return conv_backward(g, h, self.weight, self.dilation, True, False)[0]
        if self.packed is None:  # the Python loop's first step (the C++ loop packs for itself)
            self.packed = packed_weight(self.weight, self.pad, self.dilation, self.grads, transposed=True)
        g = g.contiguous(memory_format=torch.channels_last)  # oneDNN takes dense inputs; a gate block is a slice
        return _mkldnn_ops._convolution_pointwise(g, self.packed, None, self.pad, [1, 1], self.dilation, 1, "none",
                                                  [], "")


# ------------------------------------------------------------------------------------ the loops


#: the fewest pixels per step (B*H*W) for which a step without a hoisted projection convolves cat([x, h]) (see
#: :class:`_Preactivations`): the concatenated weights cost a copy of the weights per call, which only a frame this
#: large amortises (benchmarks/results/cpu/decisions.md)
CAT_MIN_PIXELS = 1024


def _concatenates(x: torch.Tensor) -> bool:
    """Whether the forward steps convolve ``cat([x_t, h])`` instead of reading a hoisted projection
    (:class:`_Preactivations`): in the C++ loop when the call has :data:`CAT_MIN_PIXELS` pixels over all its steps
    (T*B*H*W: the weights are concatenated once per call), in the Python loop only for a single step of as many;
    measured: benchmarks/results/cpu/decisions.md."""
    T, B, _, H, W = x.shape
    steps = T if NATIVE.usable(x) else int(T == 1)
    return steps * B * H * W >= CAT_MIN_PIXELS


def _side_by_side(w_x: torch.Tensor, w_h: torch.Tensor) -> torch.Tensor:
    """``cat([w_x, w_h], 1)``, written channels-last (the layout the convolutions take it in) in one pass (traced,
    as a ``cat`` of the permuted weights, which Inductor writes in one pass; it made two of the copies below)."""
    if torch.compiler.is_compiling():
        return torch.cat([w_x.permute(0, 2, 3, 1), w_h.permute(0, 2, 3, 1)], 3).permute(0, 3, 1, 2)
    out = w_x.new_empty(w_x.shape[0], *w_x.shape[2:], w_x.shape[1] + w_h.shape[1]).permute(0, 3, 1, 2)
    out[:, : w_x.shape[1]].copy_(w_x)
    out[:, w_x.shape[1]:].copy_(w_h)
    return out


class _Preactivations:
    """The gate pre-activations of each step ``t``, as the forward loop asks for them: ``rz(t, h)`` = ``W_rz*x_t +
    U_rz*h + b_rz`` and ``n(t, rh)`` = ``W_n*x_t + U_n*rh + b_n`` (``reset="before"``), each a fresh tensor.

    From the hoisted projection ``gx`` when there is one: a convolution of ``h`` (or ``rh``) plus ``gx``'s block.
    Without it (where :func:`_concatenates`) ``x_t`` is convolved
    together with the state, as one convolution over ``cat([x_t, h])`` with the weights ``[W_rz | U_rz]`` (and
    ``cat([x_t, rh])`` with ``[W_n | U_n]``): two convolutions of larger depth instead of three, measured faster for a
    step (benchmarks/results/cpu/decisions.md)."""

    def __init__(self, x, gx, h0, weight_ih, weight_hh, bias_x, dilation, T):
        C = weight_hh.shape[1]
        self.x, self.hoisted = x, gx is not None
        if gx is not None:
            self.gx_rz, self.gx_n = gx.split_with_sizes((2 * C, C), 2)
            self.conv_rz = _Conv(weight_hh[: 2 * C], None, dilation, h0, T)
            self.conv_n = _Conv(weight_hh[2 * C:], None, dilation, h0, T)
        else:
            frame = x.new_empty(x.shape[1], x.shape[2] + C, *x.shape[3:])  # the shape cat([x_t, h]) has
            b_rz, b_n = (None, None) if bias_x is None else bias_x.split_with_sizes((2 * C, C))
            self.conv_rz = _Conv(_side_by_side(weight_ih[: 2 * C], weight_hh[: 2 * C]), b_rz, dilation, frame, T)
            self.conv_n = _Conv(_side_by_side(weight_ih[2 * C:], weight_hh[2 * C:]), b_n, dilation, frame, T)

    def rz(self, t, h):
        if self.hoisted:
            return self.conv_rz(h, self.gx_rz[t])
        return self.conv_rz(torch.cat([self.x[t], h], 1))

    def n(self, t, rh):
        if self.hoisted:
            return self.conv_n(rh, self.gx_n[t])
        return self.conv_n(torch.cat([self.x[t], rh], 1))


class _NativeLoops:
    """Both loops in C++ (``csrc/cpu/loops.cpp``: the same steps, with the gate math between two convolutions in
    one pass and no Python between steps), from the CPU extension ``convgru_ext._cpu`` that setup.py builds
    wherever torch is importable at build time.  Used for float32 on the CPU, eager or traced, when the extension
    loaded and :attr:`enabled`; else the Python loops below run (same results within float32 rounding).  Measured
    against the Python loops: benchmarks/results/cpu/decisions.md."""

    def __init__(self):
        self.enabled = True  # tests switch it off to compare the two loops (:meth:`disabled`)
        self.forward = self.backward = None
        try:
            importlib.import_module("convgru_ext._cpu")
        except ImportError as error:
            self.error = f"the CPU extension convgru_ext._cpu is not installed ({error})"
        else:
            self.error = None
            self._register_fakes()
            self.forward = torch.ops.convgru_ext._cpu_forward_loop.default
            self.backward = torch.ops.convgru_ext._cpu_backward_loop.default

    def usable(self, x: torch.Tensor) -> bool:
        """Whether the C++ loops run a call with inputs like ``x``, in eager or traced (their ops have fake kernels:
        :meth:`_register_fakes`)."""
        return self.enabled and self.error is None and x.dtype == torch.float32 and x.device.type == "cpu"

    @staticmethod
    def _register_fakes() -> None:
        """What the two loop ops return, for tracing (shapes and the channels-last layout of loops.cpp)."""

        @torch.library.register_fake("convgru_ext::_cpu_forward_loop")
        def _(x, gx, h0, w_a, b_a, pack_a, w_b, b_b, pack_b, padding, dilation, reset_after, keep_gates):
            T, B, _, H, W = x.shape
            C = h0.shape[1]
            G = gates_per_channel(reset_after)
            gates = empty_channels_last(x, T, B, G * C, H, W) if keep_gates else x.new_empty(0)
            return empty_channels_last(x, T, B, C, H, W), gates

        @torch.library.register_fake("convgru_ext::_cpu_backward_loop")
        def _(grad_out, h0, out, gates, w_a, pack_a, w_b, pack_b, padding, dilation, reset_after):
            T, B, C, H, W = out.shape
            dxn = empty_channels_last(out, T, B, C, H, W) if reset_after else out.new_empty(0)
            return empty_channels_last(out, T, B, 3 * C, H, W), dxn, empty_channels_last(out, B, C, H, W)

    @contextlib.contextmanager
    def disabled(self):
        """Run the Python loops inside this block (tests compare them with the C++ loops)."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before


NATIVE = _NativeLoops()


def _after_bias(bias_hn: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``(0, 0, b_hn)``: the bias of the one convolution ``U*h`` under ``reset="after"`` (r multiplies ``U_n*h + b_hn``;
    the rest of ``b_hh`` is in the projection's bias, ``_hoisted.input_bias``)."""
    return None if bias_hn is None else torch.cat([bias_hn.new_zeros(2 * bias_hn.shape[0]), bias_hn])


def _forward_loop(x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after, keep_gates):
    """``(out, gates)`` of ``StepLoops.forward``; without ``keep_gates`` (the inference path) ``gates`` is None and
    the gate math runs in place on each step's temporaries."""
    T, B, _, H, W = x.shape
    C = weight_hh.shape[1]

    def native(conv_a: _Conv, conv_b: Optional[_Conv]):
        b_args = (None, None, False) if conv_b is None else conv_b.native_args()
        out, gates = NATIVE.forward(x, gx, h0, *conv_a.native_args(), *b_args, conv_a.pad, conv_a.dilation,
                                    reset_after, keep_gates)
        return out, (gates if keep_gates else None)

    def buffers():
        out = empty_channels_last(x, T, B, C, H, W)
        gates = empty_channels_last(x, T, B, gates_per_channel(reset_after) * C, H, W) if keep_gates else None
        return out, gates, (gates.unbind(0) if keep_gates else [None] * T)

    h = h0
    if reset_after:
        if gx is None:  # reset "after" convolves h alone (r multiplies U_n*h + b_hn): the projection, here
            gx = input_projection(x, weight_ih, bias_x, dilation)
        conv = _Conv(weight_hh, _after_bias(bias_hn), dilation, h0, T)
        if NATIVE.usable(x):
            return native(conv, None)
        out, gates, steps = buffers()
        for g, gate, o in zip(gx.unbind(0), steps, out.unbind(0)):
            g_rz, g_n = g.split_with_sizes((2 * C, C), 1)
            gh_rz, gh_n = conv(h).split_with_sizes((2 * C, C), 1)  # U*h + (0, 0, b_hn)
            if gate is None:
                r, z = gh_rz.add_(g_rz).sigmoid_().chunk(2, 1)
                n = gh_n.mul_(r).add_(g_n).tanh_()
            else:
                rz, n, ghn = gate.split_with_sizes((2 * C, C, C), 1)
                r, z = torch.add(g_rz, gh_rz, out=rz).sigmoid_().chunk(2, 1)
                ghn.copy_(gh_n)
                torch.addcmul(g_n, r, ghn, out=n).tanh_()
            h = torch.lerp(h, n, z, out=o)
    else:
        if gx is None and not _concatenates(x):
            gx = input_projection(x, weight_ih, bias_x, dilation)
        pre = _Preactivations(x, gx, h0, weight_ih, weight_hh, bias_x, dilation, T)
        if NATIVE.usable(x):
            return native(pre.conv_rz, pre.conv_n)
        out, gates, steps = buffers()
        for t, (gate, o) in enumerate(zip(steps, out.unbind(0))):
            if gate is None:
                r, z = pre.rz(t, h).sigmoid_().chunk(2, 1)
                n = pre.n(t, r * h).tanh_()
            else:
                rz, n = gate.split_with_sizes((2 * C, C), 1)
                r, z = torch.sigmoid(pre.rz(t, h), out=rz).chunk(2, 1)
                torch.tanh(pre.n(t, r * h), out=n)
            h = torch.lerp(h, n, z, out=o)
    return out, gates


def _one_small_step(x: torch.Tensor, problem) -> bool:
    """Whether a call runs :func:`_single_step` instead of the op pair and its loops: one step (T = 1) of fewer than
    :data:`CAT_MIN_PIXELS` pixels (B*H*W), on the CPU, without ``recompute``, eager or traced.  There the
    channels-last copies of the weights and the frames cost more than the step's convolutions gain from that
    layout, and a step's backward through autograd costs less than the op pair's
    (benchmarks/results/cpu/decisions.md)."""
    T, B, _, H, W = x.shape
    return T == 1 and B * H * W < CAT_MIN_PIXELS and x.device.type == "cpu" and not problem.recompute


def _single_step(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after, context) -> torch.Tensor:
    """``out`` (1, B, C, H, W) of one step (:func:`_one_small_step`), the arguments of ``_op.compose_inference`` with
    ``x`` and ``h0`` in any layout: the step's three convolutions (two under ``reset="after"``) and its gate math as
    plain ops, on NCHW inputs with the weights as they come, none copied, differentiable by autograd
    (what it saves: x, h, r*h and the gate activations, as the op pair saves x, h0, out and the gates); ``out``
    channels-last, as every fused backend returns it (README, "Outputs' layout")."""
    C = weight_hh.shape[1]
    x, h = x[0].contiguous(), h0.contiguous()  # NCHW, the weights' layout for oneDNN (a copy only of a small
    # frame given channels-last, such as the state this function returned)

    def conv(t, weight, bias):
        return conv_nchw(t, weight, bias, padding(weight, dilation), dilation)

    gx = conv(x, weight_ih, input_bias(bias_ih, bias_hh, reset_after))
    if context is not None:
        gx = gx + context[0]
    g_rz, g_n = gx.split_with_sizes((2 * C, C), 1)
    if reset_after:
        bias_hn = None if bias_hh is None else bias_hh[2 * C:]
        gh_rz, gh_n = conv(h, weight_hh, _after_bias(bias_hn)).split_with_sizes((2 * C, C), 1)
        r, z = torch.sigmoid(gh_rz + g_rz).chunk(2, 1)
        n = torch.tanh(torch.addcmul(g_n, gh_n, r))
    else:
        r, z = torch.sigmoid(conv(h, weight_hh[: 2 * C], None) + g_rz).chunk(2, 1)
        n = torch.tanh(conv(r * h, weight_hh[2 * C:], None) + g_n)
    return torch.lerp(h, n, z).contiguous(memory_format=torch.channels_last).unsqueeze(0)


class TorchLoops:
    """The time loops of ``backend="torch"`` (``_op.StepLoops``)."""

    def hoists(self, T: int) -> bool:
        """Never asked to: the forward loop projects ``x`` itself unless its steps convolve ``x`` with the state
        (:func:`_concatenates`), which depends on more than T."""
        return False

    def forward(self, x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after):
        return _forward_loop(x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after, True)

    def infer(self, x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after):
        """The inference path's loop (``_op.compose_inference``): :meth:`forward`'s states, no gates kept."""
        return _forward_loop(x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after, False)[0]

    def backward(self, grad_out, h0, out, gates, weight_hh, dilation, reset_after):
        T, B, C, H, W = out.shape
        w_rz, w_n = weight_hh[: 2 * C], weight_hh[2 * C:]
        if reset_after:
            grad_hh = _DataGrad(weight_hh, dilation, grad_out[0], T)
        else:
            grad_rz, grad_n = _DataGrad(w_rz, dilation, grad_out[0], T), _DataGrad(w_n, dilation, grad_out[0], T)
        if NATIVE.usable(out):
            a, b = (grad_hh, None) if reset_after else (grad_rz, grad_n)
            dgh, dxn, dh0 = NATIVE.backward(grad_out, h0, out, gates, a.weight, a.pack, b and b.weight,
                                            b is not None and b.pack, a.pad, a.dilation, reset_after)
            return dgh, (dxn if reset_after else None), dh0
        # dgh[t]: the gradient of step t's gate pre-activations (r, z, n blocks) as
        # seen by the recurrent convolution(s); also the input convolution's,
        # except the n block under reset_after, which differs by the factor r and
        # is kept in dxn until the loop is over.
        dgh = empty_channels_last(out, T, B, 3 * C, H, W)
        dxn = empty_channels_last(out, T, B, C, H, W) if reset_after else None
        dh = grad_out[T - 1].clone()  # dL/dh_T; becomes dL/dh_t going back
        states, grads, dghs = out.unbind(0), grad_out.unbind(0), dgh.unbind(0)
        dxns = dxn.unbind(0) if reset_after else None
        for t in reversed(range(T)):
            h_prev = states[t - 1] if t > 0 else h0
            r, z, n, *ghn = gates[t].chunk(gates.shape[2] // C, 1)
            d_rz, d_n = dghs[t].split_with_sizes((2 * C, C), 1)
            d_r, d_z = d_rz.chunk(2, 1)
            # h' = h + z*(n - h)
            _sigmoid_backward((n - h_prev).mul_(dh), z, grad_input=d_z)
            if reset_after:  # n = tanh(gx_n + r*ghn)
                dn = _tanh_backward(dh * z, n, grad_input=dxns[t])
                torch.mul(dn, r, out=d_n)
                _sigmoid_backward(dn * ghn[0], r, grad_input=d_r)
                dh_prev = grad_hh(dghs[t], h_prev)
            else:  # n = tanh(gx_n + U_n*(r*h))
                _tanh_backward(dh * z, n, grad_input=d_n)
                drh = grad_n(d_n, h_prev)
                _sigmoid_backward(drh * h_prev, r, grad_input=d_r)
                dh_prev = grad_rz(d_rz, h_prev)
                dh_prev.addcmul_(drh, r)
            dh = dh_prev.add_(dh).addcmul_(dh, z, value=-1)  # + dh*(1 - z)
            if t > 0:
                dh.add_(grads[t - 1])
        return dgh, dxn, dh


torch_forward, torch_backward = define_op_pair("torch", TorchLoops())
torch_inference = compose_inference(TorchLoops())
torch_inference_op = define_inference_op("torch", torch_inference)


class TorchBackend(FusedBackend):
    name = "torch"

    def forward_op(self):
        return torch_forward

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem):
        """One small step as plain ops in the caller's layout (:func:`_single_step`, with a gradient or without);
        else a call that needs no gradient takes the inference path (channels-last, no ``gates`` kept), others the
        op pair."""
        options = (list(problem.dilation), problem.reset_after, context)
        if _one_small_step(x, problem):
            return _single_step(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, *options)
        if not needs_grad((x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context)):
            traced_python_loop = torch.compiler.is_compiling() and not NATIVE.usable(x)
            return (torch_inference_op if traced_python_loop else torch_inference)(
                channels_last(x), channels_last(h0), weight_ih, weight_hh, bias_ih, bias_hh, *options)
        return super().sequence(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem)


def needs_grad(args) -> bool:
    """Whether autograd will want a gradient of this call's result (else the inference path serves it)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args)
