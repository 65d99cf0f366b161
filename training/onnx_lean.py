"""A lean inference graph: TensorFlow "same" padding folded into the convolutions.

The EfficientNet-Lite backbone pads like TensorFlow ("same"): the amount depends on the input
size, so the exported graph computes it at run time (Shape -> Gather -> ... -> Pad) before the
stem and each stride-2 convolution. ONNX Runtime keeps those Pads even when the size never
changes, and wraps each in layout reorders: a third of the kernel time and copies of the
largest activations. For the one input size a model card fixes (squash resize: always
SIZE x SIZE), the amounts are constants: `fold_static_padding` computes them once, writes them
into each Conv's own `pads`, fixes the input's height and width, and drops the nodes that only
computed them. Outputs stay bit-identical (export checks them against torch).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _pad_amounts(model: onnx.ModelProto, pads_inputs: list[str], height: int,
                 width: int) -> dict[str, np.ndarray]:
    """Evaluate the tensors that hold the pad amounts, for one input of the fixed size."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in pads_inputs:
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    values = session.run(pads_inputs, {name: np.zeros((1, 3, height, width), np.float32)})
    return dict(zip(pads_inputs, values))


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers no graph output depends on."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def fold_static_padding(model: onnx.ModelProto, height: int, width: int) -> tuple[onnx.ModelProto, int]:
    """The model with its input fixed to `height` x `width` (batch still free) and every
    zero-constant Pad that feeds only a Conv folded into that Conv; returns (model, folded)."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, value in ((dims[2], height), (dims[3], width)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    consumers = _consumers(graph)
    candidates = []
    for node in graph.node:
        if node.op_type != "Pad" or len(node.input) < 2:
            continue
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
        users = consumers.get(node.output[0], [])
        if mode != "constant" or len(users) != 1 or users[0].op_type != "Conv":
            continue
        if len(node.input) > 2 and node.input[2]:  # a pad value: must be zero
            continue
        candidates.append((node, users[0]))
    if not candidates:
        return model_copy, 0
    amounts = _pad_amounts(model_copy, [pad.input[1] for pad, _ in candidates], height, width)
    folded = 0
    for pad, conv in candidates:
        values = np.asarray(amounts[pad.input[1]]).astype(np.int64).reshape(-1)
        rank = values.size // 2
        begin, end = values[:rank], values[rank:]
        if rank != 4 or begin[:2].any() or end[:2].any() or (values < 0).any():
            continue  # padding of batch or channels, or cropping: leave it
        auto_pad = next((a.s.decode() for a in conv.attribute if a.name == "auto_pad"), "NOTSET")
        if auto_pad not in ("NOTSET", ""):
            continue
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        new = [old[0] + int(begin[2]), old[1] + int(begin[3]),
               old[2] + int(end[2]), old[3] + int(end[3])]
        for attribute in list(conv.attribute):
            if attribute.name == "pads":
                conv.attribute.remove(attribute)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    _prune(graph)
    onnx.checker.check_model(model_copy)
    return model_copy, folded
