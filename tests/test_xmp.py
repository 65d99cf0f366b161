"""XMP labels: what digiKam/darktable/Lightroom read, merging into foreign sidecars, bad input.

exiftool is the independent reader (tests that need it skip only where it is not installed).
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import pyexiv2
import pytest
from PIL import Image

from tests.helpers import exiftool, make_photo, unprivileged, unprivileged_ids
from iqs_cli import fsutil, xmp
from iqs_cli.result import ShotResult
from iqs_cli.xmp import XmpError
from iqs_cli.xmp import files as xmp_files

DATA = Path(__file__).resolve().parent / "data" / "xmp"
OWNED = {"XMP-digiKam:PickLabel", "XMP-xmp:Rating", "XMP-digiKam:ColorLabel", "XMP-xmp:Label"}

needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None,
                                    reason="exiftool (libimage-exiftool-perl) is not installed")


def verdict(label="rejected", stars=1, mos=21.25, **extra) -> ShotResult:
    probabilities = {"rejected": 0.1, "pending": 0.2, "accepted": 0.7}
    probabilities[label] = 0.8
    fields = dict(path="unused", label=label, probabilities=probabilities, mos=mos, stars=stars,
                  reasons=["motion_blur", "underexposed"], model="iqs-base", model_version="1.2")
    fields.update(extra)
    return ShotResult(**fields)


def foreign(tags: dict) -> dict:
    """Every tag iqs does not own."""
    return {k: v for k, v in tags.items()
            if k != "SourceFile" and k not in OWNED and not k.startswith("XMP-iqs:")}


def photo_with_sidecar(tmp_path: Path, fixture: str, name="IMG_0001.jpg") -> tuple[Path, Path]:
    photo = make_photo(tmp_path / name)
    sidecar = xmp.sidecar_path(photo)
    shutil.copyfile(DATA / fixture, sidecar)
    return photo, sidecar


def assert_only_inserted(original: bytes, new: bytes) -> None:
    """`new` is `original` with one block inserted: not a byte of it changed or moved."""
    prefix = 0
    while prefix < len(original) and original[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < len(original) - prefix and original[-1 - suffix] == new[-1 - suffix]):
        suffix += 1
    assert prefix + suffix == len(original), (prefix, suffix, len(original))


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".iqs-tmp-" in p.name]


# ---------------------------------------------------------------------------------------------
# What gets written


@needs_exiftool
def test_new_sidecar_is_read_by_exiftool(tmp_path):
    photo = make_photo(tmp_path / "IMG_0001.jpg")
    outcome = xmp.write_labels(photo, verdict("rejected"), color_labels=True)

    assert outcome.target == tmp_path / "IMG_0001.jpg.xmp"
    assert outcome.created and not outcome.human_kept and not outcome.in_file
    tags = exiftool(outcome.target)[0]
    assert tags["XMP-digiKam:PickLabel"] == 1
    assert tags["XMP-xmp:Rating"] == -1
    assert tags["XMP-digiKam:ColorLabel"] == 1
    assert tags["XMP-xmp:Label"] == "Red"
    assert tags["XMP-iqs:Label"] == "rejected"
    assert tags["XMP-iqs:Mos"] == pytest.approx(21.2, abs=0.06)
    assert tags["XMP-iqs:ProbRejected"] == pytest.approx(0.8)
    assert tags["XMP-iqs:Model"] == "iqs-base"
    assert str(tags["XMP-iqs:ModelVersion"]) == "1.2"
    assert tags["XMP-iqs:Reasons"] == ["motion_blur", "underexposed"]
    assert tags["XMP-iqs:WrittenPickLabel"] == 1
    assert "XMP-iqs:Date" in tags
    assert outcome.target.read_bytes().startswith(b'<?xpacket begin="\xef\xbb\xbf"')
    assert leftovers(tmp_path) == []


@needs_exiftool
@pytest.mark.parametrize("label, pick, stars, color, name", [
    ("pending", 2, 3, 3, "Yellow"),
    ("accepted", 3, 5, 4, "Green"),
])
def test_pick_rating_and_color_per_verdict(tmp_path, label, pick, stars, color, name):
    photo = make_photo(tmp_path / f"{label}.jpg")
    xmp.write_labels(photo, verdict(label, stars=stars), color_labels=True)
    tags = exiftool(xmp.sidecar_path(photo))[0]
    assert (tags["XMP-digiKam:PickLabel"], tags["XMP-xmp:Rating"]) == (pick, stars)
    assert (tags["XMP-digiKam:ColorLabel"], tags["XMP-xmp:Label"]) == (color, name)
    labels = xmp.read_labels(xmp.sidecar_path(photo))
    assert four(labels) == (pick, stars, color, name)
    assert labels["by_iqs"] and labels["iqs"]["label"] == label


def four(labels: dict) -> tuple:
    return labels["pick"], labels["rating"], labels["color"], labels["label"]


def test_without_color_labels_no_color_is_written(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    xmp.write_labels(photo, verdict("accepted", stars=4))
    labels = xmp.read_labels(xmp.sidecar_path(photo))
    assert four(labels) == (3, 4, None, None)


def test_sidecar_names(tmp_path):
    photo = tmp_path / "IMG_1.CR2"
    assert xmp.sidecar_path(photo) == tmp_path / "IMG_1.CR2.xmp"
    assert xmp.sidecar_path(photo, "lightroom") == tmp_path / "IMG_1.xmp"
    assert xmp.target_path(tmp_path / "a.JPG", in_file=True) == tmp_path / "a.JPG"
    assert xmp.target_path(photo, in_file=True) == tmp_path / "IMG_1.CR2.xmp"
    with pytest.raises(ValueError, match="sidecar style"):
        xmp.sidecar_path(photo, "picasa")


@needs_exiftool
def test_every_file_of_a_raw_plus_jpeg_shot_is_labelled(tmp_path):
    raw = tmp_path / "IMG_7.CR2"
    raw.write_bytes(b"II*\x00 not really a raw file")
    jpeg = make_photo(tmp_path / "IMG_7.JPG")
    result = verdict("rejected", files=[str(raw), str(jpeg)])
    raw_bytes = raw.read_bytes()

    outcomes = xmp.write_shot(result)
    assert [o.target.name for o in outcomes] == ["IMG_7.CR2.xmp", "IMG_7.JPG.xmp"]

    # With photo.ext.xmp sidecars there, Lightroom style merges into them (a second sidecar
    # would hide them); without, RAW + JPEG share photo.xmp.
    assert [o.target.name for o in xmp.write_shot(result, style="lightroom")] == [
        "IMG_7.CR2.xmp", "IMG_7.JPG.xmp"]
    for sidecar in ("IMG_7.CR2.xmp", "IMG_7.JPG.xmp"):
        (tmp_path / sidecar).unlink()
    outcomes = xmp.write_shot(result, style="lightroom")
    assert [o.target.name for o in outcomes] == ["IMG_7.xmp"]  # RAW + JPEG share it

    outcomes = xmp.write_shot(result, in_file=True)
    assert [(o.target.name, o.in_file) for o in outcomes] == [
        ("IMG_7.CR2.xmp", False), ("IMG_7.JPG", True)]
    assert raw.read_bytes() == raw_bytes  # never written into a RAW file
    tags = exiftool(jpeg, tmp_path / "IMG_7.CR2.xmp", tmp_path / "IMG_7.xmp")
    assert all(t["XMP-digiKam:PickLabel"] == 1 and t["XMP-xmp:Rating"] == -1 for t in tags)


# ---------------------------------------------------------------------------------------------
# Merging into sidecars other applications wrote


@needs_exiftool
@pytest.mark.parametrize("fixture, person_labelled", [
    ("darktable.xmp", True),  # darktable's xmp:Rating="1"
    ("lightroom.xmp", True),  # Rating 4 + Label Blue, CRLF, comment, single quotes
    ("digikam.xmp", False),  # Rating 0 / ColorLabel 0 mean "none": iqs may label it
])
def test_foreign_sidecar_keeps_every_other_tag(tmp_path, fixture, person_labelled):
    photo, sidecar = photo_with_sidecar(tmp_path, fixture)
    original = sidecar.read_bytes()
    before = exiftool(sidecar)[0]

    outcome = xmp.write_labels(photo, verdict("rejected"))

    after = exiftool(sidecar)[0]
    assert foreign(after) == foreign(before)
    assert outcome.human_kept is person_labelled and not outcome.created
    assert after["XMP-iqs:Label"] == "rejected"
    new = sidecar.read_bytes()
    if person_labelled:  # labels untouched: only iqs's block was added
        for key in OWNED:
            assert after.get(key) == before.get(key)
        assert_only_inserted(original, new)
    else:
        assert (after["XMP-digiKam:PickLabel"], after["XMP-xmp:Rating"]) == (1, -1)
        without_rating = re.sub(rb'\s+xmp:Rating="0"', b"", original)
        assert_only_inserted(without_rating, new)
    assert new.count(b"xmlns:iqs=") == 1


@needs_exiftool
@pytest.mark.parametrize("fixture", ["darktable.xmp", "lightroom.xmp", "digikam.xmp"])
def test_overwrite_replaces_labels_and_keeps_the_rest(tmp_path, fixture):
    photo, sidecar = photo_with_sidecar(tmp_path, fixture)
    before = exiftool(sidecar)[0]

    outcome = xmp.write_labels(photo, verdict("rejected"), overwrite=True)

    after = exiftool(sidecar)[0]
    assert not outcome.human_kept
    assert foreign(after) == foreign(before)
    assert (after["XMP-digiKam:PickLabel"], after["XMP-xmp:Rating"]) == (1, -1)
    # Without --color-labels a person's color label stays even with --overwrite.
    assert after.get("XMP-xmp:Label") == before.get("XMP-xmp:Label")
    if fixture == "lightroom.xmp":
        comment = b"<!-- written by a photo manager; comments must survive -->\r\n"
        assert comment in sidecar.read_bytes()
        assert b"\n" not in sidecar.read_bytes().replace(b"\r\n", b"")  # line ends stay CRLF


def test_rerun_replaces_what_iqs_wrote_and_stays_one_block(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    xmp.write_labels(photo, verdict("rejected"), color_labels=True)
    xmp.write_labels(photo, verdict("accepted", stars=4), color_labels=True)
    sidecar = xmp.sidecar_path(photo)
    labels = xmp.read_labels(sidecar)
    assert four(labels) == (3, 4, 4, "Green")
    text = sidecar.read_text("utf-8")
    assert text.count("<digiKam:PickLabel>") == 1 and text.count("<rdf:Description") == 1

    # Without --color-labels, the color labels iqs wrote before are stale: removed.
    xmp.write_labels(photo, verdict("pending", stars=2))
    labels = xmp.read_labels(sidecar)
    assert four(labels) == (2, 2, None, None)


def test_a_label_changed_by_a_person_survives_until_overwrite(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = xmp.sidecar_path(photo)
    xmp.write_labels(photo, verdict("rejected"))
    # The person accepts it in digiKam, which rewrites the sidecar through exiv2.
    with pyexiv2.Image(str(sidecar)) as editor:
        editor.modify_xmp({"Xmp.digiKam.PickLabel": "3"})

    outcome = xmp.write_labels(photo, verdict("pending", stars=2))
    labels = xmp.read_labels(sidecar)
    assert outcome.human_kept
    assert (labels["pick"], labels["rating"]) == (3, -1)
    assert labels["iqs"]["label"] == "pending" and not labels["by_iqs"]

    outcome = xmp.write_labels(photo, verdict("pending", stars=2), overwrite=True)
    labels = xmp.read_labels(sidecar)
    assert not outcome.human_kept and (labels["pick"], labels["rating"]) == (2, 2)
    assert labels["by_iqs"]


@needs_exiftool
def test_utf16_sidecar_is_merged_into_utf8(tmp_path):
    # exiv2 (digiKam, darktable) cannot read UTF-16 sidecars: iqs writes them back as UTF-8.
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = xmp.sidecar_path(photo)
    text = (DATA / "darktable.xmp").read_text("utf-8")
    text = text.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    sidecar.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    before = exiftool(sidecar)[0]

    xmp.write_labels(photo, verdict("rejected"), overwrite=True)

    data = sidecar.read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "darktable:history" in data.decode("utf-8")
    after = exiftool(sidecar)[0]
    assert foreign(after) == foreign(before)
    assert (after["XMP-digiKam:PickLabel"], after["XMP-xmp:Rating"]) == (1, -1)


def test_empty_existing_sidecar_becomes_a_new_packet(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    xmp.sidecar_path(photo).write_bytes(b"")
    outcome = xmp.write_labels(photo, verdict("accepted", stars=5))
    assert not outcome.created
    assert xmp.read_labels(outcome.target)["pick"] == 3


@needs_exiftool
def test_names_with_spaces_and_non_ascii(tmp_path):
    photo = make_photo(tmp_path / "Été 2024" / "IMG 0001 – Zoë.jpg")
    outcome = xmp.write_labels(photo, verdict("rejected", model="modèle ü"))
    assert outcome.target.name == "IMG 0001 – Zoë.jpg.xmp"
    tags = exiftool(outcome.target)[0]
    assert tags["XMP-digiKam:PickLabel"] == 1 and tags["XMP-iqs:Model"] == "modèle ü"
    outcome = xmp.write_labels(photo, verdict("rejected"), in_file=True)
    assert exiftool(photo)[0]["XMP-xmp:Rating"] == -1


# ---------------------------------------------------------------------------------------------
# In-file XMP


@needs_exiftool
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_in_file_labels_leave_the_pixels_alone(tmp_path, suffix):
    photo = make_photo(tmp_path / f"a{suffix}")
    pixels = Image.open(photo).tobytes()

    outcome = xmp.write_labels(photo, verdict("accepted", stars=4), in_file=True, color_labels=True)

    assert outcome.in_file and outcome.target == photo
    assert not xmp.sidecar_path(photo).exists()
    tags = exiftool(photo)[0]
    assert (tags["XMP-digiKam:PickLabel"], tags["XMP-xmp:Rating"], tags["XMP-xmp:Label"]) == (
        3, 4, "Green")
    assert tags["XMP-iqs:Label"] == "accepted"
    assert Image.open(photo).tobytes() == pixels
    assert leftovers(tmp_path) == []


def test_in_file_keeps_a_rating_set_in_the_camera(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    with pyexiv2.Image(str(photo)) as image:
        image.modify_xmp({"Xmp.xmp.Rating": "5", "Xmp.dc.subject": ["holiday"]})
    outcome = xmp.write_labels(photo, verdict("rejected"), in_file=True)
    labels = xmp.read_labels(photo)
    assert outcome.human_kept and labels["rating"] == 5 and labels["pick"] is None
    with pyexiv2.Image(str(photo)) as image:
        assert image.read_xmp()["Xmp.dc.subject"] == ["holiday"]


def test_in_file_refuses_broken_images(shared_data, tmp_path):
    bad = sorted(p for p in (shared_data / "bad-inputs").iterdir()
                 if p.suffix.lower() in (".jpg", ".png", ".webp", ".tif", ".tiff"))
    assert bad
    for source in bad:
        photo = tmp_path / source.name
        shutil.copyfile(source, photo)
        original = photo.read_bytes()
        try:
            outcome = xmp.write_labels(photo, verdict("rejected"), in_file=True)
        except XmpError as exc:
            assert photo.name in str(exc) and "\n" not in str(exc)
            assert photo.read_bytes() == original
        else:  # exiv2 could write it: then the labels must be there (a camera rating stays)
            labels = xmp.read_labels(photo)
            assert labels["iqs"]["label"] == "rejected"
            assert labels["pick"] == (None if outcome.human_kept else 1)
        assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Bad input: a clear XmpError, nothing changed


BILLION_LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
                  + b"".join(b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1)) * 10
                                                          if i > 1 else b"&lol;" * 10)
                             for i in range(1, 10))
                  + b']>\n<x:xmpmeta xmlns:x="adobe:ns:meta/">&lol9;</x:xmpmeta>\n')

BAD_SIDECARS = {
    "not XML": (b"this is not XML at all\n", "not valid XML (line 1"),
    "truncated": ((DATA / "digikam.xmp").read_bytes()[:900], "not valid XML"),
    "external entity": (
        b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
        b'"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:source>&e;</dc:source>'
        b"</rdf:Description></rdf:RDF></x:xmpmeta>", "entity attack"),
    "billion laughs": (BILLION_LAUGHS, "entity attack"),
    "undeclared entity": (b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&lol;</x:xmpmeta>',
                          "not valid XML"),
    "broken UTF-16": (codecs.BOM_UTF16_LE + "<x:xmpmeta/>".encode("utf-16-le")[:-1] + b"\x00\xd8",
                      "UTF-16"),
    "UTF-32": (codecs.BOM_UTF32_LE + "<x/>".encode("utf-32-le"), "UTF-32"),
    "no rdf:RDF": (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>', "no rdf:RDF"),
    "wrong RDF namespace": (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="x"/>'
                            b"</x:xmpmeta>", "no rdf:RDF"),
    "NUL bytes": (b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\x00\x00</x:xmpmeta>', "not valid XML"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIDECARS))
def test_bad_sidecar_is_left_untouched(tmp_path, case):
    content, message = BAD_SIDECARS[case]
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = xmp.sidecar_path(photo)
    sidecar.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(XmpError) as caught:
        xmp.write_labels(photo, verdict("rejected"))
    assert time.monotonic() - started < 2
    assert message in str(caught.value)
    assert str(sidecar) in str(caught.value)
    assert sidecar.read_bytes() == content
    assert leftovers(tmp_path) == []
    with pytest.raises(XmpError):
        xmp.read_labels(sidecar)


def test_shared_bad_input_sidecars_fail_cleanly_or_merge(shared_data, tmp_path):
    sources = sorted((shared_data / "bad-inputs").glob("*.xmp"))
    assert sources
    merged = 0
    for source in sources:
        photo = make_photo(tmp_path / (source.stem + ".jpg"))
        sidecar = xmp.sidecar_path(photo)
        shutil.copyfile(source, sidecar)
        original = sidecar.read_bytes()
        try:
            outcome = xmp.write_labels(photo, verdict("rejected"))
        except XmpError as exc:
            assert sidecar.name in str(exc) and "untouched" in str(exc)
            assert sidecar.read_bytes() == original
        else:
            merged += 1
            labels = xmp.read_labels(sidecar)
            assert labels["iqs"]["label"] == "rejected"
            assert labels["pick"] == (None if outcome.human_kept else 1)
            if shutil.which("exiftool"):
                shutil.copyfile(source, tmp_path / "before.xmp")
                before, after = exiftool(tmp_path / "before.xmp", sidecar)
                assert foreign(after) == foreign(before)
        assert leftovers(tmp_path) == []
    assert merged >= 1  # the well-formed ones (e.g. issue_1959, an IPTC test file) merge


def test_read_only_existing_sidecar_is_refused(tmp_path, monkeypatch):
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = xmp.sidecar_path(photo)
    shutil.copyfile(DATA / "digikam.xmp", sidecar)
    original = sidecar.read_bytes()
    monkeypatch.setattr(xmp_files.os, "access", lambda path, mode: False)  # root ignores chmod
    with pytest.raises(XmpError, match="read-only"):
        xmp.write_labels(photo, verdict("rejected"))
    assert sidecar.read_bytes() == original


def test_read_only_folder_gives_a_clear_error(tmp_path, monkeypatch):
    photo = make_photo(tmp_path / "a.jpg")

    real_open = os.open

    def denied(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(fsutil.os, "open", denied)
    with pytest.raises(XmpError, match="read-only for you") as caught:
        xmp.write_labels(photo, verdict("rejected"))
    assert "a.jpg.xmp" in str(caught.value)
    assert not xmp.sidecar_path(photo).exists()


def test_real_read_only_folder(user_tmp_path):
    folder = user_tmp_path / "ro"
    folder.mkdir()
    photo = make_photo(folder / "a.jpg")
    if os.geteuid() == 0:
        os.chown(photo, *unprivileged_ids())
    folder.chmod(0o555)
    result = verdict("rejected")
    try:
        with unprivileged():  # root's power over permissions would hide what a user meets
            with pytest.raises(XmpError, match="read-only for you"):
                xmp.write_labels(photo, result)
            names = sorted(p.name for p in folder.iterdir())
        assert names == ["a.jpg"]
    finally:
        folder.chmod(0o755)


def test_failed_replace_leaves_no_temp_and_the_old_sidecar(tmp_path, monkeypatch):
    photo, sidecar = photo_with_sidecar(tmp_path, "darktable.xmp")
    original = sidecar.read_bytes()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", full_disk)
    with pytest.raises(XmpError, match="disk is full"):
        xmp.write_labels(photo, verdict("rejected"), overwrite=True)
    monkeypatch.undo()
    assert sidecar.read_bytes() == original
    assert leftovers(tmp_path) == []


def test_vanished_photo(tmp_path):
    photo = make_photo(tmp_path / "gone.jpg")
    kept = make_photo(tmp_path / "gone.png")
    photo.unlink()
    with pytest.raises(XmpError, match="not found"):
        xmp.write_labels(photo, verdict("rejected"))
    assert not xmp.sidecar_path(photo).exists()

    outcomes = xmp.write_shot(verdict("rejected", files=[str(photo), str(kept)]))
    assert [o.ok for o in outcomes] == [False, True]
    assert "gone.jpg" in outcomes[0].error and "not found" in outcomes[0].error
    assert xmp.read_labels(xmp.sidecar_path(kept))["pick"] == 1


def test_no_verdict_is_a_programming_error(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    with pytest.raises(ValueError):
        xmp.write_labels(photo, ShotResult(path=str(photo), error="cannot decode"))


# ---------------------------------------------------------------------------------------------
# The journal hook


class Recorder:
    def __init__(self):
        self.calls = []

    def before_write(self, path, existed):
        self.calls.append(("before", Path(path), existed,
                           path.read_bytes() if existed else None))

    def after_write(self, path, sha256):
        self.calls.append(("after", Path(path), sha256, None))


def test_recorder_is_told_before_and_after_each_write(tmp_path):
    photo, sidecar = photo_with_sidecar(tmp_path, "digikam.xmp", name="a.jpg")
    original = sidecar.read_bytes()
    new_photo = make_photo(tmp_path / "b.jpg")
    recorder = Recorder()

    xmp.write_labels(photo, verdict("rejected"), recorder=recorder)
    xmp.write_labels(new_photo, verdict("accepted", stars=4), recorder=recorder)
    xmp.write_labels(new_photo, verdict("accepted", stars=4), recorder=recorder, in_file=True)

    kinds = [(c[0], c[1].name, c[2] if c[0] == "before" else None) for c in recorder.calls]
    assert kinds == [("before", "a.jpg.xmp", True), ("after", "a.jpg.xmp", None),
                     ("before", "b.jpg.xmp", False), ("after", "b.jpg.xmp", None),
                     ("before", "b.jpg", True), ("after", "b.jpg", None)]
    assert recorder.calls[0][3] == original  # told while the old bytes were still there
    for call in recorder.calls:
        if call[0] == "after":
            assert call[2] == hashlib.sha256(call[1].read_bytes()).hexdigest()


def test_recorder_failure_stops_the_write(tmp_path):
    photo, sidecar = photo_with_sidecar(tmp_path, "digikam.xmp")
    original = sidecar.read_bytes()

    class Broken:
        def before_write(self, path, existed):
            raise RuntimeError("journal disk full")

        def after_write(self, path, sha256):
            raise AssertionError("must not be reached")

    with pytest.raises(RuntimeError, match="journal disk full"):
        xmp.write_labels(photo, verdict("rejected"), recorder=Broken())
    assert sidecar.read_bytes() == original
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fixture, foreign_key", [
    ("darktable.xmp", "Xmp.darktable.history[2]/darktable:operation"),
    ("lightroom.xmp", "Xmp.crs.WhiteBalance"),
    ("digikam.xmp", "Xmp.digiKam.TagsList"),
])
def test_exiv2_reads_the_merged_sidecar_like_digikam_and_darktable(tmp_path, fixture, foreign_key):
    # digiKam and darktable read sidecars through exiv2: it must see iqs's extra rdf:Description.
    photo, sidecar = photo_with_sidecar(tmp_path, fixture)
    with pyexiv2.Image(str(sidecar)) as reader:
        before = reader.read_xmp()[foreign_key]
    xmp.write_labels(photo, verdict("rejected"), overwrite=True, color_labels=True)
    with pyexiv2.Image(str(sidecar)) as reader:
        tags = reader.read_xmp()
    assert tags["Xmp.digiKam.PickLabel"] == "1" and tags["Xmp.xmp.Rating"] == "-1"
    assert tags["Xmp.digiKam.ColorLabel"] == "1" and tags["Xmp.xmp.Label"] == "Red"
    assert tags["Xmp.iqs.label"] == "rejected"
    assert tags[foreign_key] == before


def test_a_color_label_alone_does_not_stop_pick_and_rating(tmp_path):
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = xmp.sidecar_path(photo)
    sidecar.write_bytes(
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/'
        b'1.0/" xmp:Label="Blue"/></rdf:RDF></x:xmpmeta>')
    outcome = xmp.write_labels(photo, verdict("rejected"))
    assert not outcome.human_kept
    assert four(xmp.read_labels(sidecar)) == (1, -1, None, "Blue")
    # With --color-labels the person's Blue is a judgement iqs keeps (all labels stay).
    outcome = xmp.write_labels(photo, verdict("accepted", stars=4), color_labels=True)
    assert outcome.human_kept
    assert four(xmp.read_labels(sidecar)) == (1, -1, None, "Blue")
