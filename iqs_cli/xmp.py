"""XMP labels for digiKam, darktable and Lightroom: read-merge-write of sidecars and in-file XMP.

What iqs writes (docs/design.md, "XMP"): `Xmp.digiKam.PickLabel` 1/2/3, `Xmp.xmp.Rating`
(-1 for rejected, else 1-5 stars), optionally the color labels `Xmp.digiKam.ColorLabel` and
`Xmp.xmp.Label`, and its own namespace `Xmp.iqs.*` (MOS, probabilities, model, reasons, date,
and which label values iqs itself wrote).

Sidecars are merged as text, not re-serialized: the file is parsed with expat only to learn
where each element and attribute sits, then iqs cuts out the properties it owns and inserts
one `rdf:Description` of its own before `</rdf:RDF>`. Every other byte (foreign properties,
prefixes, comments, the xpacket wrapper, padding) stays exactly as it was. A sidecar with a
DOCTYPE/entity declaration is refused outright (no entity is ever expanded).

The one exception: a UTF-16 sidecar (older Lightroom writes them) is converted to UTF-8 while
it is merged, because exiv2 (digiKam, darktable) cannot read UTF-16 sidecars at all. Every
property and comment is kept; only the encoding changes, and with it an `<?xml ...
encoding="UTF-16"?>` declaration (now says UTF-8) and the xpacket `begin` mark (now U+FEFF in
UTF-8). UTF-32 is refused.

Only a regular file is read as a sidecar, and at most MAX_SIDECAR_BYTES of it: a FIFO, a
device (e.g. a link to /dev/zero) or a folder in its place is an XmpError, not a hang. Temp
files are named by `fsutil.temp_path` (always within the filesystem's 255-byte name limit); a photo
whose sidecar name would pass that limit gets a clear XmpError.

A label counts as set by a person when it has a real value (not 0 / empty) that differs from
the value iqs recorded writing (`iqs:writtenPickLabel` ...). When a person set a pick label or
rating (or a color label, with color labels on), iqs keeps all their labels unless
`overwrite=True` and only refreshes its own `iqs:*` values; labels iqs wrote earlier are
replaced. So a pick label changed by hand in digiKam after an iqs run survives the next run.

In-file XMP (JPEG/TIFF/PNG/WebP, never RAW) is merged the same way and handed to exiv2
(pyexiv2), which re-serializes the packet inside the photo; the result is checked (XMP read
back, image data byte-identical or pixel-identical) before it atomically replaces the photo.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol
from xml.parsers import expat
from xml.sax.saxutils import escape

from . import __version__
from .fsutil import NAME_MAX, remedy, write_atomic
from .result import ShotResult

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XMP_NS = "http://ns.adobe.com/xap/1.0/"
DIGIKAM_NS = "http://www.digikam.org/ns/1.0/"
IQS_NS = "https://github.com/iqs-photo/iqs/ns/1.0/"
IQS_PREFIX = "iqs"
PREFIX_URIS = {"rdf": RDF_NS, "xmp": XMP_NS, "digiKam": DIGIKAM_NS, IQS_PREFIX: IQS_NS}

PICK = (DIGIKAM_NS, "PickLabel")
RATING = (XMP_NS, "Rating")
COLOR = (DIGIKAM_NS, "ColorLabel")
LABEL = (XMP_NS, "Label")
LABEL_KEYS = (PICK, RATING, COLOR, LABEL)
_QNAME = {PICK: "digiKam:PickLabel", RATING: "xmp:Rating", COLOR: "digiKam:ColorLabel",
          LABEL: "xmp:Label"}
# iqs:written* record the label values iqs wrote: a different value later means a person changed it.
_WRITTEN = {PICK: "writtenPickLabel", RATING: "writtenRating", COLOR: "writtenColorLabel",
            LABEL: "writtenLabel"}

PICK_LABELS = {"rejected": 1, "pending": 2, "accepted": 3}
# digiKam numbering: 0 none, 1 red, 2 orange, 3 yellow, 4 green, 5 blue, 6 magenta, 7 gray ...
COLOR_LABELS = {"rejected": (1, "Red"), "pending": (3, "Yellow"), "accepted": (4, "Green")}
REJECTED_RATING = -1

IN_FILE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".png", ".webp"})
SIDECAR_STYLES = ("digikam", "lightroom")
MAX_SIDECAR_BYTES = 16 * 1024 * 1024  # real sidecars are kilobytes; refuse to load a monster

_UNTOUCHED = "iqs leaves it untouched"


class XmpError(Exception):
    """Labels could not be read or written for one file; the message says which and what to do.

    Nothing was changed on disk when this is raised.
    """


class WriteRecorder(Protocol):
    """Told about every file iqs is about to create or change (the undo journal implements it)."""

    def before_write(self, path: Path, existed: bool) -> None:
        """Called before `path` changes; may back it up. Raising stops the write."""

    def after_write(self, path: Path, sha256: str) -> None:
        """Called once `path` holds the new bytes (their sha256)."""


@dataclass
class WriteOutcome:
    photo: Path  # the photo the labels describe
    target: Path  # the file written: a sidecar, or the photo itself for in-file XMP
    in_file: bool = False
    created: bool = False  # a new sidecar (False: an existing file was updated)
    human_kept: bool = False  # labels a person set were kept (iqs values were still added)
    error: str | None = None  # set by write_shot when this file failed (nothing was written)

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------------------------
# Paths


def sidecar_path(photo: Path | str, style: str = "digikam") -> Path:
    """`photo.ext.xmp` (digiKam, darktable) or, with style "lightroom", `photo.xmp`."""
    photo = Path(photo)
    if style == "digikam":
        return photo.with_name(photo.name + ".xmp")
    if style == "lightroom":
        return photo.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar style {style!r}: use one of {', '.join(SIDECAR_STYLES)}")


def writes_in_file(photo: Path | str, in_file: bool) -> bool:
    """Whether labels for `photo` go into the file itself (never for RAW or unknown formats)."""
    return in_file and Path(photo).suffix.lower() in IN_FILE_SUFFIXES


def sidecar_in_use(photo: Path | str, style: str = "digikam") -> Path:
    """The sidecar labels for `photo` go to: the style's name, except that with the Lightroom
    style an existing `photo.ext.xmp` (and no `photo.xmp`) is merged into. A second sidecar
    would split the labels: digiKam reads `photo.xmp` first and darktable only `photo.ext.xmp`
    (docs/design.md, XMP)."""
    chosen = sidecar_path(photo, style)
    if style == "lightroom" and not os.path.lexists(chosen):
        existing = sidecar_path(photo, "digikam")
        if os.path.lexists(existing):
            return existing
    return chosen


def target_path(photo: Path | str, *, style: str = "digikam", in_file: bool = False) -> Path:
    """The file `write_labels` would write for `photo` (for dry runs and journals)."""
    return Path(photo) if writes_in_file(photo, in_file) else sidecar_in_use(photo, style)


# ---------------------------------------------------------------------------------------------
# Parsing: a position-aware element tree from expat


class _Refused(Exception):
    pass


@dataclass(eq=False)
class _Attr:
    qname: str
    uri: str | None
    local: str
    value: str
    start: int  # span of ` name="value"` including the whitespace before it
    end: int


@dataclass(eq=False)
class _Elem:
    qname: str
    uri: str | None
    local: str
    attrs: list[_Attr]
    scope: dict[str, str]  # prefix -> namespace in force on this element
    start: int  # offset of '<'
    tag_end: int  # offset just past the start tag's '>'
    slash: int  # offset of '/' in an empty-element tag, else -1
    close_start: int = -1  # offset of '</' (or tag_end for an empty element)
    end: int = -1  # offset just past the element
    children: list["_Elem"] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str | None, str]:
        return self.uri, self.local

    def plain_text(self) -> str | None:
        return None if self.children else "".join(self.text).strip()


_START_TAG = re.compile(rb"<[^\s/>]+((?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(/?)>")
_ATTR = re.compile(rb"\s+([^\s=/>]+)\s*=\s*(?:\"[^\"]*\"|'[^']*')")


def _resolve(qname: str, scope: dict[str, str], attribute: bool) -> tuple[str | None, str]:
    prefix, sep, local = qname.partition(":")
    if not sep:
        # Unprefixed attributes have no namespace; unprefixed elements take the default one.
        return (None if attribute else scope.get("")), qname
    return scope.get(prefix), local


# encoding="..." of an XML declaration, and begin="..." of the xpacket header (its value is
# U+FEFF in the packet's own encoding, so it changes with the encoding).
_XML_ENCODING = re.compile(r"""\A(<\?xml\s[^>]*?\bencoding\s*=\s*)(["'])[^"']*\2""")
_XPACKET_BEGIN = re.compile(r"""(<\?xpacket\s+begin\s*=\s*)(["'])[^"']*\2""")


def _transcode(data: bytes, what: str) -> tuple[bytes, str | None]:
    """Bytes expat can parse with usable offsets, and the encoding override (None: as declared).

    UTF-16 (with or without a BOM) comes back as UTF-8, which is also what iqs writes: exiv2,
    and so digiKam and darktable, cannot read UTF-16 sidecars. The XML declaration and the
    xpacket `begin` mark are changed to match, so the file says what it is."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise XmpError(f"{what} is UTF-32 encoded, which iqs does not edit; {_UNTOUCHED} — "
                       "convert it to UTF-8, then re-run")
    encoding, bom = None, b""
    if data.startswith(codecs.BOM_UTF16_LE):
        encoding, bom = "utf-16-le", codecs.BOM_UTF16_LE
    elif data.startswith(codecs.BOM_UTF16_BE):
        encoding, bom = "utf-16-be", codecs.BOM_UTF16_BE
    elif data.startswith(b"<\x00"):
        encoding = "utf-16-le"
    elif data.startswith(b"\x00<"):
        encoding = "utf-16-be"
    if encoding is None:
        return data, None
    try:
        text = data[len(bom):].decode(encoding)
    except UnicodeDecodeError as exc:
        raise XmpError(f"{what} looks like UTF-16 but does not decode ({exc.reason} at byte "
                       f"{exc.start}); {_UNTOUCHED} — fix or remove it, then re-run") from None
    text = _XML_ENCODING.sub(lambda m: f"{m[1]}{m[2]}UTF-8{m[2]}", text, count=1)
    text = _XPACKET_BEGIN.sub(lambda m: f"{m[1]}{m[2]}\ufeff{m[2]}", text, count=1)
    return text.encode("utf-8"), "UTF-8"


class _Packet:
    """One parsed XMP packet: the bytes, the element tree and the top-level rdf:Descriptions."""

    def __init__(self, data: bytes, what: str):
        self.what = what
        self.data, override = _transcode(data, what)
        self.root = self._parse(override)
        self.rdf = self._find_rdf(self.root)
        if self.rdf is None:
            raise XmpError(f"{what} is not an XMP packet (no rdf:RDF element in the RDF "
                           f"namespace); {_UNTOUCHED} — fix or remove it, then re-run")
        self.descriptions = [c for c in self.rdf.children if c.key == (RDF_NS, "Description")]

    def _parse(self, override: str | None) -> _Elem:
        data = self.data
        parser = expat.ParserCreate(encoding=override)
        parser.ordered_attributes = True
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        stack: list[_Elem] = []
        roots: list[_Elem] = []

        def refuse(*_args):
            raise _Refused()

        def start(name: str, attr_list: list[str]) -> None:
            at = parser.CurrentByteIndex
            match = _START_TAG.match(data, at)
            if match is None:  # expat accepted a tag this scanner cannot place: do not guess
                raise XmpError(f"{self.what}: cannot locate the <{name}> tag at byte {at}; "
                               f"{_UNTOUCHED} — please report this file")
            parent = stack[-1] if stack else None
            scope = dict(parent.scope) if parent else {"xml": XML_NS}
            values = dict(zip(attr_list[::2], attr_list[1::2]))
            for qname, value in values.items():
                if qname == "xmlns":
                    scope[""] = value
                elif qname.startswith("xmlns:"):
                    scope[qname[6:]] = value
            attrs = []
            for m in _ATTR.finditer(data, match.start(1), match.end(1)):
                qname = m.group(1).decode("utf-8", "replace")
                if qname not in values:
                    raise XmpError(f"{self.what}: cannot locate attribute {qname!r} of <{name}>; "
                                   f"{_UNTOUCHED} — please report this file")
                uri, local = _resolve(qname, scope, attribute=True)
                attrs.append(_Attr(qname, uri, local, values[qname], m.start(), m.end()))
            uri, local = _resolve(name, scope, attribute=False)
            slash = match.start(2) if match.group(2) else -1
            elem = _Elem(name, uri, local, attrs, scope, at, match.end(), slash)
            (parent.children if parent else roots).append(elem)
            stack.append(elem)

        def end(_name: str) -> None:
            elem = stack.pop()
            if elem.slash >= 0:
                elem.close_start = elem.end = elem.tag_end
            else:
                elem.close_start = parser.CurrentByteIndex
                elem.end = data.index(b">", elem.close_start) + 1

        def text(chars: str) -> None:
            if stack:
                stack[-1].text.append(chars)

        parser.StartDoctypeDeclHandler = refuse
        parser.EntityDeclHandler = refuse
        parser.ExternalEntityRefHandler = refuse
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text
        try:
            parser.Parse(data, True)
        except _Refused:
            raise XmpError(f"{self.what} contains a DTD/entity declarations; refusing to parse "
                           f"it (possible XML entity attack); {_UNTOUCHED} — remove the "
                           "<!DOCTYPE ...> part or the file, then re-run") from None
        except expat.ExpatError as exc:
            raise XmpError(f"{self.what} is not valid XML (line {exc.lineno}, column {exc.offset}: "
                           f"{expat.ErrorString(exc.code)}); {_UNTOUCHED} — fix or remove it, "
                           "then re-run") from None
        return roots[0]

    @staticmethod
    def _find_rdf(root: _Elem) -> _Elem | None:
        todo = [root]
        while todo:
            elem = todo.pop(0)
            if elem.key == (RDF_NS, "RDF"):
                return elem
            todo.extend(elem.children)
        return None


@dataclass(eq=False)
class _Prop:
    """One top-level property of an rdf:Description: an attribute or a child element."""

    uri: str | None
    local: str
    desc: _Elem
    attr: _Attr | None = None
    elem: _Elem | None = None

    @property
    def key(self) -> tuple[str | None, str]:
        return self.uri, self.local

    @property
    def value(self) -> str | None:
        """The simple value; None for arrays and structs."""
        return self.attr.value if self.attr is not None else self.elem.plain_text()

    @property
    def items(self) -> list[str] | None:
        """The items of an rdf:Seq/Bag/Alt value, else None."""
        if self.elem is None or len(self.elem.children) != 1:
            return None
        array = self.elem.children[0]
        if array.uri != RDF_NS or array.local not in ("Seq", "Bag", "Alt"):
            return None
        return [li.plain_text() or "" for li in array.children if li.key == (RDF_NS, "li")]


_NOT_PROPERTIES = {(RDF_NS, "about"), (RDF_NS, "ID"), (RDF_NS, "nodeID"), (RDF_NS, "parseType")}


def _properties(desc: _Elem) -> list[_Prop]:
    props = []
    for attr in desc.attrs:
        if attr.qname == "xmlns" or attr.qname.startswith("xmlns:") or attr.uri in (None, XML_NS):
            continue
        if (attr.uri, attr.local) in _NOT_PROPERTIES:
            continue
        props.append(_Prop(attr.uri, attr.local, desc, attr=attr))
    props.extend(_Prop(c.uri, c.local, desc, elem=c) for c in desc.children)
    return props


# ---------------------------------------------------------------------------------------------
# Label values


def _norm(value: str | None) -> str | None:
    """Compare '3', '3.0' and ' 3 ' as the same label value."""
    if value is None:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else str(number)


def _is_set(value: str | None) -> bool:
    """0 / empty mean 'no label' in every app, so they are not a person's decision."""
    norm = _norm(value)
    return norm not in (None, "", "0")


def _number(value: str | None) -> int | float | None:
    norm = _norm(value)
    if norm in (None, ""):
        return None
    try:
        number = float(norm)
    except ValueError:
        return None
    return int(number) if number.is_integer() else number


def _first_values(props: list[_Prop]) -> dict:
    values: dict = {}
    for prop in props:
        values.setdefault(prop.key, prop)
    return values


def _labels_from(packet: _Packet) -> dict:
    props = [p for d in packet.descriptions for p in _properties(d)]
    first = _first_values(props)

    def value(key):
        return first[key].value if key in first else None

    iqs: dict = {}
    written = {}
    probabilities = {}
    for prop in props:
        if prop.uri != IQS_NS or prop.local in iqs:
            continue
        if prop.local in _WRITTEN.values():
            key = next(k for k, n in _WRITTEN.items() if n == prop.local)
            written[_QNAME[key]] = prop.value
        elif prop.local.startswith("prob") and len(prop.local) > 4:
            probabilities[prop.local[4:].lower()] = _number(prop.value)
        elif prop.local == "reasons":
            iqs["reasons"] = prop.items if prop.items is not None else [prop.value or ""]
        elif prop.local in ("mos", "stars"):
            iqs[prop.local] = _number(prop.value)
        else:
            iqs[prop.local] = prop.value
    if probabilities:
        iqs["probabilities"] = probabilities
    if written:
        iqs["written"] = written
    by_iqs = bool(iqs) and all(
        not _is_set(value(k)) or _norm(value(k)) == _norm(written.get(_QNAME[k]))
        for k in LABEL_KEYS)
    label = value(LABEL)
    return {
        "pick": _number(value(PICK)),
        "rating": _number(value(RATING)),
        "color": _number(value(COLOR)),
        "label": label.strip() if label is not None else None,
        "iqs": iqs,
        "by_iqs": by_iqs,  # the labels present are the ones iqs wrote (no person changed them)
    }


def _wanted_labels(result: ShotResult, color_labels: bool) -> dict:
    labels = {PICK: str(PICK_LABELS[result.label])}
    if result.label == "rejected":
        labels[RATING] = str(REJECTED_RATING)
    elif result.stars is not None:
        labels[RATING] = str(min(5, max(1, int(result.stars))))
    if color_labels:
        number, name = COLOR_LABELS[result.label]
        labels[COLOR], labels[LABEL] = str(number), name
    return labels


def _iqs_values(result: ShotResult, written: dict, now: datetime) -> list[tuple[str, object]]:
    values: list[tuple[str, object]] = [("label", result.label)]
    if result.mos is not None:
        values.append(("mos", f"{result.mos:.1f}"))
    if result.stars is not None:
        values.append(("stars", str(int(result.stars))))
    for name in ("rejected", "pending", "accepted"):
        if name in result.probabilities:
            values.append(("prob" + name.capitalize(), f"{result.probabilities[name]:.4f}"))
    if result.model:
        values.append(("model", result.model))
    if result.model_version:
        values.append(("modelVersion", result.model_version))
    if result.reasons:
        values.append(("reasons", list(result.reasons)))
    values.append(("date", now.isoformat(timespec="seconds")))
    for key in LABEL_KEYS:
        if key in written:
            values.append((_WRITTEN[key], written[key]))
    return values


# ---------------------------------------------------------------------------------------------
# Merging


def _text(value: str) -> str:
    # ASCII with character references: valid in any encoding the file declares.
    return escape(value).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _attr_text(value: str) -> str:
    return escape(value, {'"': "&quot;"}).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _description(about: str, scope: dict[str, str], labels: dict, iqs_values: list,
                 indent: str, nl: str) -> str:
    used = {"rdf", IQS_PREFIX} | {_QNAME[k].split(":")[0] for k in labels}
    declarations = [f'xmlns:{p}="{PREFIX_URIS[p]}"' for p in PREFIX_URIS
                    if p in used and scope.get(p) != PREFIX_URIS[p]]
    head = [f'{indent}<rdf:Description rdf:about="{_attr_text(about)}"']
    head += [f"{indent}    {d}" for d in declarations]
    lines = [nl.join(head) + ">"]
    for key in LABEL_KEYS:
        if key in labels:
            q = _QNAME[key]
            lines.append(f"{indent} <{q}>{_text(labels[key])}</{q}>")
    for local, value in iqs_values:
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
class _Merge:
    data: bytes  # the new packet (UTF-8, also when the file was UTF-16)
    human_kept: bool
    labels: dict  # label values iqs wrote this time


def _merge(packet: _Packet, result: ShotResult, *, color_labels: bool, overwrite: bool,
           now: datetime) -> _Merge:
    data = packet.data
    props = [p for d in packet.descriptions for p in _properties(d)]
    first = _first_values(props)
    current = {k: first[k].value for k in LABEL_KEYS if k in first}
    recorded = {}
    for key in LABEL_KEYS:
        prop = first.get((IQS_NS, _WRITTEN[key]))
        if prop is not None and prop.value is not None:
            recorded[key] = prop.value
    # A person's label on a key iqs is about to write means they judged the shot: keep theirs.
    # (A color label alone does not stop pick label and rating without --color-labels.)
    wanted = {PICK, RATING} | ({COLOR, LABEL} if color_labels else set())
    human = {k: v for k, v in current.items()
             if k in wanted and _is_set(v) and _norm(v) != _norm(recorded.get(k))}
    keep_human = bool(human) and not overwrite

    if keep_human:
        labels: dict = {}
        replace: set = set()
        # Labels iqs wrote earlier and nobody changed stay recorded as iqs's.
        written = {k: v for k, v in recorded.items() if _norm(current.get(k)) == _norm(v)}
    else:
        labels = _wanted_labels(result, color_labels)
        replace = {PICK, RATING}
        if color_labels:
            replace |= {COLOR, LABEL}
        else:
            # A color label from an earlier --color-labels run is stale now; a person's stays.
            replace |= {k for k in (COLOR, LABEL) if k in recorded
                        and _norm(current.get(k)) == _norm(recorded[k])}
        written = labels

    edits: list[tuple[int, int, bytes]] = []
    for desc in packet.descriptions:
        desc_props = _properties(desc)
        removed = [p for p in desc_props if p.uri == IQS_NS or p.key in replace]
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
        ours = _description(about, rdf.scope, labels, _iqs_values(result, written, now), " ", nl)
        edits.append((rdf.slash, rdf.tag_end,
                       f">{nl}{ours}{nl}</{rdf.qname}>".encode("ascii")))
    else:
        at = rdf.close_start
        line = _line_start(data, at)
        if line != at:  # </rdf:RDF> on a line of its own: put ours on lines before it
            eol = data[line:at].index(b"\n") + 1
            indent = data[line + eol:at].decode("ascii") + " "
            ours = _description(about, rdf.scope, labels, _iqs_values(result, written, now),
                                indent, nl)
            edits.append((line + eol, line + eol, (ours + nl).encode("ascii")))
        else:
            ours = _description(about, rdf.scope, labels, _iqs_values(result, written, now), "", nl)
            edits.append((at, at, ours.encode("ascii")))

    out = bytearray(data)
    last = len(data) + 1
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        if end > last:  # overlapping edits would corrupt the packet: stop before writing
            raise XmpError(f"{packet.what}: overlapping edits (internal error); {_UNTOUCHED} — "
                           "please report this file")
        out[start:end] = new
        last = start
    return _Merge(bytes(out), keep_human, labels)


def _new_packet() -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="iqs {__version__}">\n'
        f' <rdf:RDF xmlns:rdf="{RDF_NS}">\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>\n'
    ).encode("utf-8")


def _check(new: bytes, merged: _Merge, result: ShotResult, what: str) -> None:
    """Parse what is about to be written and make sure it says what iqs meant."""
    labels = _labels_from(_Packet(new, what))
    expected_pick = _number(merged.labels.get(PICK))
    if labels["iqs"].get("label") != result.label or (
            expected_pick is not None and labels["pick"] != expected_pick):
        raise XmpError(f"{what}: the merged XMP did not read back as written (internal error); "
                       f"{_UNTOUCHED} — please report this file")


# ---------------------------------------------------------------------------------------------
# Files


def _atomic_write(target: Path, data: bytes, keep_mode_of: Path | None) -> None:
    try:
        write_atomic(target, data, keep_mode_of)
    except OSError as exc:
        raise XmpError(f"cannot write {target} ({exc.strerror or exc}); {remedy(exc)}; "
                       "nothing was changed") from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _require_regular(path: Path, st: os.stat_result, what: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    via = " (through a symbolic link)" if os.path.islink(path) else ""
    raise XmpError(f"{what} is {_kind(st.st_mode)}{via}, not a regular file; {_UNTOUCHED} — "
                   "move it out of the way, then re-run")


def _require_small(size: int, what: str) -> None:
    if size > MAX_SIDECAR_BYTES:
        raise XmpError(f"{what} is {size // (1024 * 1024)} MiB or more, too large for an XMP "
                       f"sidecar; {_UNTOUCHED} — check what it is, then re-run")


def _read_existing(path: Path, what: str) -> bytes | None:
    """The bytes of the sidecar at `path`, or None when there is none.

    Only a regular file is read, and at most MAX_SIDECAR_BYTES + 1 bytes of it: opening a FIFO
    waits for a writer forever, /dev/zero never ends, so anything else is refused unopened."""
    try:
        st = os.stat(path)  # follows a symbolic link: what it points at is what would be read
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise XmpError(f"cannot read {what} ({exc.strerror or exc}); {remedy(exc)}") from None
    _require_regular(path, st, what)
    _require_small(st.st_size, what)
    # O_NONBLOCK: should a FIFO take the file's place after the stat, open does not wait.
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise XmpError(f"cannot read {what} ({exc.strerror or exc}); {remedy(exc)}") from None
    chunks: list[bytes] = []
    try:
        _require_regular(path, os.fstat(fd), what)  # what was opened, not what was stat'ed
        left = MAX_SIDECAR_BYTES + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise XmpError(f"cannot read {what} ({exc.strerror or exc}); {remedy(exc)}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    _require_small(len(data), what)  # it grew after the stat
    return data


def _require_name_fits(photo: Path, target: Path) -> None:
    """A sidecar name over the filesystem's limit cannot be made: say so, and how to fix it."""
    size = len(os.fsencode(target.name))
    if size > NAME_MAX:
        room = NAME_MAX - (size - len(os.fsencode(photo.name)))
        raise XmpError(f"{photo}: its sidecar name would be {size} bytes, longer than the "
                       f"{NAME_MAX} bytes the filesystem allows; no labels written for it — "
                       f"rename the photo to at most {room} bytes, then re-run")


def _pyexiv2():
    """pyexiv2, with exiv2's own log muted: it prints warnings about broken files to stdout
    (which would corrupt `--format jsonl` output); every failure still arrives as an exception."""
    import pyexiv2

    pyexiv2.set_log_level(4)
    return pyexiv2


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_photo(photo: Path) -> None:
    if not photo.is_file():
        raise XmpError(f"{photo}: photo not found (moved or deleted after scoring?); "
                       "no labels written for it")


def write_labels(photo: Path | str, result: ShotResult, *, style: str = "digikam",
                 in_file: bool = False, color_labels: bool = False, overwrite: bool = False,
                 recorder: WriteRecorder | None = None,
                 now: datetime | None = None) -> WriteOutcome:
    """Write the labels of `result` for one file of its shot: sidecar, or in-file XMP.

    Raises XmpError (nothing changed) when the existing sidecar/metadata cannot be merged or
    the file cannot be written. Exceptions from `recorder` propagate (nothing written).
    """
    if result.label not in PICK_LABELS:
        raise ValueError(f"no verdict to write for {result.path}: label is {result.label!r}")
    photo = Path(photo)
    sidecar_path(photo, style)  # validates the style
    now = now or datetime.now().astimezone()
    _check_photo(photo)
    if writes_in_file(photo, in_file):
        return _write_in_file(photo, result, color_labels=color_labels, overwrite=overwrite,
                              recorder=recorder, now=now)

    target = sidecar_in_use(photo, style)
    _require_name_fits(photo, target)
    what = f"existing sidecar {target}"
    existing = _read_existing(target, what)
    if existing is not None and target.is_symlink():
        raise XmpError(f"{target} is a symbolic link; {_UNTOUCHED} — replace it with a regular "
                       "file, then re-run")
    if existing is not None and not os.access(target, os.W_OK):
        raise XmpError(f"{target} is read-only; {_UNTOUCHED} — make it writable if iqs may "
                       "add its labels, then re-run")
    blank = existing is None or not existing.strip(b" \t\r\n\x00")
    packet = _Packet(_new_packet() if blank else existing, what)
    merged = _merge(packet, result, color_labels=color_labels, overwrite=overwrite, now=now)
    _check(merged.data, merged, result, what)
    if recorder is not None:
        recorder.before_write(target, existing is not None)
    _atomic_write(target, merged.data, keep_mode_of=target if existing is not None else None)
    if recorder is not None:
        recorder.after_write(target, hashlib.sha256(merged.data).hexdigest())
    return WriteOutcome(photo, target, in_file=False, created=existing is None,
                        human_kept=merged.human_kept)


def _jpeg_scan_start(data: bytes) -> int | None:
    """Offset of the first SOS marker: everything from there on is the compressed image."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
        elif marker == 0xDA:
            return i
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
        else:
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if length < 2:
                return None
            i += 2 + length
    return None


def _same_image_data(before: bytes, after: bytes) -> bool:
    """True when exiv2 left the image itself alone (compressed bytes, else decoded pixels)."""
    a, b = _jpeg_scan_start(before), _jpeg_scan_start(after)
    if a is not None and b is not None:
        return memoryview(before)[a:] == memoryview(after)[b:]
    from PIL import Image

    with warnings.catch_warnings():  # broken files warn; the comparison decides
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(before)) as old, Image.open(io.BytesIO(after)) as new:
            return (old.size == new.size and old.mode == new.mode
                    and old.tobytes() == new.tobytes())


def _write_in_file(photo: Path, result: ShotResult, *, color_labels: bool, overwrite: bool,
                   recorder: WriteRecorder | None, now: datetime) -> WriteOutcome:
    pyexiv2 = _pyexiv2()

    what = f"XMP inside {photo}"
    try:
        original = photo.read_bytes()
    except OSError as exc:
        raise XmpError(f"cannot read {photo} ({exc.strerror or exc}); {remedy(exc)}") from None
    if not os.access(photo, os.W_OK):
        raise XmpError(f"{photo} is read-only; iqs leaves it untouched — make it writable, or "
                       "drop --in-file to write a sidecar instead")
    try:
        image = pyexiv2.ImageData(original)
    except (RuntimeError, ValueError) as exc:
        raise XmpError(f"{photo}: exiv2 cannot read its metadata ({_one_line(exc)}); nothing "
                       "written into it "
                       "— drop --in-file to write a sidecar instead") from None
    try:
        try:
            raw = image.read_raw_xmp()
        except (RuntimeError, UnicodeDecodeError) as exc:
            raise XmpError(f"{what} cannot be read ({_one_line(exc)}); {_UNTOUCHED} — drop "
                           "--in-file to write a sidecar instead") from None
        packet = _Packet(raw.encode("utf-8") if raw.strip() else _new_packet(), what)
        merged = _merge(packet, result, color_labels=color_labels, overwrite=overwrite, now=now)
        _check(merged.data, merged, result, what)
        try:
            image.modify_raw_xmp(merged.data.decode("utf-8"))
            updated = image.get_bytes()
        except RuntimeError as exc:
            raise XmpError(f"{photo}: exiv2 could not write the XMP ({_one_line(exc)}); "
                           f"{_UNTOUCHED} — drop --in-file to write a sidecar instead") from None
    finally:
        image.close()

    # Check what exiv2 produced before it replaces the photo.
    try:
        check = pyexiv2.ImageData(updated)
        try:
            written_back = check.read_raw_xmp()
        finally:
            check.close()
    except (RuntimeError, UnicodeDecodeError) as exc:
        raise XmpError(f"{photo}: exiv2 cannot read back the XMP it wrote ({_one_line(exc)}); "
                       f"{_UNTOUCHED} — drop --in-file to write a sidecar instead") from None
    _check(written_back.encode("utf-8"), merged, result, f"XMP written into {photo}")
    try:
        same = _same_image_data(original, updated)
    except Exception:  # PIL cannot decode it (any error): never write into such a file
        raise XmpError(f"{photo}: the image cannot be decoded, so iqs cannot check that adding "
                       f"XMP leaves it intact; {_UNTOUCHED} — drop --in-file to write a sidecar "
                       "instead") from None
    if not same:
        raise XmpError(f"{photo}: writing XMP would change the image data; {_UNTOUCHED} — drop "
                       "--in-file to write a sidecar instead")
    if recorder is not None:
        recorder.before_write(photo, True)
    _atomic_write(photo, updated, keep_mode_of=photo)
    if recorder is not None:
        recorder.after_write(photo, hashlib.sha256(updated).hexdigest())
    return WriteOutcome(photo, photo, in_file=True, created=False, human_kept=merged.human_kept)


def write_shot(result: ShotResult, *, style: str = "digikam", in_file: bool = False,
               color_labels: bool = False, overwrite: bool = False,
               recorder: WriteRecorder | None = None,
               now: datetime | None = None) -> list[WriteOutcome]:
    """Label every file of the shot (RAW files always get a sidecar). A file that fails gets
    an outcome with `error` set; the others are still written."""
    now = now or datetime.now().astimezone()
    outcomes = []
    seen: set[Path] = set()
    for name in result.files or [result.path]:
        photo = Path(name)
        target = target_path(photo, style=style, in_file=in_file)
        if target in seen:  # RAW + JPEG share `photo.xmp` in the Lightroom style
            continue
        seen.add(target)
        try:
            outcomes.append(write_labels(photo, result, style=style, in_file=in_file,
                                         color_labels=color_labels, overwrite=overwrite,
                                         recorder=recorder, now=now))
        except XmpError as exc:
            outcomes.append(WriteOutcome(photo, target, in_file=writes_in_file(photo, in_file),
                                         error=str(exc)))
    return outcomes


def read_labels(path: Path | str) -> dict:
    """Labels in a sidecar (`*.xmp`) or in a photo's own XMP.

    Returns {"pick", "rating", "color" (numbers or None), "label" (str or None),
    "iqs": {label, mos, stars, probabilities, model, modelVersion, reasons, date, written},
    "by_iqs": True when the labels present are the ones iqs wrote}. Raises XmpError.
    """
    path = Path(path)
    if path.suffix.lower() == ".xmp":
        what = f"sidecar {path}"
        data = _read_existing(path, what)
        if data is None:
            raise XmpError(f"{what} not found")
        if not data.strip(b" \t\r\n\x00"):
            data = _new_packet()
        return _labels_from(_Packet(data, what))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise XmpError(f"cannot read {path} ({exc.strerror or exc}); {remedy(exc)}") from None
    _require_regular(path, st, str(path))  # a FIFO would block the read
    pyexiv2 = _pyexiv2()
    try:
        with pyexiv2.ImageData(path.read_bytes()) as image:
            raw = image.read_raw_xmp()
    except OSError as exc:
        raise XmpError(f"cannot read {path} ({exc.strerror or exc}); {remedy(exc)}") from None
    except (RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise XmpError(f"{path}: cannot read its XMP ({_one_line(exc)})") from None
    return _labels_from(_Packet(raw.encode("utf-8") if raw.strip() else _new_packet(),
                                f"XMP inside {path}"))


def is_set(value: str | None) -> bool:
    """Whether a label value means a decision (0 and empty mean 'no label' in every app)."""
    return _is_set(value)


def same_value(a: str | None, b: str | None) -> bool:
    """Whether two label values are the same ('3', '3.0' and ' 3 ' are)."""
    return _norm(a) == _norm(b)
