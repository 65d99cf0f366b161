"""What the labels mean: the properties iqs owns, the values it wants, and whose a label is.

What iqs writes (docs/design.md, "XMP"): `Xmp.digiKam.PickLabel` 1/2/3, `Xmp.xmp.Rating`
(-1 for rejected, else 1-5 stars), optionally the color labels `Xmp.digiKam.ColorLabel` and
`Xmp.xmp.Label`, and its own namespace `Xmp.iqs.*` (MOS, probabilities, model, reasons, date,
and which label values iqs itself wrote).

A label counts as set by a person when it has a real value (not 0 / empty) that differs from
the value iqs recorded writing (`iqs:writtenPickLabel` ...). When a person set a pick label or
rating (or a color label, with color labels on), iqs keeps all their labels unless
`overwrite=True` and only refreshes its own `iqs:*` values; labels iqs wrote earlier are
replaced. So a pick label changed by hand in digiKam after an iqs run survives the next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..result import ShotResult
from ..vocabulary import CLASSES
from .packet import Packet, first_values

XMP_NS = "http://ns.adobe.com/xap/1.0/"
DIGIKAM_NS = "http://www.digikam.org/ns/1.0/"
IQS_NS = "https://github.com/iqs-photo/iqs/ns/1.0/"
DARKTABLE_NS = "http://darktable.sf.net/"

PICK = (DIGIKAM_NS, "PickLabel")
RATING = (XMP_NS, "Rating")
COLOR = (DIGIKAM_NS, "ColorLabel")
LABEL = (XMP_NS, "Label")
LABEL_KEYS = (PICK, RATING, COLOR, LABEL)
QNAME = {PICK: "digiKam:PickLabel", RATING: "xmp:Rating", COLOR: "digiKam:ColorLabel",
         LABEL: "xmp:Label"}
# iqs:written* record the label values iqs wrote: a different value later means a person changed it.
WRITTEN = {PICK: "writtenPickLabel", RATING: "writtenRating", COLOR: "writtenColorLabel",
           LABEL: "writtenLabel"}

PICK_LABELS = dict(zip(CLASSES, (1, 2, 3)))  # digiKam: 1 rejected, 2 pending, 3 accepted
# digiKam numbering: 0 none, 1 red, 2 orange, 3 yellow, 4 green, 5 blue, 6 magenta, 7 gray ...
COLOR_LABELS = {"rejected": (1, "Red"), "pending": (3, "Yellow"), "accepted": (4, "Green")}
REJECTED_RATING = -1


def norm(value: str | None) -> str | None:
    """Compare '3', '3.0' and ' 3 ' as the same label value."""
    if value is None:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else str(number)


def is_set(value: str | None) -> bool:
    """Whether a label value means a decision (0 and empty mean 'no label' in every app, so
    they are not a person's decision)."""
    return norm(value) not in (None, "", "0")


def same_value(a: str | None, b: str | None) -> bool:
    """Whether two label values are the same ('3', '3.0' and ' 3 ' are)."""
    return norm(a) == norm(b)


def number(value: str | None) -> int | float | None:
    value = norm(value)
    if value in (None, ""):
        return None
    try:
        result = float(value)
    except ValueError:
        return None
    return int(result) if result.is_integer() else result


def labels_from(packet: Packet) -> dict:
    """The labels a packet holds, as `read_labels` returns them."""
    props = packet.properties()
    first = first_values(props)

    def value(key):
        return first[key].value if key in first else None

    iqs: dict = {}
    written = {}
    probabilities = {}
    for prop in props:
        if prop.uri != IQS_NS or prop.local in iqs:
            continue
        if prop.local in WRITTEN.values():
            key = next(k for k, n in WRITTEN.items() if n == prop.local)
            written[QNAME[key]] = prop.value
        elif prop.local.startswith("prob") and len(prop.local) > 4:
            probabilities[prop.local[4:].lower()] = number(prop.value)
        elif prop.local == "reasons":
            iqs["reasons"] = prop.items if prop.items is not None else [prop.value or ""]
        elif prop.local in ("mos", "stars", "group", "groupRank"):
            iqs[prop.local] = number(prop.value)
        else:
            iqs[prop.local] = prop.value
    if probabilities:
        iqs["probabilities"] = probabilities
    if written:
        iqs["written"] = written
    by_iqs = bool(iqs) and all(
        not is_set(value(k)) or same_value(value(k), written.get(QNAME[k]))
        for k in LABEL_KEYS)
    label = value(LABEL)
    return {
        "pick": number(value(PICK)),
        "rating": number(value(RATING)),
        "color": number(value(COLOR)),
        "label": label.strip() if label is not None else None,
        "iqs": iqs,
        "by_iqs": by_iqs,  # the labels present are the ones iqs wrote (no person changed them)
        # darktable wrote this packet: it gives every photo 1 star on import, so a 1 there is
        # no judgement by itself (iqs learn).
        "darktable": any(prop.uri == DARKTABLE_NS for prop in props),
    }


def set_by_person(labels: dict) -> dict:
    """The label values in `labels` (as `labels_from` returns them) that a person set: any of
    "pick", "rating", "color", "label", each left out when unset (0, empty) or equal to the value
    iqs recorded writing."""
    written = labels["iqs"].get("written", {})
    person = {}
    for name, key in (("pick", PICK), ("rating", RATING), ("color", COLOR), ("label", LABEL)):
        value = labels.get(name)
        if value is not None and is_set(str(value)) and not same_value(str(value),
                                                                      written.get(QNAME[key])):
            person[name] = value
    return person


def wanted_labels(result: ShotResult, color_labels: bool) -> dict:
    """The label values iqs writes for `result`: key -> text."""
    labels = {PICK: str(PICK_LABELS[result.label])}
    if result.label == "rejected":
        labels[RATING] = str(REJECTED_RATING)
    elif result.stars is not None:
        labels[RATING] = str(min(5, max(1, int(result.stars))))
    if color_labels:
        code, name = COLOR_LABELS[result.label]
        labels[COLOR], labels[LABEL] = str(code), name
    return labels


def iqs_values(result: ShotResult, written: dict, now: datetime) -> list[tuple[str, object]]:
    """The `iqs:*` properties for `result`: (local name, text or list of texts)."""
    values: list[tuple[str, object]] = [("label", result.label)]
    if result.mos is not None:
        values.append(("mos", f"{result.mos:.1f}"))
    if result.stars is not None:
        values.append(("stars", str(int(result.stars))))
    for name in CLASSES:
        if name in result.probabilities:
            values.append(("prob" + name.capitalize(), f"{result.probabilities[name]:.4f}"))
    if result.model:
        values.append(("model", result.model))
    if result.model_version:
        values.append(("modelVersion", result.model_version))
    if result.reasons:
        values.append(("reasons", list(result.reasons)))
    if result.group is not None:  # a burst (iqs_cli/bursts.py): its number in the run, 1 = best
        values += [("group", str(result.group)), ("groupRank", str(result.group_rank))]
    values.append(("date", now.isoformat(timespec="seconds")))
    for key in LABEL_KEYS:
        if key in written:
            values.append((WRITTEN[key], written[key]))
    return values


@dataclass
class Decision:
    """What a write does to the labels of one packet."""

    labels: dict  # key -> value iqs writes now (empty when a person's labels are kept)
    replace: set  # label keys whose present properties go (every iqs:* property goes too)
    written: dict  # key -> value recorded as iqs's (iqs:written*)
    human_kept: bool  # a person's labels stay


def decide(packet: Packet, result: ShotResult, *, color_labels: bool,
           overwrite: bool) -> Decision:
    """Whose labels the packet keeps (module docstring) and what iqs writes."""
    first = first_values(packet.properties())
    current = {k: first[k].value for k in LABEL_KEYS if k in first}
    recorded = {}
    for key in LABEL_KEYS:
        prop = first.get((IQS_NS, WRITTEN[key]))
        if prop is not None and prop.value is not None:
            recorded[key] = prop.value
    # A person's label on a key iqs is about to write means they judged the shot: keep theirs.
    # (A color label alone does not stop pick label and rating without --color-labels.)
    wanted = {PICK, RATING} | ({COLOR, LABEL} if color_labels else set())
    human = {k: v for k, v in current.items()
             if k in wanted and is_set(v) and not same_value(v, recorded.get(k))}
    if human and not overwrite:
        # Labels iqs wrote earlier and nobody changed stay recorded as iqs's.
        written = {k: v for k, v in recorded.items() if same_value(current.get(k), v)}
        return Decision({}, set(), written, human_kept=True)
    labels = wanted_labels(result, color_labels)
    replace = {PICK, RATING}
    if color_labels:
        replace |= {COLOR, LABEL}
    else:
        # A color label from an earlier --color-labels run is stale now; a person's stays.
        replace |= {k for k in (COLOR, LABEL) if k in recorded
                    and same_value(current.get(k), recorded[k])}
    return Decision(labels, replace, labels, human_kept=False)
