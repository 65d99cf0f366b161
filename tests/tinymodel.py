"""A tiny ONNX model with the contract's inputs and outputs, built without torch.

Its MOS rises with mean brightness and its class logits follow the MOS, so tests can predict
what it says about an image they made: a black image is 'rejected', mid-grey 'pending', a white
one 'accepted'.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Defect severities (0 none, 1 severe): the tiny model calls dark images underexposed.
ATTRIBUTES = ["blur", "noise", "underexposure", "compression"]


def build_tiny_model(folder: Path, name: str = "tiny", size: int = 32, version: str = "0.0.1",
                     attributes: list[str] = ATTRIBUTES, features: bool = False) -> Path:
    """Write NAME.onnx and its card into `folder`; `attributes` names the severities (all the
    same function of darkness). `features`: also the `features` output, [N, 3], the mean of
    each colour channel (what `iqs learn` fits a personal head on)."""
    folder.mkdir(parents=True, exist_ok=True)
    # Mean brightness after normalization lies in [-1, 1].
    inits = [
        numpy_helper.from_array(np.array([-1, 3], np.int64), "flat_shape"),
        numpy_helper.from_array(np.full((3, 1), 1 / 3, np.float32), "w_mean"),
        numpy_helper.from_array(np.array([-4.0, 0.0, 4.0], np.float32).reshape(1, 3), "w_cls"),
        numpy_helper.from_array(np.array([-1.5, 2.0, -1.5], np.float32), "b_cls"),
        numpy_helper.from_array(np.array([3.0], np.float32), "k_mos"),
        numpy_helper.from_array(np.array([100.0], np.float32), "hundred"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.full((1, len(attributes)), -3.0, np.float32), "w_attr"),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w_mean"], ["brightness"]),  # [N, 1]
        helper.make_node("MatMul", ["brightness", "w_cls"], ["cls_raw"]),
        helper.make_node("Add", ["cls_raw", "b_cls"], ["class_logits"]),
        helper.make_node("Mul", ["brightness", "k_mos"], ["mos_logit"]),
        helper.make_node("Sigmoid", ["mos_logit"], ["mos_unit"]),
        helper.make_node("Mul", ["mos_unit", "hundred"], ["mos_col"]),
        helper.make_node("Squeeze", ["mos_col", "axis1"], ["mos"]),
        helper.make_node("MatMul", ["brightness", "w_attr"], ["attr_raw"]),
        helper.make_node("Sigmoid", ["attr_raw"], ["attributes"]),
    ] + ([helper.make_node("Identity", ["flat"], ["features"])] if features else [])
    graph = helper.make_graph(
        nodes,
        "iqs_tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("class_logits", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("mos", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("attributes", TensorProto.FLOAT, ["N", len(attributes)]),
        ] + ([helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])]
             if features else []),
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx_path = folder / f"{name}.onnx"
    onnx.save(model, onnx_path)
    import hashlib

    card = {
        "name": name,
        "version": version,
        "input": {"size": size, "resize": "squash", "crop": "none", "mean": [0.5] * 3,
                  "std": [0.5] * 3, "layout": "NCHW", "color": "RGB"},
        "classes": ["rejected", "pending", "accepted"],
        "attributes": list(attributes),
        "mos_range": [0, 100],
        "thresholds": {"stars": [30, 45, 60, 72]},
        "training": {"data": "none (test model)"},
        "metrics": {},
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "license": "test model",
    }
    if features:
        card["features"] = {"output": "features", "size": 3}
    (folder / f"{name}.json").write_text(json.dumps(card, indent=2))
    return onnx_path
