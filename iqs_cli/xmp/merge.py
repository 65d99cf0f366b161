"""The text merge: iqs's labels into a parsed packet, every other byte left as it was.

Sidecars are merged as text, not re-serialized: iqs cuts out the properties it owns (found by
packet.py's position-aware tree) and inserts one `rdf:Description` of its own before
`</rdf:RDF>`. Every other byte (foreign properties, prefixes, comments, the xpacket wrapper,
padding) stays exactly as it was. Which properties are iqs's to replace is labels.py's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

from ..result import ShotResult
from .labels import (DIGIKAM_NS, IQS_NS, LABEL_KEYS, PICK, QNAME, XMP_NS, decide, iqs_values,
                     labels_from, number)
from .packet import RDF_NS, UNTOUCHED, Packet, XmpError, properties

IQS_PREFIX = "iqs"
PREFIX_URIS = {"rdf": RDF_NS, "xmp": XMP_NS, "digiKam": DIGIKAM_NS, IQS_PREFIX: IQS_NS}


def _text(value: str) -> str:
    # ASCII with character references: valid in any encoding the file declares.
    return escape(value).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _attr_text(value: str) -> str:
    return escape(value, {'"': "&quot;"}).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _description(about: str, scope: dict[str, str], labels: dict, values: list,
                 indent: str, nl: str) -> str:
    used = {"rdf", IQS_PREFIX} | {QNAME[k].split(":")[0] for k in labels}
    declarations = [f'xmlns:{p}="{PREFIX_URIS[p]}"' for p in PREFIX_URIS
                    if p in used and scope.get(p) != PREFIX_URIS[p]]
    head = [f'{indent}<rdf:Description rdf:about="{_attr_text(about)}"']
    head += [f"{indent}    {d}" for d in declarations]
    lines = [nl.join(head) + ">"]
    for key in LABEL_KEYS:
        if key in labels:
            q = QNAME[key]
            lines.append(f"{indent} <{q}>{_text(labels[key])}</{q}>")
    for local, value in values:
        q = f"{IQS_PREFIX}:{local}"
        if isinstance(value, list):
            items = "".join(f"{nl}{indent}   <rdf:li>{_text(v)}</rdf:li>" for v in value)
            lines.append(f"{indent} <{q}>{nl}{indent}  <rdf:Seq>{items}{nl}{indent}  </rdf:Seq>"
                         f"{nl}{indent} </{q}>")
        else:
            lines.append(f"{indent} <{q}>{_text(str(value))}</{q}>")
    lines.append(f"{indent}</rdf:Description>")
    return nl.join(lines)


def _line_start(data: bytes, at: int) -> int:
    """`at` moved back over the indentation and line break before it, if only blanks precede."""
    k = at
    while k > 0 and data[k - 1] in b" \t":
        k -= 1
    if k > 0 and data[k - 1] == 0x0A:
        k -= 1
        if k > 0 and data[k - 1] == 0x0D:
            k -= 1
        return k
    return at


@dataclass
class Merged:
    data: bytes  # the new packet (UTF-8, also when the file was UTF-16)
    human_kept: bool
    labels: dict  # label values iqs wrote this time


def merge(packet: Packet, result: ShotResult, *, color_labels: bool, overwrite: bool,
          now: datetime) -> Merged:
    """The packet with iqs's labels for `result` merged in (labels.decide says whose stay)."""
    decision = decide(packet, result, color_labels=color_labels, overwrite=overwrite)
    data = rewrite(packet, lambda p: p.uri == IQS_NS or p.key in decision.replace,
                   decision.labels, iqs_values(result, decision.written, now))
    return Merged(data, decision.human_kept, decision.labels)


def rewrite(packet: Packet, drop, labels: dict, values: list) -> bytes:
    """`packet` with the properties `drop(prop)` selects cut out and one `rdf:Description`
    holding `labels` (key -> value) and `values` (iqs:* local name -> value) put before
    `</rdf:RDF>`; every other byte stays. A description left with nothing goes whole."""
    data = packet.data
    edits: list[tuple[int, int, bytes]] = []
    for desc in packet.descriptions:
        desc_props = properties(desc)
        removed = [p for p in desc_props if drop(p)]
        if not removed:
            continue
        if len(removed) == len(desc_props):  # nothing foreign left in it: drop it whole
            edits.append((_line_start(data, desc.start), desc.end, b""))
            continue
        for prop in removed:
            if prop.attr is not None:
                edits.append((prop.attr.start, prop.attr.end, b""))
            else:
                edits.append((_line_start(data, prop.elem.start), prop.elem.end, b""))

    rdf = packet.rdf
    about = next((a.value for d in packet.descriptions for a in d.attrs
                  if (a.uri, a.local) == (RDF_NS, "about")), "")
    nl = "\r\n" if b"\r\n" in data else "\n"
    if rdf.slash >= 0:  # <rdf:RDF/>: open it up
        ours = _description(about, rdf.scope, labels, values, " ", nl)
        edits.append((rdf.slash, rdf.tag_end,
                       f">{nl}{ours}{nl}</{rdf.qname}>".encode("ascii")))
    else:
        at = rdf.close_start
        line = _line_start(data, at)
        if line != at:  # </rdf:RDF> on a line of its own: put ours on lines before it
            eol = data[line:at].index(b"\n") + 1
            indent = data[line + eol:at].decode("ascii") + " "
            ours = _description(about, rdf.scope, labels, values, indent, nl)
            edits.append((line + eol, line + eol, (ours + nl).encode("ascii")))
        else:
            ours = _description(about, rdf.scope, labels, values, "", nl)
            edits.append((at, at, ours.encode("ascii")))

    out = bytearray(data)
    last = len(data) + 1
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        if end > last:  # overlapping edits would corrupt the packet: stop before writing
            raise XmpError(f"{packet.what}: overlapping edits (internal error); {UNTOUCHED} — "
                           "please report this file")
        out[start:end] = new
        last = start
    return bytes(out)


def check(new: bytes, merged: Merged, result: ShotResult, what: str) -> None:
    """Parse what is about to be written and make sure it says what iqs meant."""
    labels = labels_from(Packet(new, what))
    expected_pick = number(merged.labels.get(PICK))
    if labels["iqs"].get("label") != result.label or (
            expected_pick is not None and labels["pick"] != expected_pick):
        raise XmpError(f"{what}: the merged XMP did not read back as written (internal error); "
                       f"{UNTOUCHED} — please report this file")
