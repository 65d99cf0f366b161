"""The model vocabulary (iqs_cli/vocabulary.py) is the one place that names classes, ONNX
inputs and outputs, reasons and the input spec; `iqs score` runs without torch or training."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import make_photo

from iqs_cli import vocabulary
from iqs_cli.card import card_from_dict, card_to_dict, load_card
from iqs_cli.vocabulary import CLASSES, InputSpec

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for folder in ("iqs_cli", "training") for p in sorted((ROOT / folder).rglob("*.py"))]
HOME = ROOT / "iqs_cli" / "vocabulary.py"

CLASS_TUPLE = re.compile(r"""\(\s*["']rejected["']\s*,\s*["']pending["']\s*,\s*["']accepted["']\s*,?\s*\)""")
LOGITS = re.compile(r"""["']class_logits["']""")

PROBE = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["iqs", "score", *sys.argv[2:]]
try:
    runpy.run_module("iqs_cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "iqs_training"))
open(out, "w").write(json.dumps({"code": code, "heavy": heavy}))
"""


def test_score_imports_neither_torch_nor_training(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    for i in range(2):
        make_photo(photos / f"p{i}.jpg", brightness=60 + 80 * i, seed=i)
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), str(photos), "--model", str(tiny_model),
         "-f", "jsonl", "--no-cache"],
        capture_output=True, text=True, timeout=120,
    )
    assert report.exists(), done.stderr
    seen = json.loads(report.read_text())
    assert seen["code"] in (0, None), done.stderr
    assert len([line for line in done.stdout.splitlines() if line.strip()]) == 2
    assert seen["heavy"] == []


def test_vocabulary_module_is_light():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, iqs_cli.vocabulary; "
         "print(sorted(m for m in ('torch', 'numpy', 'iqs_training') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_class_names_and_onnx_names_are_spelled_only_in_the_vocabulary():
    found = []
    for path in SOURCES:
        if path == HOME:
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in (CLASS_TUPLE, LOGITS):
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert found == []


def test_vocabulary_values():
    assert CLASSES == ("rejected", "pending", "accepted")
    assert [vocabulary.class_index(name) for name in CLASSES] == [0, 1, 2]
    assert [vocabulary.class_name(i) for i in range(3)] == list(CLASSES)
    assert vocabulary.ONNX_INPUT == "image"
    assert vocabulary.ONNX_OUTPUTS == ("class_logits", "mos", "attributes", "features")
    assert set(vocabulary.DEFAULT_ATTRIBUTES) <= set(vocabulary.TOKEN_OF_ATTRIBUTE)
    assert vocabulary.WORDING[vocabulary.LOW_QUALITY]


def test_input_spec_round_trip():
    spec = InputSpec(size=96, resize="short_side", crop="center", mean=(0.1, 0.2, 0.3))
    data = spec.to_dict()
    assert list(data) == ["size", "resize", "crop", "mean", "std", "layout", "color"]
    assert json.loads(json.dumps(data)) == data
    assert InputSpec.from_dict(data) == spec
    assert InputSpec.from_dict({"size": 64}) == InputSpec(size=64)


def test_shipped_cards_round_trip_unchanged():
    for card_path in sorted((ROOT / "weights").glob("*.json")):
        data = json.loads(card_path.read_text(encoding="utf-8"))
        assert card_to_dict(card_from_dict(data)) == data
        assert card_to_dict(load_card(card_path.with_suffix(".onnx"))) == data
