"""ONNX Runtime session for a model card: provider choice (CPU/CUDA) and batched inference."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from iqs_cli.card import CardError, ModelCard
from iqs_cli.fsutil import sha256_file
from iqs_cli.personal import head_of
from iqs_cli.verdict import softmax
from iqs_cli.vocabulary import (CLASSES, ONNX_INPUT, OUTPUT_ATTRIBUTES, OUTPUT_FEATURES,
                                REQUIRED_OUTPUTS)

DEVICES = ("cpu", "cuda", "auto")


class EngineError(Exception):
    """The model cannot run here (message says what to do)."""


@dataclass
class ModelOutputs:
    probabilities: np.ndarray  # [N, 3], order CLASSES
    mos: np.ndarray  # [N], 0-100
    attributes: np.ndarray | None  # [N, K] in [0, 1], names in the card
    features: np.ndarray | None = None  # [N, D] pooled features, when asked for


def select_providers(device: str, available: list[str]) -> list[str]:
    if device not in DEVICES:
        raise EngineError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise EngineError(
            "--device cuda: ONNX Runtime here has no CUDA support (providers: "
            f"{', '.join(available)}). Install `onnxruntime-gpu` in place of `onnxruntime`, "
            "or use --device cpu"
        )
    return ["CPUExecutionProvider"]


def session_options(ort, threads: int | None = None):
    """ONNX Runtime options that measured best for iqs on a laptop CPU (issue 13):
    - no spinning: idle inference threads sleep instead of spinning, so the decoding threads
      that share the cores get them (about 9 % faster end to end on 2 cores);
    - no memory pattern: the planned arena for a whole batch of 512 px activations tripled
      peak memory (1350 -> 450 MB without it) at the same speed."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class FeaturesMissing(CardError):
    """The model has no `features` output (made before iqs 1.3)."""


class ModelSession:
    """An ONNX Runtime session for a card. `features=True` also returns the pooled features
    (`iqs learn`); a personal model's card runs its base model's file with its own head."""

    def __init__(self, card: ModelCard, device: str = "cpu", threads: int | None = None,
                 verify_sha256: bool = True, features: bool = False):
        import onnxruntime as ort

        if card.onnx_path is None:
            raise CardError("model card has no model file")
        self.card = card
        self.sha256 = sha256_file(card.onnx_path)
        if verify_sha256 and card.sha256 and card.sha256 != self.sha256:
            if card.personal:
                raise CardError(
                    f"personal model {card.name!r}: its base model {card.onnx_path} changed since "
                    "`iqs learn` made it (sha256 does not match: iqs updated, or the file "
                    f"replaced); run `iqs learn YOUR-FOLDERS --name {card.name}` again")
            raise CardError(
                f"{card.onnx_path}: sha256 does not match its card (file damaged or replaced?); "
                "re-export the model or reinstall iqs"
            )
        options = session_options(ort, threads)
        self.providers = select_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(
                str(card.onnx_path), sess_options=options, providers=self.providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"{card.onnx_path}: ONNX Runtime cannot load the model ({exc})") from exc
        self.providers = self.session.get_providers()
        outputs = {o.name for o in self.session.get_outputs()}
        missing = set(REQUIRED_OUTPUTS) - outputs
        if missing or [i.name for i in self.session.get_inputs()] != [ONNX_INPUT]:
            raise CardError(
                f"{card.onnx_path}: not an iqs model (needs input '{ONNX_INPUT}' and outputs "
                f"{', '.join(REQUIRED_OUTPUTS)}; missing {sorted(missing) or f'input {ONNX_INPUT}'})"
            )
        self.head = head_of(card)
        # The results cache keys on this: a personal model's results are its own, not its base's.
        self.cache_key = self.sha256 if self.head is None else f"{self.sha256}+{self.head.digest}"
        self.returns_features = features or self.head is not None
        if self.returns_features and OUTPUT_FEATURES not in outputs:
            raise FeaturesMissing(
                f"{card.onnx_path}: this model has no '{OUTPUT_FEATURES}' output, which "
                + ("a personal model needs" if self.head is not None else "`iqs learn` needs")
                + " (models before iqs 1.3); use a shipped model of iqs 1.3 or newer, or "
                "re-export yours with `iqs export`")
        self.output_names = list(REQUIRED_OUTPUTS) + (
            [OUTPUT_ATTRIBUTES] if OUTPUT_ATTRIBUTES in outputs else [])
        if self.returns_features:
            self.output_names.append(OUTPUT_FEATURES)

    def infer(self, batch: np.ndarray) -> ModelOutputs:
        results = dict(zip(self.output_names,
                           self.session.run(self.output_names, {ONNX_INPUT: batch})))
        low, high = self.card.mos_range
        mos = np.clip(np.asarray(results[REQUIRED_OUTPUTS[1]], np.float32).reshape(-1), low, high)
        probabilities = softmax(np.asarray(results[REQUIRED_OUTPUTS[0]], np.float32))
        features = results.get(OUTPUT_FEATURES)
        if self.head is not None:
            probabilities = self.head.probabilities(features, probabilities)
        return ModelOutputs(probabilities, mos, results.get(OUTPUT_ATTRIBUTES), features)


# Photos per inference call. On a CPU, 2 is as fast as 8 (decoding overlaps inference either
# way) at 260 instead of 600 MB for a 512 px model; a GPU wants larger batches.
CPU_BATCH, GPU_BATCH = 2, 16


def default_batch(session: "ModelSession") -> int:
    return GPU_BATCH if session.providers[0] == "CUDAExecutionProvider" else CPU_BATCH


def outputs_row(outputs: ModelOutputs, index: int, card: ModelCard) -> dict:
    """One image's raw outputs as plain data (what the cache stores)."""
    attributes = {}
    if outputs.attributes is not None:
        attributes = {
            name: round(float(v), 4) for name, v in zip(card.attributes, outputs.attributes[index])
        }
    return {
        "probabilities": {
            name: round(float(p), 4) for name, p in zip(CLASSES, outputs.probabilities[index])
        },
        "mos": round(float(outputs.mos[index]), 2),
        "attributes": attributes,
    }
