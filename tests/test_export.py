"""torch.export and ONNX: the modules export to standard operators and run in onnxruntime like eager.

While exporting, every call runs the reference backend (``backends.exporting``), so the graph holds
the spec's operators and no custom op; the tests run the exported files in onnxruntime on the CPU and
compare with eager (a fused backend) within float32 tolerance, at two batch sizes (the batch is dynamic).
"""

import pytest
import torch

from convgru_ext import ConvGRU, ConvGRUCell, SepConvGRU
from helpers import rel_err

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (torch.onnx.export(dynamo=True) needs it)")

#: the float32 tolerance of an exported graph against eager: both compute in float32, in another order
EXPORT_TOL = 1e-5
#: what a ConvGRU lowers to; the rest of a graph may only be ONNX's standard plumbing (shapes, slices, ...)
CORE_OPS = {"Conv", "Sigmoid", "Tanh", "Mul", "Add", "Sub"}


class _Step(torch.nn.Module):
    """A cell or SepConvGRU called as users call them in a model: ``(x, h) -> h'``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, h):
        return self.inner(x, h)


def _models():
    torch.manual_seed(0)
    return {
        "cell": (_Step(ConvGRUCell(3, 4, backend="torch")),
                 lambda B: (torch.randn(B, 3, 6, 7), torch.randn(B, 4, 6, 7))),
        "sep": (_Step(SepConvGRU(3, 4, backend="torch")), lambda B: (torch.randn(B, 3, 6, 7), torch.randn(B, 4, 6, 7))),
        "gru": (ConvGRU(3, 4, num_layers=2, bidirectional=True, reset="after", backend="torch"),
                lambda B: (torch.randn(3, B, 3, 6, 7),)),
    }


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


@pytest.mark.parametrize("name", ["cell", "sep", "gru"])
def test_torch_export_holds_no_custom_op_and_matches_eager(name):
    model, inputs = _models()[name]
    model.eval()
    args = inputs(2)
    program = torch.export.export(model, args)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "convgru_ext" in t], targets
    for got, want in zip(_outputs(program.module()(*args)), _outputs(model(*args))):
        assert rel_err(got, want) <= EXPORT_TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cell", "sep", "gru"])
def test_onnx_export_runs_in_onnxruntime_with_a_dynamic_batch(name, tmp_path):
    model, inputs = _models()[name]
    model.eval()
    args = inputs(2)
    batch = torch.export.Dim("batch", min=1)
    dims = tuple({0 if name != "gru" else 1: batch} for _ in args)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, args, dynamo=True, dynamic_shapes=dims).save(str(path))
    graph = onnx.load(str(path)).graph
    op_types = {node.op_type for node in graph.node}
    assert CORE_OPS <= op_types, op_types
    assert all(node.domain in ("", "ai.onnx") for node in graph.node), "only standard ONNX operators"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for B in (2, 5):
        given = inputs(B)
        got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), given)})
        want = _outputs(model(*given))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert rel_err(torch.from_numpy(g), w) <= EXPORT_TOL, f"batch {B}"


@pytest.mark.slow
def test_a_patched_torchvision_raft_exports_to_onnx(tmp_path):
    """patch_raft's replacements export like the rest of RAFT (issue 13's drop-in, deployed through ONNX)."""
    optical_flow = pytest.importorskip("torchvision.models.optical_flow", reason="torchvision is not installed")
    from convgru_ext import patch_raft

    torch.manual_seed(0)
    model = optical_flow.raft_small().eval()
    assert patch_raft(model, backend="torch") == 1
    images = (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))
    kwargs = {"num_flow_updates": 2}
    path = tmp_path / "raft.onnx"
    torch.onnx.export(model, images, kwargs=kwargs, dynamo=True).save(str(path))
    assert all(node.domain in ("", "ai.onnx") for node in onnx.load(str(path)).graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), images)})
    with torch.no_grad():
        want = model(*images, **kwargs)
    # a whole RAFT in float32, its correlation volume and lookups included: more rounding than one ConvGRU
    assert rel_err(torch.from_numpy(got[-1]), want[-1]) <= 10 * EXPORT_TOL
