"""`iqs learn`: a personal model from the labels a person already set, without torch.

1. Labels (`person_label`): the person's own pick labels and ratings, from the shot's sidecars
   (`photo.ext.xmp`, `photo.xmp`) or its own XMP. Rejected: digiKam's pick label Rejected, or
   xmp:Rating -1 (darktable, Lightroom, Bridge). A keeper: a pick label Pending / Accepted, or
   a rating of 1 star or more, except darktable's 1 star, which darktable gives every photo on
   import: it counts only in folders where the person rejected something in darktable (a
   folder they culled). Labels iqs wrote are not the person's and are skipped. Color labels
   mean different things to different people and are not used.
2. Features: the base model's pooled `features` output, from the results cache when a photo
   was looked at before (scoring.Scorer.score_with_features).
3. Fit (iqs_cli/linfit.py): L2 logistic regression, rejected vs keeper, its penalty chosen by
   stratified k-fold cross-validation on the person's photos.
4. Threshold: the lowest P(rejected) at which at most `max_keepers_rejected` of the person's
   keepers would be rejected, out of fold.
5. The truth about it (`held_out`): each fold's photos judged by a head that did not see them,
   with a threshold chosen without their labels; the base model's labels on the same photos
   beside them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

from iqs_cli import personal, xmp
from iqs_cli.cache import ResultCache
from iqs_cli.card import CardError, load_card, personal_card_path, shipped_models_dir
from iqs_cli.discover import Shot
from iqs_cli.engine import EngineError, ModelSession, default_batch
from iqs_cli.linfit import logistic_cv, lowest_threshold, stratified_folds
from iqs_cli.report import display_path
from iqs_cli.scoring import Scorer
from iqs_cli.workflow import Reporter, RunError, find_shots

REJECTED, KEEPER = "rejected", "keeper"
LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TooFewLabels(RunError):
    """Not enough of the person's rejects or keepers to learn from (the message has counts)."""


@dataclass(frozen=True)
class LearnOptions:
    name: str = "mine"
    model: Optional[str] = None  # the base model (None: the default shipped model)
    device: str = "cpu"
    batch_size: Optional[int] = None
    workers: Optional[int] = None
    focus_check: str = "rejected"  # how the base model's own labels are given (for comparison)
    recursive: bool = True
    no_cache: bool = False
    min_labels: int = 50  # of each kind
    max_keepers_rejected: float = 0.05
    folds: int = 5
    seed: int = 0


@dataclass(frozen=True)
class PersonLabel:
    kind: str  # REJECTED or KEEPER
    how: str  # where it came from, for people ("digiKam pick label", "rating -1", ...)
    darktable: bool = False  # the packet was darktable's
    darktable_default: bool = False  # a darktable 1 star: a keeper only in a culled folder


@dataclass
class LearnOutcome:
    path: Path  # the personal model's card
    counts: dict  # {"rejected": n, "keeper": n, "unlabelled": n, "failed": n}
    sources: Counter  # how the labels were set -> photos
    lambda_: float
    reject_at: float
    max_keepers_rejected: float
    held_out: dict  # {"personal": figures, "base": figures}
    base: str  # the base model, name and version
    replaced: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.path.stem, "path": str(self.path), "base": self.base,
                "labels": self.counts, "label_sources": dict(self.sources),
                "lambda": self.lambda_, "reject_at": self.reject_at,
                "max_keepers_rejected": self.max_keepers_rejected, "held_out": self.held_out,
                "replaced": self.replaced, "notes": self.notes}


# ---------------------------------------------------------------------------------------------
# The person's labels


def label_from(labels: dict) -> PersonLabel | None:
    """The person's verdict in one XMP packet's labels (xmp.read_labels), or None."""
    person = xmp.set_by_person(labels)
    pick, rating = person.get("pick"), person.get("rating")
    darktable = bool(labels.get("darktable"))
    if pick == 1:
        return PersonLabel(REJECTED, "digiKam pick label Rejected")
    if pick in (2, 3):
        return PersonLabel(KEEPER, f"digiKam pick label {'Pending' if pick == 2 else 'Accepted'}")
    if isinstance(rating, (int, float)):
        if rating < 0:
            return PersonLabel(REJECTED, "rating -1 (rejected)", darktable=darktable)
        if rating >= 1:
            return PersonLabel(KEEPER, "rating 1-5 stars", darktable=darktable,
                               darktable_default=darktable and rating == 1)
    return None


def _sources(photo: Path) -> list[Path]:
    """Where a photo's labels may be: its sidecars (both names), then its own XMP."""
    found = xmp.existing_sidecars(photo)
    if xmp.writes_in_file(photo, True):
        found.append(photo)
    return found


def person_label(shot: Shot) -> tuple[PersonLabel | None, str | None]:
    """(the person's label of the shot or None, the first problem reading its XMP or None).
    The first source with a label wins, sidecars before the photo's own XMP (digiKam and
    darktable ignore embedded XMP when a sidecar exists)."""
    problem = None
    for photo in shot.files:
        for source in _sources(Path(photo)):
            try:
                labels = xmp.read_labels(source)
            except xmp.XmpError as exc:
                problem = problem or str(exc)
                continue
            label = label_from(labels)
            if label is not None:
                return label, problem
    return None, problem


# ---------------------------------------------------------------------------------------------
# Figures


def choose_threshold(keeper_probabilities: np.ndarray, max_rate: float) -> float:
    """The lowest THRESHOLDS value at which at most `max_rate` of the keepers are rejected."""
    return lowest_threshold(keeper_probabilities, max_rate, THRESHOLDS)


def figures(rejected_by_person: np.ndarray, rejected_by_model: np.ndarray) -> dict:
    """Agreement with the person: accuracy over all photos, the share of their keepers the
    model rejects, the share of their rejects it catches."""
    keepers = ~rejected_by_person
    return {
        "photos": int(len(rejected_by_person)),
        "accuracy": round(float((rejected_by_person == rejected_by_model).mean()), 4),
        "keepers_rejected": round(float(rejected_by_model[keepers].mean()), 4),
        "keepers_rejected_count": int(rejected_by_model[keepers].sum()),
        "rejects_caught": round(float(rejected_by_model[rejected_by_person].mean()), 4),
        "rejects_caught_count": int(rejected_by_model[rejected_by_person].sum()),
    }


def cross_fitted_rejections(oof: np.ndarray, y: np.ndarray, folds: list[np.ndarray],
                            max_rate: float) -> np.ndarray:
    """What the personal model rejects among each fold's photos: their out-of-fold
    probabilities against a threshold chosen on the other folds' keepers only."""
    rejected = np.zeros(len(y), bool)
    for held in folds:
        others = ~held & (y == 0)
        threshold = choose_threshold(oof[others], max_rate)
        rejected[held] = oof[held] >= threshold
    return rejected


# ---------------------------------------------------------------------------------------------
# The command


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise RunError(f"--name {name!r}: use letters, digits, '_', '.' or '-' (up to 64), "
                       "starting with a letter or digit")
    if (shipped_models_dir() / f"{name}.onnx").exists():
        raise RunError(f"--name {name!r} is a shipped model's name; choose another (e.g. mine)")


def _labelled(entries: list, reporter: Reporter) -> tuple[list[tuple[Shot, PersonLabel]], int]:
    """The shots the person labelled (darktable's default star resolved per folder), and how
    many shots carry no label of theirs."""
    found: list[tuple[Shot, PersonLabel]] = []
    unlabelled = 0
    culled_in_darktable: set[Path] = set()
    for entry in entries:
        if not isinstance(entry, Shot):
            continue
        label, problem = person_label(entry)
        if problem:
            reporter.message("error", f"{problem}; labels there are not used")
        if label is None:
            unlabelled += 1
            continue
        found.append((entry, label))
    for shot, label in found:
        if label.kind == REJECTED and label.darktable:
            culled_in_darktable.add(shot.primary.parent)
    kept = []
    for shot, label in found:
        if label.darktable_default and shot.primary.parent not in culled_in_darktable:
            unlabelled += 1  # darktable's own 1 star in a folder nobody culled
            continue
        kept.append((shot, label))
    return kept, unlabelled


def learn(paths: list[str], options: LearnOptions = LearnOptions(),
          reporter: Reporter | None = None) -> LearnOutcome:
    """Learn the person's taste from their labels under `paths`, save it as a personal model
    (card.personal_models_dir) and return what it found and how well it does (module
    docstring). TooFewLabels when there are fewer than `min_labels` rejects or keepers."""
    reporter = reporter or Reporter()
    check_name(options.name)
    shots = find_shots(paths, options.recursive, reporter=reporter)
    labelled, unlabelled = _labelled(shots.entries, reporter)
    counts = Counter(label.kind for _, label in labelled)
    if counts[REJECTED] < options.min_labels or counts[KEEPER] < options.min_labels:
        raise TooFewLabels(
            f"found {counts[REJECTED]} photos you rejected and {counts[KEEPER]} you kept "
            f"({unlabelled} without a label of yours) in {', '.join(paths)}; iqs learn needs at "
            f"least {options.min_labels} of each to learn from rather than guess. Reject photos "
            "(digiKam pick label Rejected, or reject / rating -1 in darktable or Lightroom) and "
            "pick or rate keepers, then run it again")
    try:
        session = ModelSession(load_card(options.model), device=options.device, features=True)
    except (CardError, EngineError) as exc:
        raise RunError(str(exc)) from exc
    if session.head is not None:
        raise RunError(f"--model {options.model}: a personal model cannot be the base of "
                       "another; learn from a shipped model (the default) or an exported one")
    cache = None if options.no_cache else ResultCache(model_sha256=session.cache_key)
    scorer = Scorer(session, cache=cache, batch_size=options.batch_size or default_batch(session),
                    workers=options.workers, focus=options.focus_check)
    rows, kinds, base_rejected, failed = [], [], [], 0
    try:
        with reporter.progress(len(labelled)) as advance:
            for (result, features), (shot, label) in zip(
                    scorer.score_with_features([shot for shot, _ in labelled]), labelled):
                advance()
                if features is None:
                    failed += 1
                    reporter.message("error", f"{display_path(result.path)}: {result.error}")
                    continue
                rows.append(features)
                kinds.append(label.kind)
                base_rejected.append(result.label == "rejected")
    finally:
        if cache is not None:
            warning = cache.take_warning()
            if warning:
                reporter.message("warning", warning)
            cache.close()
    y = np.array([kind == REJECTED for kind in kinds], dtype=float)
    if min(int(y.sum()), int(len(y) - y.sum())) < options.min_labels:
        raise TooFewLabels(f"only {int(y.sum())} rejected and {int(len(y) - y.sum())} kept "
                           f"photos could be read ({failed} failed); at least "
                           f"{options.min_labels} of each are needed")
    z = np.stack(rows).astype(np.float64)
    folds = stratified_folds(y, options.folds, options.seed)
    fit = logistic_cv(z, y, LAMBDAS, folds)
    reject_at = choose_threshold(fit["oof"][y == 0], options.max_keepers_rejected)
    person = y.astype(bool)
    held_out = {
        "personal": figures(person, cross_fitted_rejections(fit["oof"], y, folds,
                                                             options.max_keepers_rejected)),
        "base": figures(person, np.array(base_rejected, bool)),
        "folds": options.folds,
    }
    base_card = session.card
    sources = Counter(label.how for _, label in labelled)
    learned = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "folders": [str(Path(p).resolve()) for p in paths if p != "-"],
        "labels": {"rejected": int(y.sum()), "keeper": int(len(y) - y.sum())},
        "lambda": fit["lambda"], "cv_log_loss": fit["cv_loss"],
        "max_keepers_rejected": options.max_keepers_rejected,
        "held_out": held_out,
    }
    head = personal.PersonalHead(np.asarray(fit["weight"], np.float32), float(fit["bias"]))
    card = personal.personal_card(base_card, session.sha256, options.name, head, reject_at,
                                  learned)
    replaced = personal_card_path(options.name).exists()
    path = personal.save(card)
    return LearnOutcome(
        path=path,
        counts={"rejected": int(y.sum()), "keeper": int(len(y) - y.sum()),
                "unlabelled": unlabelled, "failed": failed},
        sources=sources, lambda_=fit["lambda"], reject_at=reject_at,
        max_keepers_rejected=options.max_keepers_rejected, held_out=held_out,
        base=f"{base_card.name} {base_card.version}", replaced=replaced)
