"""Sidecars at the edges: something other than a regular file in a sidecar's place, names near
the filesystem's 255-byte limit, and UTF-16 sidecars (converted to UTF-8)."""

from __future__ import annotations

import codecs
import os
import shutil
import stat
import threading
from pathlib import Path

import pyexiv2
import pytest

from tests.helpers import exiftool, make_photo
from iqs_cli import fsutil, xmp
from iqs_cli.result import ShotResult
from iqs_cli.xmp import XmpError
from iqs_cli.xmp import files as xmp_files

needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None,
                                    reason="exiftool (libimage-exiftool-perl) is not installed")


def verdict(label="rejected", stars=1) -> ShotResult:
    probabilities = {"rejected": 0.1, "pending": 0.2, "accepted": 0.7}
    probabilities[label] = 0.8
    return ShotResult(path="unused", label=label, probabilities=probabilities, mos=21.5,
                      stars=stars, reasons=["blur"], model="iqs-base", model_version="1.2")


def within(seconds: float, call, on_timeout=None):
    """call() in a thread; what it returned or raised. A call still running after `seconds`
    fails the test (a hang must not hang the suite); on_timeout() may then unblock it."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if on_timeout is not None:
            on_timeout()
        pytest.fail(f"still running after {seconds} s (blocked?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if fsutil.TEMP_MARK in p.name]


def assert_one_line_naming(exc: BaseException, path: Path, *words: str) -> None:
    message = str(exc)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------------------------------
# Only a regular file is read as a sidecar


def _unblock_fifo(fifo: Path):
    def unblock():  # a reader stuck in open() gets EOF once a writer comes and goes
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    return unblock


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_sidecar_is_refused_without_blocking(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    fifo = xmp.sidecar_path(photo)
    os.mkfifo(fifo)
    with pytest.raises(XmpError) as caught:
        within(5, lambda: xmp.write_labels(photo, verdict()), _unblock_fifo(fifo))
    assert_one_line_naming(caught.value, fifo, "named pipe", "not a regular file")
    with pytest.raises(XmpError, match="named pipe"):
        within(5, lambda: xmp.read_labels(fifo), _unblock_fifo(fifo))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_read_labels_refuses_a_fifo_photo(tmp_path):
    fifo = tmp_path / "a.jpg"
    os.mkfifo(fifo)
    with pytest.raises(XmpError) as caught:
        within(5, lambda: xmp.read_labels(fifo), _unblock_fifo(fifo))
    assert_one_line_naming(caught.value, fifo, "named pipe")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_a_sidecar_linked_to_dev_zero_is_refused(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    link = xmp.sidecar_path(photo)
    link.symlink_to("/dev/zero")
    with pytest.raises(XmpError) as caught:
        within(5, lambda: xmp.write_labels(photo, verdict()))
    assert_one_line_naming(caught.value, link, "a device (through a symbolic link)")
    with pytest.raises(XmpError, match="device"):
        within(5, lambda: xmp.read_labels(link))
    assert os.readlink(link) == "/dev/zero" and leftovers(tmp_path) == []


def test_a_folder_named_like_the_sidecar_is_refused(tmp_path):
    photo = make_photo(tmp_path / "photo.jpg")
    folder = tmp_path / "photo.jpg.xmp"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(XmpError) as caught:
        xmp.write_labels(photo, verdict())
    assert_one_line_naming(caught.value, folder, "a folder, not a regular file")
    with pytest.raises(XmpError, match="a folder"):
        xmp.read_labels(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["inside"]
    outcome = xmp.write_shot(ShotResult(path=str(photo), files=[str(photo)], label="rejected",
                                        probabilities={"rejected": 0.9}))[0]
    assert "a folder" in outcome.error  # write_shot reports it for that file


def test_an_oversized_sidecar_is_refused_unread(tmp_path, monkeypatch):
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = xmp.sidecar_path(photo)
    with open(sidecar, "wb") as handle:  # sparse: no disk used
        handle.truncate(xmp.MAX_SIDECAR_BYTES + 1)
    reads = []
    real_read = os.read
    monkeypatch.setattr(xmp_files.os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(XmpError, match="too large"):
        xmp.write_labels(photo, verdict())
    assert reads == []  # refused from its size, before a byte was read


# ---------------------------------------------------------------------------------------------
# Names near the 255-byte limit


def nbytes(name: str) -> int:
    return len(os.fsencode(name))


NAMES = {
    "short": "IMG_0001.CR3.xmp",
    "ascii at the limit": "a" * 251 + ".xmp",
    "two-byte chars": "é" * 123 + ".jpg.xmp",
    "three-byte chars": "東" * 81 + ".NEF.xmp",
    "four-byte chars": "😀" * 61 + ".xmp",
    "undecodable bytes": os.fsdecode(b"\xff" * 240 + b".jpg.xmp"),
}


@pytest.mark.parametrize("case", sorted(NAMES))
@pytest.mark.parametrize("token", ["0123abcd", "00000017", "back0000"])
def test_temp_names_always_fit(case, token):
    name = NAMES[case]
    tmp = fsutil.temp_path(Path(name), token).name
    assert nbytes(tmp) <= 255
    assert tmp.startswith(".") and tmp.endswith(fsutil.TEMP_MARK + token)
    assert tmp == fsutil.temp_path(Path(name), token).name  # the same name every time (undo)
    if nbytes(f".{name}.iqs-tmp-{token}") <= 255:
        assert tmp == f".{name}.iqs-tmp-{token}"
    else:
        head, _, tail = tmp[1:-len(fsutil.TEMP_MARK + token)].partition("~")
        assert name.startswith(head) and name.endswith(tail) and head and tail
        assert nbytes(tmp) >= 255 - 8  # cut only as much as needed (whole characters)
    assert os.fsdecode(os.fsencode(tmp)) == tmp


@pytest.mark.parametrize("stem", ["a" * 247, "é" * 123, "東" * 82],
                         ids=["ascii", "two-byte chars", "three-byte chars"])
def test_a_photo_name_near_the_limit_gets_its_sidecar(tmp_path, stem):
    photo = make_photo(tmp_path / f"{stem}.jpg")
    assert 250 <= nbytes(photo.name) <= 251
    outcome = xmp.write_labels(photo, verdict())
    assert outcome.created and outcome.target.name == photo.name + ".xmp"
    assert xmp.read_labels(outcome.target)["pick"] == 1
    outcome = xmp.write_labels(photo, verdict("accepted", stars=4))  # updating it too
    assert xmp.read_labels(outcome.target)["pick"] == 3
    outcome = xmp.write_labels(photo, verdict("accepted", stars=4), in_file=True)
    assert xmp.read_labels(photo)["pick"] == 3
    assert leftovers(tmp_path) == []


def test_a_sidecar_name_over_the_limit_is_a_clear_error(tmp_path):
    photo = make_photo(tmp_path / ("a" * 248 + ".jpg"))  # 252 bytes: the sidecar would be 256
    with pytest.raises(XmpError) as caught:
        xmp.write_labels(photo, verdict())
    assert_one_line_naming(caught.value, photo, "longer than the 255 bytes the filesystem allows",
                           "rename the photo to at most 251 bytes")
    assert sorted(p.name for p in tmp_path.iterdir()) == [photo.name]
    # The Lightroom style (photo.xmp) fits.
    outcome = xmp.write_labels(photo, verdict(), style="lightroom")
    assert xmp.read_labels(outcome.target)["pick"] == 1


# ---------------------------------------------------------------------------------------------
# UTF-16 sidecars become UTF-8


KEYWORDS = ["Zoë", "東京", "Ελλάδα", "naïve café"]
UTF16_PACKET = (
    '<?xml version="1.0" encoding="UTF-16"?>\n'
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 4.2-c020">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about=""\n'
    '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
    '    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"\n'
    '    crs:WhiteBalance="As Shot">\n'
    '   <!-- Lightroom 2 -->\n'
    '   <dc:subject>\n'
    '    <rdf:Bag>\n'
    + "".join(f"     <rdf:li>{k}</rdf:li>\n" for k in KEYWORDS)
    + '    </rdf:Bag>\n'
    '   </dc:subject>\n'
    '   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Été à Kraków</rdf:li></rdf:Alt></dc:title>\n'
    '  </rdf:Description>\n'
    ' </rdf:RDF>\n'
    '</x:xmpmeta>\n'
    + " " * 200 + "\n"
    '<?xpacket end="w"?>'
)

UTF16_FORMS = {
    "LE with BOM": lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),
    "BE with BOM": lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
    "LE without BOM or declaration": lambda t: t.split("\n", 1)[1].encode("utf-16-le"),
}


def exiftool_tags(path: Path) -> dict:
    tags = exiftool(path)[0]
    tags.pop("SourceFile")
    return tags


@needs_exiftool
@pytest.mark.parametrize("form", sorted(UTF16_FORMS))
def test_a_utf16_sidecar_becomes_utf8_with_every_property(tmp_path, form):
    photo = make_photo(tmp_path / "IMG_0001.jpg")
    sidecar = xmp.sidecar_path(photo)
    sidecar.write_bytes(UTF16_FORMS[form](UTF16_PACKET))
    before = exiftool_tags(sidecar)
    assert before["XMP-dc:Subject"] == KEYWORDS  # exiftool reads the UTF-16 original

    xmp.write_labels(photo, verdict("rejected"))

    data = sidecar.read_bytes()
    text = data.decode("utf-8")  # strict: the whole file is UTF-8
    assert not data.startswith(codecs.BOM_UTF8) and "UTF-16" not in text
    if form == "LE with BOM":
        assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    assert '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>' in text
    assert "<!-- Lightroom 2 -->" in text and '<?xpacket end="w"?>' in text

    after = exiftool_tags(sidecar)
    assert (after["XMP-digiKam:PickLabel"], after["XMP-xmp:Rating"]) == (1, -1)
    assert after["XMP-dc:Subject"] == KEYWORDS and after["XMP-dc:Title"] == "Été à Kraków"
    assert {k: v for k, v in after.items() if k in before} == before  # every property kept

    labels = xmp.read_labels(sidecar)
    assert (labels["pick"], labels["rating"], labels["iqs"]["label"]) == (1, -1, "rejected")
    with pyexiv2.Image(str(sidecar)) as reader:  # digiKam and darktable read through exiv2
        tags = reader.read_xmp()
    assert tags["Xmp.digiKam.PickLabel"] == "1" and tags["Xmp.dc.subject"] == KEYWORDS


def test_a_person_s_rating_in_a_utf16_sidecar_is_kept(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = xmp.sidecar_path(photo)
    packet = UTF16_PACKET.replace('crs:WhiteBalance="As Shot"',
                                  'crs:WhiteBalance="As Shot" xmlns:xmp="http://ns.adobe.com/'
                                  'xap/1.0/" xmp:Rating="5"')
    sidecar.write_bytes(codecs.BOM_UTF16_LE + packet.encode("utf-16-le"))
    outcome = xmp.write_labels(photo, verdict("rejected"))
    assert outcome.human_kept
    labels = xmp.read_labels(sidecar)
    assert (labels["rating"], labels["pick"], labels["iqs"]["label"]) == (5, None, "rejected")
    assert "東京" in sidecar.read_bytes().decode("utf-8")
