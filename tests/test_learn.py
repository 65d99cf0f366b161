"""`iqs learn`: a personal model from a person's own labels (iqs_cli/learn.py, personal.py).

The "person" here rejects every photo with a strong red cast, a rule the models do not follow
(iqs's models treat colour casts as a style, the tiny test model rejects only dark photos).
Labels are written the ways digiKam, darktable and Lightroom write them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from iqs_cli import learn as learning
from iqs_cli.card import CardError, load_card, personal_card_path
from iqs_cli.cli import app
from iqs_cli.linfit import logistic, logistic_cv, stratified_folds
from iqs_cli.xmp.labels import labels_from
from iqs_cli.xmp.packet import Packet
from tests.helpers import build_tiny_model

runner = CliRunner()

DIGIKAM = '''<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.org/ns/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
 digiKam:PickLabel="{pick}" digiKam:ColorLabel="0"/></rdf:RDF></x:xmpmeta>'''
DARKTABLE = '''<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:darktable="http://darktable.sf.net/"
 xmp:Rating="{rating}" darktable:xmp_version="5" darktable:raw_params="0" darktable:auto_presets_applied="1">
<darktable:history><rdf:Seq/></darktable:history></rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>'''
LIGHTROOM = '''<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/">
<xmp:Rating>{rating}</xmp:Rating><xmp:Label>{label}</xmp:Label><xmp:CreatorTool>Adobe Photoshop Lightroom Classic 13.0</xmp:CreatorTool>
</rdf:Description></rdf:RDF></x:xmpmeta>'''
BY_IQS = '''<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.org/ns/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
 xmlns:iqs="https://github.com/iqs-photo/iqs/ns/1.0/" digiKam:PickLabel="1" xmp:Rating="-1"
 iqs:label="rejected" iqs:writtenPickLabel="1" iqs:writtenRating="-1"/></rdf:RDF></x:xmpmeta>'''


def labels_of(text: str) -> dict:
    return labels_from(Packet(text.encode("utf-8"), "test"))


def cast_photo(path: Path, cast: bool, seed: int, size=(48, 36)) -> Path:
    """A bright photo-like image; with `cast`, a strong red cast."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.uniform(120, 190) + np.linspace(-25, 25, w)[None, :, None]
    pixels = base + rng.normal(0, 10, (h, w, 3)) + rng.uniform(-15, 15, 3)
    if cast:
        pixels += np.array([55.0, -10.0, -55.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def labelled_library(root: Path, per_style: int = 40, seed: int = 0) -> dict:
    """Photos labelled by a person who rejects red casts, a third each as digiKam, darktable
    and Lightroom write labels, plus photos whose labels iqs wrote and a darktable folder
    nobody culled (only darktable's default 1 star). Returns the expected counts."""
    rng = np.random.default_rng(seed)
    counts = {"rejected": 0, "keeper": 0}
    n = 0
    for style in ("digikam", "darktable", "lightroom"):
        for i in range(per_style):
            cast = bool(rng.random() < 0.5)
            photo = cast_photo(root / style / f"IMG_{n:04d}.jpg", cast, seed=1000 * seed + n)
            n += 1
            counts["rejected" if cast else "keeper"] += 1
            if style == "digikam":
                Path(f"{photo}.xmp").write_text(DIGIKAM.format(pick=1 if cast else 3))
            elif style == "darktable":  # darktable's default 1 star for keepers: a culled folder
                Path(f"{photo}.xmp").write_text(DARKTABLE.format(rating=-1 if cast else 1))
            else:
                photo.with_suffix(".xmp").write_text(
                    LIGHTROOM.format(rating=-1 if cast else int(rng.integers(2, 6)),
                                     label="" if cast else "Green"))
    for i in range(6):  # labels iqs wrote are not the person's
        photo = cast_photo(root / "scored" / f"IQS_{i}.jpg", cast=True, seed=90000 + i)
        Path(f"{photo}.xmp").write_text(BY_IQS)
    for i in range(6):  # imported into darktable, never culled: 1 star says nothing
        photo = cast_photo(root / "imported" / f"DT_{i}.jpg", cast=False, seed=91000 + i)
        Path(f"{photo}.xmp").write_text(DARKTABLE.format(rating=1))
    cast_photo(root / "unlabelled" / "plain.jpg", cast=False, seed=92000)
    return counts


@pytest.fixture(scope="module")
def features_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("fmodel"), name="tinyf", features=True)


# ---------------------------------------------------------------------------------------------
# Whose label is what


@pytest.mark.parametrize("text, kind", [
    (DIGIKAM.format(pick=1), "rejected"),
    (DIGIKAM.format(pick=2), "keeper"),
    (DIGIKAM.format(pick=3), "keeper"),
    (DIGIKAM.format(pick=0), None),
    (DARKTABLE.format(rating=-1), "rejected"),
    (DARKTABLE.format(rating=3), "keeper"),
    (DARKTABLE.format(rating=0), None),
    (LIGHTROOM.format(rating=-1, label=""), "rejected"),
    (LIGHTROOM.format(rating=4, label="Green"), "keeper"),
    (LIGHTROOM.format(rating=0, label="Red"), None),  # a color label alone is no verdict
    (BY_IQS, None),  # iqs wrote it
])
def test_the_person_s_label_is_read_the_way_each_application_writes_it(text, kind):
    label = learning.label_from(labels_of(text))
    assert (label.kind if label else None) == kind


def test_darktable_s_default_star_is_marked_as_such():
    label = learning.label_from(labels_of(DARKTABLE.format(rating=1)))
    assert label.kind == "keeper" and label.darktable_default
    assert not learning.label_from(labels_of(LIGHTROOM.format(rating=1, label=""))).darktable_default


def test_a_person_s_change_to_a_label_iqs_wrote_is_theirs():
    text = BY_IQS.replace('digiKam:PickLabel="1"', 'digiKam:PickLabel="3"')
    assert learning.label_from(labels_of(text)).kind == "keeper"


# ---------------------------------------------------------------------------------------------
# The numpy fits


def test_numpy_logistic_reaches_the_optimum_training_s_torch_fit_reaches():
    torch = pytest.importorskip("torch")
    from iqs_training.headfit import _logistic

    rng = np.random.default_rng(3)
    z = rng.normal(size=(80, 200))
    y = (z @ rng.normal(size=200) * 0.2 + rng.normal(size=80) > 0).astype(float)
    lam = 0.01
    w, b = logistic(z, y, lam)
    wt, bt = _logistic(torch.from_numpy(z), torch.from_numpy(y[:, None]), lam, False,
                       iterations=500)

    def objective(w, b):
        s = z @ w + b
        return np.mean(np.logaddexp(0, s) - y * s) + lam * w @ w

    assert objective(w, b) <= objective(wt.numpy()[:, 0], float(bt)) + 1e-9
    assert np.abs(w - wt.numpy()[:, 0]).max() < 1e-3


def test_cross_validation_picks_a_penalty_and_gives_out_of_fold_probabilities():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(120, 30))
    z[:, 0] *= 4  # the signal stands out from the 29 noise features
    y = (z[:, 0] > 0).astype(float)
    folds = stratified_folds(y, 5, seed=0)
    assert sum(f.sum() for f in folds) == 120 and all(abs(f.sum() - 24) <= 1 for f in folds)
    assert all(abs(y[f].mean() - 0.5) < 0.15 for f in folds)
    fit = logistic_cv(z, y, (1e-3, 1e-1, 10.0), folds)
    assert fit["lambda"] in (1e-3, 1e-1) and fit["cv_loss"][10.0] > fit["cv_loss"][fit["lambda"]]
    assert ((fit["oof"] >= 0.5) == y.astype(bool)).mean() > 0.9


def test_the_threshold_keeps_the_share_of_rejected_keepers_under_the_limit():
    keepers = np.linspace(0.0, 0.99, 100)  # one keeper at each level
    assert learning.choose_threshold(keepers, 0.05) == 0.95
    assert learning.choose_threshold(keepers * 0.5, 0.05) == 0.5
    assert learning.choose_threshold(np.zeros(10), 0.0) == 0.05


# ---------------------------------------------------------------------------------------------
# The command


def records(output: str) -> dict:
    return {Path(r["path"]).name: r for r in map(json.loads, output.splitlines())}


def test_learn_follows_the_person_s_rule_on_photos_it_never_saw(tmp_path, features_model):
    library = tmp_path / "library"
    expected = labelled_library(library)
    result = runner.invoke(app, ["learn", str(library), "--model", str(features_model),
                                 "--name", "mine", "--min-labels", "40", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels"] == {**expected, "unlabelled": 13, "failed": 0}
    assert report["label_sources"]["digiKam pick label Rejected"] > 0
    assert report["held_out"]["personal"]["accuracy"] >= 0.9
    assert report["held_out"]["personal"]["keepers_rejected"] <= 0.1
    assert report["held_out"]["base"]["rejects_caught"] == 0  # the tiny model rejects dark photos
    assert personal_card_path("mine").is_file()

    held_out = tmp_path / "new"
    for i in range(20):
        cast_photo(held_out / f"cast_{i}.jpg", cast=True, seed=50000 + i)
        cast_photo(held_out / f"plain_{i}.jpg", cast=False, seed=60000 + i)
    mine = runner.invoke(app, ["score", str(held_out), "--model", "mine", "-f", "jsonl"])
    base = runner.invoke(app, ["score", str(held_out), "--model", str(features_model), "-f", "jsonl"])
    assert mine.exit_code == 0 and base.exit_code == 0, mine.output + base.output
    mine, base = records(mine.stdout), records(base.stdout)
    cast_rejected = sum(mine[f"cast_{i}.jpg"]["label"] == "rejected" for i in range(20))
    plain_rejected = sum(mine[f"plain_{i}.jpg"]["label"] == "rejected" for i in range(20))
    assert cast_rejected >= 18 and plain_rejected <= 2
    assert all(r["label"] != "rejected" for r in base.values())
    rejected = next(r for r in mine.values() if r["label"] == "rejected")
    assert rejected["reasons"] == ["like_your_rejects"] and rejected["model"] == "mine"

    looked = runner.invoke(app, ["score", str(held_out), "--model", "mine", "--focus-check", "all"])
    assert "takes no second look" in " ".join(looked.output.split())
    culled = runner.invoke(app, ["cull", str(held_out), "--model", "mine", "--move-rejected"])
    assert culled.exit_code == 0, culled.output
    moved = {p.name for p in (held_out / "_rejected").iterdir() if p.suffix == ".jpg"}
    assert moved == {name for name, r in mine.items() if r["label"] == "rejected"}


def test_too_few_labels_are_refused_with_the_numbers(tmp_path, features_model):
    labelled_library(tmp_path / "lib", per_style=10)
    result = runner.invoke(app, ["learn", str(tmp_path / "lib"), "--model", str(features_model)])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "needs at least 50 of each" in message and "you rejected" in message
    assert not personal_card_path("mine").exists()


def test_a_model_without_features_scores_but_cannot_learn(tmp_path, tiny_model):
    labelled_library(tmp_path / "lib", per_style=20)
    result = runner.invoke(app, ["learn", str(tmp_path / "lib"), "--model", str(tiny_model),
                                 "--min-labels", "10"])
    assert result.exit_code == 2
    assert "no 'features' output" in " ".join(result.output.split())
    scored = runner.invoke(app, ["score", str(tmp_path / "lib"), "--model", str(tiny_model),
                                 "-f", "jsonl"])
    assert scored.exit_code == 0


def test_a_personal_model_refuses_a_base_model_that_changed(tmp_path):
    base_dir = tmp_path / "base"
    model = build_tiny_model(base_dir, name="tinyf", features=True)
    labelled_library(tmp_path / "lib", per_style=20)
    result = runner.invoke(app, ["learn", str(tmp_path / "lib"), "--model", str(model),
                                 "--name", "taste", "--min-labels", "20"])
    assert result.exit_code == 0, result.output
    assert load_card("taste").personal["base"]["path"] == str(model.resolve())
    build_tiny_model(base_dir, name="tinyf", features=True, version="0.0.2",
                     attributes=["blur"])  # same name, other weights
    scored = runner.invoke(app, ["score", str(tmp_path / "lib"), "--model", "taste"])
    assert scored.exit_code == 2
    said = " ".join(scored.output.split())
    assert "changed since `iqs learn` made it" in said and "iqs learn YOUR-FOLDERS --name taste" in said


def test_names_that_are_not_plain_or_belong_to_a_shipped_model_are_refused(tmp_path):
    for name in ("../evil", "iqs-base", ""):
        result = runner.invoke(app, ["learn", str(tmp_path), "--name", name])
        assert result.exit_code == 2, (name, result.output)


def test_a_damaged_personal_head_is_a_clear_error(tmp_path, features_model):
    labelled_library(tmp_path / "lib", per_style=20)
    assert runner.invoke(app, ["learn", str(tmp_path / "lib"), "--model", str(features_model),
                               "--min-labels", "20"]).exit_code == 0
    path = personal_card_path("mine")
    card = json.loads(path.read_text())
    card["personal"]["head"]["size"] = 7
    path.write_text(json.dumps(card))
    with pytest.raises(CardError, match="head is damaged"):
        from iqs_cli.engine import ModelSession

        ModelSession(load_card("mine"))


# ---------------------------------------------------------------------------------------------
# With the shipped model: a rule it does not follow (it treats black and white as a style)


def test_the_shipped_model_s_features_learn_a_rule_the_shipped_model_does_not_follow(
        tmp_path, shared_data):
    photos = sorted((shared_data / "clive" / "images").glob("*.jpg"))[:130]
    library, new = tmp_path / "library", tmp_path / "new"

    def place(source: Path, target: Path, monochrome: bool) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(source).convert("RGB")
        (image.convert("L").convert("RGB") if monochrome else image).save(target, quality=90)

    for i, source in enumerate(photos[:110]):  # the person rejects every black-and-white photo
        target = library / ("digikam", "darktable", "lightroom")[i % 3] / f"IMG_{i:04d}.jpg"
        mono = i % 2 == 0
        place(source, target, mono)
        if i % 3 == 0:
            Path(f"{target}.xmp").write_text(DIGIKAM.format(pick=1 if mono else 3))
        elif i % 3 == 1:
            Path(f"{target}.xmp").write_text(DARKTABLE.format(rating=-1 if mono else 1))
        else:
            target.with_suffix(".xmp").write_text(LIGHTROOM.format(rating=-1 if mono else 4,
                                                                   label=""))
    for i, source in enumerate(photos[110:]):
        place(source, new / f"{'mono' if i % 2 == 0 else 'color'}_{i}.jpg", i % 2 == 0)

    learned = runner.invoke(app, ["learn", str(library), "--json"])
    assert learned.exit_code == 0, learned.output
    report = json.loads(learned.stdout)
    assert report["labels"]["rejected"] == 55 and report["labels"]["keeper"] == 55
    assert report["held_out"]["personal"]["rejects_caught"] >= 0.9
    assert report["held_out"]["personal"]["keepers_rejected"] <= 0.1
    assert report["held_out"]["base"]["rejects_caught"] <= 0.5

    mine = records(runner.invoke(app, ["score", str(new), "--model", "mine", "-f", "jsonl"]).stdout)
    shipped = records(runner.invoke(app, ["score", str(new), "-f", "jsonl"]).stdout)

    def rejected(results, kind):
        return sum(r["label"] == "rejected" for name, r in results.items() if name.startswith(kind))

    assert rejected(mine, "mono") >= 9 and rejected(mine, "color") <= 2  # 10 of each
    assert rejected(shipped, "mono") <= 6


def test_labels_inside_the_photo_count_and_a_sidecar_comes_first(tmp_path):
    import pyexiv2

    from iqs_cli.discover import Shot

    photo = cast_photo(tmp_path / "in-file.jpg", cast=True, seed=7)
    with pyexiv2.Image(str(photo)) as image:  # as digiKam writes labels into a JPEG
        image.modify_xmp({"Xmp.digiKam.PickLabel": "1"})
    label, problem = learning.person_label(Shot(photo, [photo]))
    assert problem is None and label.kind == "rejected"
    Path(f"{photo}.xmp").write_text(DIGIKAM.format(pick=3))  # digiKam reads the sidecar first
    assert learning.person_label(Shot(photo, [photo]))[0].kind == "keeper"
    Path(f"{photo}.xmp").write_text("<x:xmpmeta")  # a broken sidecar: said, and the photo's own
    label, problem = learning.person_label(Shot(photo, [photo]))
    assert label.kind == "rejected" and problem and str(photo) in problem
