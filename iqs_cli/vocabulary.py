"""The model vocabulary: the one place that names what a model reads and says.

- CLASSES: the three pick labels, in the order of the class head (`class_logits` columns,
  dataset label indices, probability columns);
- ONNX_INPUT and ONNX_OUTPUTS: the names in the ONNX graph (docs/design.md, "The model
  contract"); the torch model's output dict uses the same keys;
- REASONS: attribute name -> reason token -> human wording (iqs_cli/verdict.py decides which
  reasons a shot gets; this table only names them), and DEFAULT_ATTRIBUTES, the attribute heads
  a model is trained with by default;
- InputSpec: what a model expects as input, with `to_dict` / `from_dict` (the card's `input`).

Imports neither torch nor numpy: `iqs score` and training both read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- classes ------------------------------------------------------------------------------

CLASSES: tuple[str, ...] = ("rejected", "pending", "accepted")
REJECTED, PENDING, ACCEPTED = CLASSES
CLASS_INDEX: dict[str, int] = {name: index for index, name in enumerate(CLASSES)}


def class_index(name: str) -> int:
    """0 rejected, 1 pending, 2 accepted (ValueError for anything else)."""
    try:
        return CLASS_INDEX[name]
    except (KeyError, TypeError):
        raise ValueError(f"{name!r} is not one of {', '.join(CLASSES)}") from None


def class_name(index: int) -> str:
    """The class at `index` of the class head."""
    return CLASSES[index]


# --- ONNX graph names ---------------------------------------------------------------------

ONNX_INPUT = "image"  # float32 [N, 3, H, W]
OUTPUT_CLASS_LOGITS = "class_logits"  # [N, 3], order CLASSES
OUTPUT_MOS = "mos"  # [N], 0-100
OUTPUT_ATTRIBUTES = "attributes"  # [N, K], defect severities in [0, 1], order card.attributes
# [N, D]: the pooled backbone features the linear heads read (after their normalization), the
# inputs a personal model is fitted on (`iqs learn`); size in the card's `features`.
OUTPUT_FEATURES = "features"
ONNX_OUTPUTS = (OUTPUT_CLASS_LOGITS, OUTPUT_MOS, OUTPUT_ATTRIBUTES, OUTPUT_FEATURES)
REQUIRED_OUTPUTS = (OUTPUT_CLASS_LOGITS, OUTPUT_MOS)  # attributes and features are optional

# --- attributes and reasons ---------------------------------------------------------------

LOW_QUALITY = "low_quality"  # the reason that stands for no single attribute
# A personal model's rejection that no attribute explains (iqs_cli/personal.py, `iqs learn`).
LIKE_YOUR_REJECTS = "like_your_rejects"
# A frame of a burst whose sharper frame was kept (iqs_cli/bursts.py).
DUPLICATE = "duplicate"

# The one table of reasons: attribute name -> token -> human wording. LOW_QUALITY stands for no
# single attribute. An attribute missing here gets its own name as token (verdict.reason_token).
REASONS: tuple[tuple[str | None, str, str], ...] = (
    ("blur", "blur", "blurry"),
    ("motion_blur", "motion_blur", "motion blur"),
    ("noise", "noise", "noisy"),
    ("underexposure", "underexposed", "underexposed"),
    ("overexposure", "overexposed", "overexposed"),
    ("compression", "compression", "heavy JPEG artifacts"),
    ("color", "color", "poor color (cast or washed out)"),
    ("contrast", "contrast", "low contrast"),
    (None, LOW_QUALITY, "low overall quality"),
    (None, LIKE_YOUR_REJECTS, "like the photos you rejected"),
    (None, DUPLICATE, "a sharper frame of this burst exists"),
)
TOKEN_OF_ATTRIBUTE = {attribute: token for attribute, token, _ in REASONS if attribute}
WORDING = {token: wording for _, token, wording in REASONS}

# The attribute heads a model gets by default, in head order (also every attribute the
# synthetic distortions label: training/datasets/synthetic.py).
DEFAULT_ATTRIBUTES: tuple[str, ...] = (
    "blur", "noise", "underexposure", "overexposure", "compression", "color",
)

# --- model input --------------------------------------------------------------------------

DRAFT_TOLERANCE = 0.9  # see InputSpec.decode_min_side


@dataclass(frozen=True)
class InputSpec:
    size: int = 384  # square side, or the short side when resize == "short_side"
    resize: str = "squash"  # "squash": whole photo to size x size; "short_side": keep aspect
    crop: str = "none"  # "none" or "center" (center square crop after a short-side resize)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    layout: str = "NCHW"
    color: str = "RGB"

    @property
    def decode_min_side(self) -> int:
        """Short side to ask the decoder for. JPEG draft mode scales by 1/2, 1/4 or 1/8; a
        24 MP photo at 1/8 is 750x500, just under a 512 input, and 1/4 costs ~60 % more to
        decode. Accepting up to 10 % below the input size (a slight upscale in the resize)
        keeps the cheaper scale; training decodes the same way, so both see one tensor."""
        return max(1, math.ceil(self.size * DRAFT_TOLERANCE))

    def output_hw(self, width: int, height: int) -> tuple[int, int]:
        """Height and width of the tensor made from a width x height image."""
        if self.resize == "squash" or self.crop == "center":
            return self.size, self.size
        scale = self.size / min(width, height)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def to_dict(self) -> dict:
        """The card's `input` (and a checkpoint's): plain JSON values, in card order."""
        return dict(size=self.size, resize=self.resize, crop=self.crop, mean=list(self.mean),
                    std=list(self.std), layout=self.layout, color=self.color)

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        """Inverse of `to_dict`; `size` is required, everything else has the defaults above
        (a training config's `input` gives only size, resize and crop). KeyError, TypeError or
        ValueError when malformed."""
        default = cls()
        return cls(
            size=int(data["size"]),
            resize=data.get("resize", default.resize),
            crop=data.get("crop", default.crop),
            mean=tuple(float(v) for v in data.get("mean", default.mean)),
            std=tuple(float(v) for v in data.get("std", default.std)),
            layout=data.get("layout", default.layout),
            color=data.get("color", default.color),
        )
