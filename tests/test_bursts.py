"""Bursts and near-duplicates (issue 16): capture time and descriptor, grouping, ranking, the
verdict of non-best frames, and what score / cull / XMP / JSON / CSV / the table make of it."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from iqs_cli import bursts, capture, workflow, xmp
from iqs_cli.cache import valid_outputs
from iqs_cli.cli import app
from iqs_cli.report import results_table
from iqs_cli.result import ShotResult
from iqs_cli.vocabulary import DUPLICATE
from iqs_cli.workflow import ScoreOptions
from tests.helpers import tree

runner = CliRunner()
T0 = datetime(2026, 6, 13, 14, 0, 0, tzinfo=timezone.utc).timestamp()


# --- making bursts ------------------------------------------------------------------------------


def scene(seed: int, size=(360, 240)) -> Image.Image:
    """A textured scene of its own: coloured rectangles on a gradient, fine noise on top."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.zeros((h, w, 3), np.float32) + rng.uniform(60, 160, 3)
    pixels += np.linspace(-40, 40, w)[None, :, None] * rng.choice([-1, 1])
    for _ in range(8):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 30)
        x1, y1 = x0 + rng.integers(30, w // 2), y0 + rng.integers(20, h // 2)
        pixels[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 12, (h, w, 1))  # fine texture: what focus is judged by
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def frame(base: Image.Image, dx: int = 0, dy: int = 0, ev: float = 0.0, motion: int = 0,
          defocus: float = 0.0) -> Image.Image:
    """One frame of a burst: `base` cropped to 92 %, shifted by (dx, dy), exposed `ev` stops
    off, smeared `motion` px sideways or with its centre out of focus."""
    w, h = base.size
    cw, ch = int(w * 0.92), int(h * 0.92)
    left, top = (w - cw) // 2 + dx, (h - ch) // 2 + dy
    image = base.crop((left, top, left + cw, top + ch))
    if ev:
        rgb = np.asarray(image, np.float32) / 255
        image = Image.fromarray((np.clip((rgb ** 2.2 * 2 ** ev) ** (1 / 2.2), 0, 1) * 255)
                                .astype(np.uint8))
    if motion:
        rgb = np.asarray(image, np.float32)
        image = Image.fromarray((sum(np.roll(rgb, s, axis=1) for s in range(motion)) / motion)
                                .astype(np.uint8))
    if defocus:
        mask = Image.new("L", image.size, 0)
        mask.paste(255, (cw // 5, ch // 5, cw * 4 // 5, ch * 4 // 5))
        image = Image.composite(image.filter(ImageFilter.GaussianBlur(defocus)), image, mask)
    return image


def save(image: Image.Image, path: Path, taken: float | None) -> Path:
    """A JPEG as a camera writes it: EXIF DateTimeOriginal + SubSecTimeOriginal (hundredths)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if taken is not None:
        moment = datetime.fromtimestamp(taken, tz=timezone.utc)
        ifd = exif.get_ifd(0x8769)
        ifd[0x9003] = moment.strftime("%Y:%m:%d %H:%M:%S")
        ifd[0x9291] = f"{moment.microsecond // 10000:02d}"
    image.save(path, quality=95, exif=exif)
    return path


def burst(folder: Path, seed: int, start: float, prefix: str = "IMG_", clean_at: int = 2,
          step: float = 0.3) -> list[Path]:
    """Five frames of one scene `step` s apart: small shifts and exposure steps; one clean
    frame (the `clean_at`th), the others smeared, defocused or both."""
    base = scene(seed)
    defects = [dict(motion=9), dict(defocus=3.0), dict(motion=5, ev=1 / 3),
               dict(defocus=1.5, ev=-1 / 3)]
    shifts = [(0, 0), (4, -3), (-5, 2), (3, 5), (-2, -4)]
    paths = []
    for i in range(5):
        kind = {} if i == clean_at else defects.pop(0)
        image = frame(base, *shifts[i], **kind)
        paths.append(save(image, folder / f"{prefix}{seed:02d}{i}.JPG", start + i * step))
    return paths


def look(image: Image.Image) -> str:
    return capture.descriptor(image)


# --- capture time -------------------------------------------------------------------------------


def test_capture_time_is_exif_date_and_hundredths(tmp_path):
    photo = save(scene(1), tmp_path / "a.jpg", T0 + 12.34)
    assert capture.exif_time(photo) == pytest.approx(T0 + 12.34)
    assert capture.capture_time(photo) == pytest.approx(T0 + 12.34)
    assert capture.taken_when(photo)[1] == "exif"


def test_capture_time_without_exif_is_the_file_date_on_the_local_clock(tmp_path):
    photo = tmp_path / "a.png"
    scene(1).save(photo)
    os.utime(photo, (1_750_000_000, 1_750_000_000))
    local = datetime.fromtimestamp(1_750_000_000).replace(tzinfo=timezone.utc).timestamp()
    assert capture.exif_time(photo) is None
    assert capture.taken_when(photo) == (local, "file")


@pytest.mark.parametrize("date, subsec, expected", [
    ("2026:03:01 14:22:33", "5", 0.5), ("2026-03-01 14:22:33", "045", 0.045),
    ("2026:03:01 14:22:33", None, 0.0), ("0000:00:00 00:00:00", None, None),
    ("    :  :     :  :  ", None, None), ("2026:13:01 14:22:33", None, None), (None, "45", None),
])
def test_exif_dates_are_read_leniently_and_nonsense_is_no_date(date, subsec, expected):
    seconds = capture._exif_seconds(date, subsec)
    if expected is None:
        assert seconds is None
    else:
        whole = datetime(2026, 3, 1, 14, 22, 33, tzinfo=timezone.utc).timestamp()
        assert seconds == pytest.approx(whole + expected)


def test_a_file_exifread_cannot_parse_has_no_exif_date_and_says_nothing(tmp_path, capfd):
    junk = tmp_path / "x.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00garbage" + bytes(64))
    assert capture.exif_time(junk) is None
    assert capfd.readouterr().err == ""


# --- the descriptor -----------------------------------------------------------------------------


def test_frames_of_one_scene_are_alike_through_shifts_exposure_steps_and_blur():
    base = scene(3)
    clean = look(frame(base))
    for kind in (dict(dx=6, dy=-4), dict(ev=0.67), dict(ev=-0.67, dx=-3), dict(motion=15),
                 dict(defocus=4.0, dy=5)):
        assert capture.alike(clean, look(frame(base, **kind))), kind


def test_different_scenes_a_bracket_and_blank_frames_of_other_colours_are_not_alike():
    a = look(frame(scene(3)))
    assert len(bytes.fromhex(a)) == capture.DESCRIPTOR_BYTES == 96
    for seed in range(4, 12):
        assert not capture.alike(a, look(frame(scene(seed)))), seed
    assert not capture.alike(a, look(frame(scene(3), ev=2.0)))  # an HDR bracket, 2 stops over
    grey, red = Image.new("RGB", (64, 48), (128, 128, 128)), Image.new("RGB", (64, 48), (200, 40, 40))
    assert capture.alike(look(grey), look(grey.copy()))  # two lens-cap frames are one thing
    assert not capture.alike(look(grey), look(red))
    assert not capture.alike(look(grey), a)  # blank against a scene


def test_descriptors_in_the_cache_are_checked():
    outputs = {"probabilities": {"rejected": 0.1, "pending": 0.5, "accepted": 0.4}, "mos": 50.0}
    good = look(scene(1))
    assert valid_outputs({**outputs, "descriptor": good, "taken": T0})
    assert valid_outputs({**outputs, "descriptor": good, "taken": None})
    assert valid_outputs({**outputs, "descriptor": good, "taken": T0, "clock": "exif"})
    for bad in ({"descriptor": good[:-2]}, {"descriptor": "zz" * 96}, {"descriptor": 7},
                {"descriptor": good.upper()}, {"taken": "today"}, {"taken": math.inf},
                {"taken": True}, {"clock": "sundial"}, {"clock": 1}):
        assert not valid_outputs({**outputs, **bad}), bad


# --- grouping -----------------------------------------------------------------------------------


def shot(name: str, image: Image.Image, taken: float | None, label="pending", mos=50.0,
         clock="exif"):
    return ShotResult(path=f"/card/{name}", files=[f"/card/{name}"], label=label, mos=mos, stars=3,
                      descriptor=look(image), taken=taken, clock=clock if taken is not None else None)


def names(groups) -> list[list[str]]:
    return [sorted(os.path.basename(r.path) for r in g) for g in groups]


def test_two_scenes_a_second_apart_are_two_groups_and_a_lone_shot_is_none():
    a, b, c = scene(1), scene(2), scene(3)
    results = [shot("a1", frame(a), T0), shot("a2", frame(a, dx=4, motion=7), T0 + 0.3),
               shot("b1", frame(b), T0 + 1.0), shot("a3", frame(a, ev=0.33), T0 + 1.2),
               shot("b2", frame(b, dy=3), T0 + 1.4), shot("c1", frame(c), T0 + 1.8)]
    assert names(bursts.find_groups(results, gap=3.0)) == [["a1", "a2", "a3"], ["b1", "b2"]]


def test_a_tripod_series_minutes_apart_groups_only_with_similar_only():
    a = scene(1)
    results = [shot("t1", frame(a), T0), shot("t2", frame(a, dx=2), T0 + 120),
               shot("t3", frame(a, ev=-0.3), T0 + 300), shot("x", frame(scene(9)), T0 + 200)]
    assert bursts.find_groups(results, gap=3.0) == []
    assert names(bursts.find_groups(results, gap=3.0, similar_only=True)) == [["t1", "t2", "t3"]]
    assert names(bursts.find_groups(results, gap=130)) == [["t1", "t2"]]


def test_shots_without_time_or_look_and_failed_shots_stay_alone():
    a = scene(1)
    results = [shot("a1", frame(a), T0), shot("a2", frame(a), None),
               shot("a3", frame(a), T0 + 0.2), ShotResult(path="/card/bad", error="corrupt")]
    results[2].descriptor = None
    assert bursts.find_groups(results, gap=3.0) == []
    assert names(bursts.find_groups(results, gap=3.0, similar_only=True)) == [["a1", "a2"]]


def test_a_slow_pan_chains_from_frame_to_frame():
    wide = scene(5, size=(900, 240))
    # 15 px of 330 a frame (4.5 %): a pan at a burst's pace; the ends are 285 px apart.
    results = [shot(f"p{i}", wide.crop((i * 15, 0, i * 15 + 330, 220)), T0 + i * 0.25)
               for i in range(20)]
    first, last = results[0].descriptor, results[-1].descriptor
    assert not capture.alike(first, last)  # the ends show different things ...
    assert names(bursts.find_groups(results, gap=1.0)) == [[f"p{i}" for i in sorted(range(20), key=str)]]


# --- ranking and marking ------------------------------------------------------------------------


@pytest.mark.parametrize("clean_at", [0, 2, 4])
def test_the_clean_frame_ranks_first_whatever_the_exposure_and_order(tmp_path, clean_at):
    paths = burst(tmp_path, seed=7, start=T0, clean_at=clean_at)
    scores = bursts.focus_scores([bursts.load_profile(str(p)) for p in paths])
    assert int(np.argmax(scores)) == clean_at
    group = [ShotResult(path=str(p), label="accepted", mos=60.0 + i, stars=4)
             for i, p in enumerate(paths)]
    assert bursts.rank(group, scores)[0] is group[clean_at]


def test_frames_as_sharp_as_each_other_are_told_apart_by_the_model():
    group = [ShotResult(path=f"/c/{i}", label="accepted", mos=mos) for i, mos in
             enumerate([55.0, 70.0, 90.0])]
    assert bursts.rank(group, [1.0, 1.01, 0.5])[0] is group[1]  # 0 and 1 tie; 2 is soft
    assert [r.path for r in bursts.rank(group, [1.0, 1.0, 1.0])] == ["/c/2", "/c/1", "/c/0"]


def test_a_frame_the_model_rejects_is_not_the_best_while_another_is_kept():
    group = [ShotResult(path="/c/0", label="rejected", mos=20.0),
             ShotResult(path="/c/1", label="pending", mos=40.0)]
    assert bursts.rank(group, [2.0, 1.0])[0] is group[1]
    both = [ShotResult(path="/c/0", label="rejected", mos=20.0),
            ShotResult(path="/c/1", label="rejected", mos=30.0)]
    assert bursts.rank(both, [2.0, 1.0])[0] is both[0]


def test_a_frame_that_cannot_be_decoded_again_ranks_last(tmp_path):
    paths = burst(tmp_path, seed=7, start=T0)
    profiles = [bursts.load_profile(str(p)) for p in paths] + [bursts.load_profile(str(tmp_path / "gone.jpg"))]
    scores = bursts.focus_scores(profiles)
    assert scores[-1] == -math.inf and int(np.argmax(scores)) == 2


def test_non_best_frames_are_at_most_pending_and_named_duplicates():
    ordered = [ShotResult(path="/c/best", label="accepted", stars=5, reasons=[]),
               ShotResult(path="/c/2", label="accepted", stars=5, reasons=[]),
               ShotResult(path="/c/3", label="pending", stars=2, reasons=["noise"]),
               ShotResult(path="/c/4", label="rejected", stars=1, reasons=["blur"])]
    bursts.mark(ordered, 7)
    assert [(r.group, r.group_rank, r.group_best) for r in ordered] == [
        (7, i, "/c/best") for i in range(1, 5)]
    assert [(r.label, r.stars, r.reasons) for r in ordered] == [
        ("accepted", 5, []), ("pending", 3, [DUPLICATE]), ("pending", 2, ["noise", DUPLICATE]),
        ("rejected", 1, ["blur"])]  # rejected on its own: its reasons say why
    again = [ShotResult(path="/c/best", label="pending", stars=3),
             ShotResult(path="/c/2", label="accepted", stars=4)]
    bursts.mark(again, 1, reject_duplicates=True)
    assert (again[1].label, again[1].stars, again[1].reasons) == ("rejected", 1, [DUPLICATE])
    assert again[0].label == "pending"


# --- score and cull -----------------------------------------------------------------------------


@pytest.fixture
def card(tmp_path):
    """Two bursts (5 frames each, 0.3 s apart, the clean frame third), an unrelated photo
    shot within the gap between them, and a tripod series of the first scene 2 minutes later."""
    folder = tmp_path / "card"
    burst(folder, seed=1, start=T0)
    save(scene(50), folder / "IMG_0500.JPG", T0 + 2.0)
    burst(folder, seed=2, start=T0 + 3.0)
    base = scene(1)
    for i in range(3):
        save(frame(base, dx=i, dy=-i, defocus=2.5 if i else 0.0), folder / f"IMG_09{i}.JPG",
             T0 + 120 + 1.5 * i)
    return folder


def by_name(results) -> dict[str, ShotResult]:
    return {Path(r.path).name: r for r in results}


def test_score_groups_bursts_and_keeps_the_clean_frame(card, tiny_model):
    shots = workflow.find_shots([str(card)])
    run = workflow.score(shots, ScoreOptions(model=str(tiny_model)))
    results = by_name(run.results)
    groups: dict[int, list[str]] = {}
    for name, r in results.items():
        if r.group is not None:
            groups.setdefault(r.group, []).append(name)
    assert sorted(map(sorted, groups.values())) == [
        [f"IMG_01{i}.JPG" for i in range(5)], [f"IMG_02{i}.JPG" for i in range(5)],
        ["IMG_090.JPG", "IMG_091.JPG", "IMG_092.JPG"]]
    assert results["IMG_0500.JPG"].group is None and results["IMG_0500.JPG"].group_rank is None
    for best in ("IMG_012.JPG", "IMG_022.JPG", "IMG_090.JPG"):
        r = results[best]
        assert r.group_rank == 1 and r.group_best == r.path and DUPLICATE not in r.reasons
        for other in (o for o in results.values() if o.group == r.group and o is not r):
            assert other.group_best == r.path and other.group_rank > 1
            assert other.label in ("pending", "rejected")
            assert DUPLICATE in other.reasons or other.label == "rejected"

    plain = workflow.score(shots, ScoreOptions(model=str(tiny_model), no_bursts=True))
    assert all(r.group is None and DUPLICATE not in r.reasons for r in plain.results)
    together = workflow.score(shots, ScoreOptions(model=str(tiny_model), similar_only=True))
    first = by_name(together.results)
    # The tripod series is one group with --similar-only too; coming back to the scene of
    # burst 01x after burst 02x starts a new group (a shot looks only a few shots back).
    assert first["IMG_090.JPG"].group == first["IMG_091.JPG"].group == first["IMG_092.JPG"].group
    assert first["IMG_090.JPG"].group != first["IMG_012.JPG"].group


def test_a_cached_rerun_groups_alike_without_decoding(card, tiny_model, monkeypatch):
    shots = workflow.find_shots([str(card)])
    options = ScoreOptions(model=str(tiny_model))
    first = workflow.score(shots, options)
    from iqs_cli import scoring

    def no_decoding(self, path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(scoring.Scorer, "_decode_shot", no_decoding)
    again = workflow.score(shots, options)
    assert all(r.cached for r in again.results)
    keys = lambda run: [(r.path, r.group, r.group_rank, r.label, r.reasons) for r in run.results]
    assert keys(again) == keys(first)


def test_outputs_carry_group_rank_and_best(card, tiny_model):
    out = runner.invoke(app, ["score", str(card), "--model", str(tiny_model), "-f", "jsonl"])
    assert out.exit_code == 0, out.output
    records = {Path(r["path"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    best = records["IMG_012.JPG"]
    assert (best["group_rank"], best["group_best"]) == (1, best["path"])
    assert records["IMG_010.JPG"]["group"] == best["group"]
    assert records["IMG_010.JPG"]["group_best"] == best["path"]
    assert records["IMG_0500.JPG"]["group"] is None
    assert "descriptor" not in best and "taken" not in best

    out = runner.invoke(app, ["score", str(card), "--model", str(tiny_model), "-f", "csv"])
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out.stdout))}
    assert rows["IMG_011.JPG"]["group"] == str(best["group"])
    assert rows["IMG_011.JPG"]["group_best"] == best["path"]
    assert int(rows["IMG_011.JPG"]["group_rank"]) > 1
    assert rows["IMG_0500.JPG"]["group"] == "" and rows["IMG_0500.JPG"]["group_rank"] == ""


def test_the_table_shows_a_burst_together_best_first(card, tiny_model):
    run = workflow.score(workflow.find_shots([str(card)]), ScoreOptions(model=str(tiny_model)))
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160)
    console.print(results_table(run.results))
    lines = [line for line in console.file.getvalue().splitlines() if "IMG_01" in line]
    assert len(lines) == 5 and "┌ IMG_012.JPG" in lines[0] and "└ " in lines[-1]
    assert all("sharper frame of this burst" in line for line in lines[1:])


def test_xmp_carries_group_and_rank_and_a_person_s_label_stays(card, tiny_model):
    # A person picked a blurred frame of the first burst as accepted in digiKam before.
    (card / "IMG_010.JPG.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.org/'
        'ns/1.0/" digiKam:PickLabel="3"/></rdf:RDF></x:xmpmeta>')
    out = runner.invoke(app, ["score", str(card), "--model", str(tiny_model), "-f", "jsonl",
                              "--write-xmp"])
    assert out.exit_code == 0, out.output
    best = xmp.read_labels(card / "IMG_012.JPG.xmp")
    other = xmp.read_labels(card / "IMG_011.JPG.xmp")
    assert best["iqs"]["groupRank"] == 1 and other["iqs"]["group"] == best["iqs"]["group"]
    assert other["iqs"]["groupRank"] > 1 and other["pick"] in (1, 2)
    assert DUPLICATE in other["iqs"]["reasons"] or other["pick"] == 1
    person = xmp.read_labels(card / "IMG_010.JPG.xmp")
    assert person["pick"] == 3 and person["iqs"]["groupRank"] > 1  # theirs wins
    assert "groupRank" not in xmp.read_labels(card / "IMG_0500.JPG.xmp")["iqs"]


def test_cull_reject_duplicates_moves_them_whole_and_undo_puts_them_back(card, tiny_model):
    # A RAW beside the clean frame's JPEG of the first burst: one shot, never its own duplicate.
    (card / "IMG_012.CR2").write_bytes(b"raw of IMG_012")
    (card / "IMG_013.CR2").write_bytes(b"raw of IMG_013")
    before = tree(card)
    out = runner.invoke(app, ["cull", str(card), "--model", str(tiny_model), "--no-cache",
                              "--reject-duplicates", "--move-rejected"])
    assert out.exit_code == 0, out.output
    rejected = card / "_rejected"
    moved = sorted(p.name for p in rejected.iterdir())
    assert "IMG_012.JPG" not in moved and (card / "IMG_012.CR2").exists()
    assert {"IMG_010.JPG", "IMG_011.JPG", "IMG_013.JPG", "IMG_013.CR2", "IMG_014.JPG",
            "IMG_091.JPG", "IMG_092.JPG"} <= set(moved)
    assert "IMG_0500.JPG" not in moved and "IMG_022.JPG" not in moved
    assert runner.invoke(app, ["undo", str(card)]).exit_code == 0
    assert tree(card) == before


def test_burst_options_are_checked(card, tiny_model):
    out = runner.invoke(app, ["score", str(card), "--model", str(tiny_model), "--burst-gap", "-1"])
    assert out.exit_code == 2 and "seconds" in out.output


def test_a_wider_gap_joins_what_a_narrow_one_splits(tmp_path, tiny_model):
    folder = tmp_path / "slow"
    base = scene(4)
    for i in range(3):
        save(frame(base, dx=2 * i, motion=5 if i else 0), folder / f"S_{i}.JPG", T0 + 6 * i)
    shots = workflow.find_shots([str(folder)])
    narrow = workflow.score(shots, ScoreOptions(model=str(tiny_model)))
    wide = workflow.score(shots, ScoreOptions(model=str(tiny_model), burst_gap=10))
    assert all(r.group is None for r in narrow.results)
    assert {r.group for r in wide.results} == {wide.results[0].group} != {None}


def test_folders_are_grouped_apart_and_numbered_through_the_run(tmp_path, tiny_model):
    burst(tmp_path / "a", seed=1, start=T0)
    burst(tmp_path / "b", seed=1, start=T0)  # the same frames, copied into another folder
    run = workflow.score(workflow.find_shots([str(tmp_path)]), ScoreOptions(model=str(tiny_model)))
    by_folder = {}
    for r in run.results:
        by_folder.setdefault(Path(r.path).parent.name, set()).add(r.group)
    assert by_folder == {"a": {1}, "b": {2}}


def test_holding_a_folder_keeps_memory_to_its_results(tmp_path):
    grouper = bursts.FolderGrouper(profile=lambda path: np.ones((bursts.GRID, bursts.GRID)))
    handed = []
    for folder in ("a", "b", "c"):
        for i in range(3):
            handed += grouper.feed(ShotResult(path=f"/x/{folder}/{i}.jpg", label="pending"))
        assert len(grouper._held) == 3  # only the current folder's
    handed += grouper.flush()
    grouper.close()
    assert [r.path for r in handed] == [f"/x/{f}/{i}.jpg" for f in "abc" for i in range(3)]


def test_unrelated_photos_dated_at_one_moment_by_their_files_do_not_chain(shared_data):
    """Photos copied or exported at once carry one file date and no EXIF: time says nothing,
    and 2.6 % of pairs of unrelated photos pass the plain look test. Only a few may pair up by
    chance; none may chain into a large "burst"."""
    photos = sorted((shared_data / "clive" / "images").glob("*.jpg"))[:200]
    results = [ShotResult(path=str(p), files=[str(p)], label="pending", mos=50.0, stars=3,
                          descriptor=look(Image.open(p)), taken=T0, clock="file")
               for p in photos]
    for similar_only in (False, True):
        groups = bursts.find_groups(results, gap=3.0, similar_only=similar_only)
        assert sum(len(g) for g in groups) <= 6 and all(len(g) <= 3 for g in groups)
