"""The model card: what a model expects as input and what its outputs mean. Cards are read
(`read_card`, `load_card`, `card_from_dict`) and written (`write_card`, `card_to_dict`) only
here; the names in them (classes, attributes, InputSpec) come from iqs_cli/vocabulary.py.

A model is `<name>.onnx` with `<name>.json` beside it (see docs/design.md, "The model
contract"). The command reads only the card to preprocess, and training uses the same
`image_to_tensor` so both sides give the same tensor for the same file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from iqs_cli.fsutil import write_atomic
from iqs_cli.vocabulary import CLASSES, InputSpec  # noqa: F401 (InputSpec: re-exported)


DEFAULT_MODEL_NAME = "iqs-base"

# Stars from MOS (0-100): a MOS >= the n-th threshold earns n+1 stars (1 star below the first).
DEFAULT_STAR_THRESHOLDS = (30.0, 45.0, 60.0, 72.0)


class CardError(Exception):
    """A model card or model file is missing or malformed (message says what to do)."""


@dataclass
class ModelCard:
    name: str
    version: str
    input: InputSpec
    classes: tuple[str, ...] = CLASSES
    attributes: tuple[str, ...] = ()
    mos_range: tuple[float, float] = (0.0, 100.0)
    thresholds: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    sha256: str = ""
    license: str = ""
    # Reason wording for people (iqs_cli/verdict.py, reason_wording): token -> wording (cards
    # from `iqs export`), and attribute -> wording (older cards). Entries without a text are
    # left out.
    reasons: dict[str, str] = field(default_factory=dict)
    attribute_reasons: dict[str, str] = field(default_factory=dict)
    # How the ONNX graph was made (`iqs export`: backbone, opset, parity, ...); {} when unknown.
    model: dict = field(default_factory=dict)
    # The pooled-features output ({"output": "features", "size": D, "normalized": true}); {} for
    # models without one (made before iqs 1.3: `score` works, `learn` needs a newer model).
    features: dict = field(default_factory=dict)
    # A personal model (`iqs learn`, iqs_cli/personal.py): its base model and its own head;
    # {} for every other model.
    personal: dict = field(default_factory=dict)
    onnx_path: Path | None = None
    raw: dict = field(default_factory=dict)  # the card as read: keys iqs does not use survive

    @property
    def star_thresholds(self) -> tuple[float, ...]:
        return tuple(self.thresholds.get("stars", DEFAULT_STAR_THRESHOLDS))


def image_to_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """RGB PIL image -> float32 [3, H, W], resized and normalized as the card says."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if spec.resize == "squash":
        image = image.resize((spec.size, spec.size), Image.BILINEAR)
    elif spec.resize == "short_side":
        out_h, out_w = InputSpec(size=spec.size, resize="short_side").output_hw(w, h)
        image = image.resize((out_w, out_h), Image.BILINEAR)
        if spec.crop == "center":
            left = (out_w - spec.size) // 2
            top = (out_h - spec.size) // 2
            image = image.crop((left, top, left + spec.size, top + spec.size))
    else:
        raise CardError(f"unknown resize mode {spec.resize!r} in model card")
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _wordings(value: object) -> dict[str, str]:
    """name -> wording from a card's `reasons` / `attribute_reasons`; anything but a non-empty
    text is left out (a card from elsewhere cannot break the table)."""
    if not isinstance(value, dict):
        return {}
    return {str(name): text for name, text in value.items()
            if isinstance(text, str) and text.strip()}


def card_from_dict(data: dict, onnx_path: Path | None = None) -> ModelCard:
    try:
        input_spec = InputSpec.from_dict(data["input"])
        card = ModelCard(
            name=str(data["name"]),
            version=str(data.get("version", "0")),
            input=input_spec,
            classes=tuple(data.get("classes", CLASSES)),
            attributes=tuple(data.get("attributes", ())),
            mos_range=tuple(data.get("mos_range", (0.0, 100.0))),
            thresholds=dict(data.get("thresholds", {})),
            training=dict(data.get("training", {})),
            metrics=dict(data.get("metrics", {})),
            sha256=str(data.get("sha256", "")),
            license=str(data.get("license", "")),
            reasons=_wordings(data.get("reasons")),
            attribute_reasons=_wordings(data.get("attribute_reasons")),
            model=dict(data["model"]) if isinstance(data.get("model"), dict) else {},
            features=dict(data["features"]) if isinstance(data.get("features"), dict) else {},
            personal=dict(data["personal"]) if isinstance(data.get("personal"), dict) else {},
            onnx_path=onnx_path,
            raw=data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CardError(f"model card is malformed ({exc!r}); re-export it with `iqs export`") from exc
    if input_spec.layout != "NCHW" or input_spec.color != "RGB":
        raise CardError("model card asks for a layout other than NCHW/RGB, which iqs does not support")
    if card.classes != CLASSES:
        raise CardError(f"model card classes must be {list(CLASSES)}, got {list(card.classes)}")
    return card


def card_to_dict(card: ModelCard) -> dict:
    """The card as JSON data: what `card_from_dict` reads back. Keys iqs does not use (in
    `card.raw`) keep their place; `reasons`, `attribute_reasons` and `model` are written only
    when they have entries (and so are `features` and `personal`)."""
    data = dict(card.raw)
    data.update(
        name=card.name,
        version=card.version,
        input=card.input.to_dict(),
        classes=list(card.classes),
        attributes=list(card.attributes),
        mos_range=list(card.mos_range),
        thresholds=card.thresholds,
        training=card.training,
        metrics=card.metrics,
        sha256=card.sha256,
        license=card.license,
    )
    for key, entries in (("reasons", card.reasons), ("attribute_reasons", card.attribute_reasons),
                         ("model", card.model), ("features", card.features),
                         ("personal", card.personal)):
        if entries:
            data[key] = dict(entries)
    return data


def plain_json(value):
    """`value` with numpy scalars/arrays and paths made plain, NaN/inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def card_text(card: ModelCard) -> str:
    """The card file's text (strict JSON, indented, newline at the end), once the run time's
    own check has read it back (CardError otherwise)."""
    text = json.dumps(plain_json(card_to_dict(card)), indent=2, allow_nan=False) + "\n"
    card_from_dict(json.loads(text), card.onnx_path)
    return text


def write_card(card: ModelCard, path: Path) -> None:
    """Write `card` to `path` whole or not at all (see card_text)."""
    write_atomic(Path(path), card_text(card))


def read_card(path: Path, onnx_path: Path | None = None) -> ModelCard:
    """The card at `path` (a .json file); CardError when it cannot be read or is malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardError(f"{path}: cannot read model card ({exc})") from exc
    return card_from_dict(data, onnx_path)


def shipped_models_dir() -> Path:
    """Folder of the models installed with iqs (package data of `iqs_weights`)."""
    from importlib.resources import files

    return Path(str(files("iqs_weights")))


def personal_models_dir() -> Path:
    """Folder of the personal models `iqs learn` makes (the user's config folder, e.g.
    ~/.config/iqs/models; $IQS_CONFIG_DIR/models when set)."""
    from platformdirs import user_config_dir

    return Path(os.environ.get("IQS_CONFIG_DIR") or user_config_dir("iqs", appauthor=False)) / "models"


def personal_card_path(name: str) -> Path:
    return personal_models_dir() / f"{name}.json"


def resolve_model(model: str | None) -> Path:
    """`--model` value (None, a shipped model name, or a path to .onnx/.json) -> .onnx path.
    A personal model (made by `iqs learn`) has no .onnx of its own: see `load_card`."""
    if model is None:
        model = DEFAULT_MODEL_NAME
    candidate = Path(model).expanduser()
    if candidate.suffix.lower() in (".onnx", ".json") or candidate.exists():
        if candidate.is_dir():
            raise CardError(f"{candidate}: is a folder; pass the model's .onnx file")
        onnx_path = candidate.with_suffix(".onnx")
    else:
        onnx_path = shipped_models_dir() / f"{model}.onnx"
        if not onnx_path.exists():
            shipped = sorted(p.stem for p in shipped_models_dir().glob("*.onnx"))
            hint = f"shipped models: {', '.join(shipped)}" if shipped else "no model is installed"
            personal = sorted(p.stem for p in personal_models_dir().glob("*.json"))
            if personal:
                hint += f"; yours (iqs learn): {', '.join(personal)}"
            raise CardError(
                f"model {model!r} not found ({hint}). Reinstall iqs (`pip install .` from a "
                "checkout carries weights/), make it with `iqs learn DIR --name "
                f"{model}`, or pass --model PATH/TO/model.onnx"
            )
    if not onnx_path.exists():
        raise CardError(f"{onnx_path}: model file not found; pass --model PATH/TO/model.onnx")
    if not onnx_path.with_suffix(".json").exists():
        raise CardError(
            f"{onnx_path.with_suffix('.json')}: model card not found; every model needs its "
            "card beside it (same name, .json), as `iqs export` writes it"
        )
    return onnx_path


def _personal_card(path: Path) -> ModelCard:
    """A personal model's card, its `onnx_path` pointing at its base model's file (which the
    session checks against the sha256 the card recorded)."""
    card = read_card(path)
    if not card.personal:
        raise CardError(f"{path}: not a personal model (no 'personal' section); pass a model's "
                        ".onnx file instead")
    base = card.personal.get("base", {})
    card.onnx_path = resolve_model(str(base.get("path") or base.get("name") or ""))
    return card


def load_card(model: str | Path | None) -> ModelCard:
    """The card of `--model`: a shipped model's name, a personal model's name (`iqs learn`),
    or a path to a .onnx file, its .json card or a personal model's .json."""
    name = None if model is None else str(model)
    candidate = Path(name).expanduser() if name else None
    if candidate is not None and candidate.suffix.lower() == ".json" and candidate.is_file():
        data_onnx = candidate.with_suffix(".onnx")
        if not data_onnx.exists():
            return _personal_card(candidate)
    # A personal model's name wins over a folder of that name in the working folder (`bench`),
    # never over a shipped model or a file.
    if (name and candidate is not None and not candidate.suffix and not candidate.is_file()
            and not (shipped_models_dir() / f"{name}.onnx").exists()
            and personal_card_path(name).is_file()):
        return _personal_card(personal_card_path(name))
    onnx_path = resolve_model(name)
    return read_card(onnx_path.with_suffix(".json"), onnx_path)
