"""One XMP packet, parsed with expat into a position-aware element tree.

The tree is not for re-serializing: it only says where each element and attribute sits in
the bytes, so that the merge (merge.py) can cut out and insert text and leave every other
byte as it was. A packet with a DOCTYPE/entity declaration is refused outright (no entity is
ever expanded).

The one change made while reading: a UTF-16 packet (older Lightroom writes UTF-16 sidecars)
comes back as UTF-8, because exiv2 (digiKam, darktable) cannot read UTF-16 sidecars at all.
Every property and comment is kept; only the encoding changes, and with it an `<?xml ...
encoding="UTF-16"?>` declaration (now says UTF-8) and the xpacket `begin` mark (now U+FEFF in
UTF-8). UTF-32 is refused.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from xml.parsers import expat

from .. import __version__

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# How every refusal ends: nothing was changed.
UNTOUCHED = "iqs leaves it untouched"


class XmpError(Exception):
    """Labels could not be read or written for one file; the message says which and what to do.

    Nothing was changed on disk when this is raised.
    """


class _Refused(Exception):
    pass


@dataclass(eq=False)
class Attr:
    qname: str
    uri: str | None
    local: str
    value: str
    start: int  # span of ` name="value"` including the whitespace before it
    end: int


@dataclass(eq=False)
class Elem:
    qname: str
    uri: str | None
    local: str
    attrs: list[Attr]
    scope: dict[str, str]  # prefix -> namespace in force on this element
    start: int  # offset of '<'
    tag_end: int  # offset just past the start tag's '>'
    slash: int  # offset of '/' in an empty-element tag, else -1
    close_start: int = -1  # offset of '</' (or tag_end for an empty element)
    end: int = -1  # offset just past the element
    children: list["Elem"] = field(default_factory=list)
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
        raise XmpError(f"{what} is UTF-32 encoded, which iqs does not edit; {UNTOUCHED} — "
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
                       f"{exc.start}); {UNTOUCHED} — fix or remove it, then re-run") from None
    text = _XML_ENCODING.sub(lambda m: f"{m[1]}{m[2]}UTF-8{m[2]}", text, count=1)
    text = _XPACKET_BEGIN.sub(lambda m: f"{m[1]}{m[2]}\ufeff{m[2]}", text, count=1)
    return text.encode("utf-8"), "UTF-8"


class Packet:
    """One parsed XMP packet: the bytes, the element tree and the top-level rdf:Descriptions."""

    def __init__(self, data: bytes, what: str):
        self.what = what
        self.data, override = _transcode(data, what)
        self.root = self._parse(override)
        self.rdf = self._find_rdf(self.root)
        if self.rdf is None:
            raise XmpError(f"{what} is not an XMP packet (no rdf:RDF element in the RDF "
                           f"namespace); {UNTOUCHED} — fix or remove it, then re-run")
        self.descriptions = [c for c in self.rdf.children if c.key == (RDF_NS, "Description")]

    def _parse(self, override: str | None) -> Elem:
        data = self.data
        parser = expat.ParserCreate(encoding=override)
        parser.ordered_attributes = True
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        stack: list[Elem] = []
        roots: list[Elem] = []

        def refuse(*_args):
            raise _Refused()

        def start(name: str, attr_list: list[str]) -> None:
            at = parser.CurrentByteIndex
            match = _START_TAG.match(data, at)
            if match is None:  # expat accepted a tag this scanner cannot place: do not guess
                raise XmpError(f"{self.what}: cannot locate the <{name}> tag at byte {at}; "
                               f"{UNTOUCHED} — please report this file")
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
                                   f"{UNTOUCHED} — please report this file")
                uri, local = _resolve(qname, scope, attribute=True)
                attrs.append(Attr(qname, uri, local, values[qname], m.start(), m.end()))
            uri, local = _resolve(name, scope, attribute=False)
            slash = match.start(2) if match.group(2) else -1
            elem = Elem(name, uri, local, attrs, scope, at, match.end(), slash)
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
                           f"it (possible XML entity attack); {UNTOUCHED} — remove the "
                           "<!DOCTYPE ...> part or the file, then re-run") from None
        except expat.ExpatError as exc:
            raise XmpError(f"{self.what} is not valid XML (line {exc.lineno}, column {exc.offset}: "
                           f"{expat.ErrorString(exc.code)}); {UNTOUCHED} — fix or remove it, "
                           "then re-run") from None
        return roots[0]

    @staticmethod
    def _find_rdf(root: Elem) -> Elem | None:
        todo = [root]
        while todo:
            elem = todo.pop(0)
            if elem.key == (RDF_NS, "RDF"):
                return elem
            todo.extend(elem.children)
        return None

    def properties(self) -> list["Prop"]:
        """Every top-level property of every rdf:Description, in document order."""
        return [p for d in self.descriptions for p in properties(d)]


@dataclass(eq=False)
class Prop:
    """One top-level property of an rdf:Description: an attribute or a child element."""

    uri: str | None
    local: str
    desc: Elem
    attr: Attr | None = None
    elem: Elem | None = None

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


def properties(desc: Elem) -> list[Prop]:
    """The top-level properties of one rdf:Description (not namespace declarations, rdf:about
    and the like)."""
    props = []
    for attr in desc.attrs:
        if attr.qname == "xmlns" or attr.qname.startswith("xmlns:") or attr.uri in (None, XML_NS):
            continue
        if (attr.uri, attr.local) in _NOT_PROPERTIES:
            continue
        props.append(Prop(attr.uri, attr.local, desc, attr=attr))
    props.extend(Prop(c.uri, c.local, desc, elem=c) for c in desc.children)
    return props


def first_values(props: list[Prop]) -> dict:
    """key -> the first property with that key (the one apps read)."""
    values: dict = {}
    for prop in props:
        values.setdefault(prop.key, prop)
    return values


def new_packet() -> bytes:
    """An empty packet, for a photo with no XMP yet (or an empty sidecar)."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="iqs {__version__}">\n'
        f' <rdf:RDF xmlns:rdf="{RDF_NS}">\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>\n'
    ).encode("utf-8")


def is_blank(data: bytes) -> bool:
    """Whether a sidecar's bytes hold nothing (an empty file stands for a new packet)."""
    return not data.strip(b" \t\r\n\x00")
