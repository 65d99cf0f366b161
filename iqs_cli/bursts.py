"""Bursts and near-duplicates: group the shots of a folder that show one moment, rank each
group's frames, keep the best one's label and mark the rest.

Grouping (`find_groups`): the folder's shots in capture order (iqs_cli/capture.py: EXIF
DateTimeOriginal + SubSecTimeOriginal, else the file's date). A shot joins the group of one of
the few shots just before it when it looks like one of that group's last few frames
(`capture.similarities`: luma structure, exposure within a stop, colour) and that group's last
frame is at most `gap` seconds older (with `similar_only`, whatever the time: a tripod series
shot minutes apart). The look must be surer (capture.STRICT_CORRELATION) when the time says
little: a file's date rather than the camera's, or `similar_only`.
Two scenes shot a second apart stay apart; a slowly panning burst chains along.

Ranking (`rank`): within one scene, relative sharpness says more than any absolute score. Each
frame of a group of 2+ is decoded again at a larger scale (RANK_MIN_SIDE) and its fine detail
(|Laplacian| of luma over the frame's mean luma, so an exposure step does not count) is measured
on a common 8 x 8 grid of cells. A frame's focus score is its mean log detail over the cells,
weighted by how sharp the sharpest frame of the group is there (the subject in focus counts,
a sky or a blurred background hardly). Frames the model rejects come last when any frame is not
rejected; among frames whose focus is within FOCUS_TIE of the sharpest, the model's MOS
decides.

Verdict (`mark`): the best frame keeps its label; the others become at most pending with the
reason `duplicate` (rejected with --reject-duplicates). Each shot of a group gets `group`
(numbered from 1 in the run), `group_rank` (1 = best) and `group_best` (the best frame's path).

Memory stays flat in the number of photos: `FolderGrouper` holds one folder's results (with
their 96-byte descriptors) at a time and hands them on when the next folder starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from iqs_cli import capture
from iqs_cli.decode import load_rgb
from iqs_cli.focus import detail_map
from iqs_cli.result import ShotResult
from iqs_cli.verdict import STARS_BY_LABEL
from iqs_cli.vocabulary import DUPLICATE

DEFAULT_GAP = 3.0  # seconds between frames of one burst (a wedding's bursts, a bird's)
# A new frame is compared with this many of a group's latest frames (a burst that pans along
# drifts away from its first frame, not from its last ones).
LOOK_BACK = 4
# A shot is compared with the groups of this many shots before it in capture order (a frame
# of another camera or a quick look elsewhere may fall between two frames of a burst).
RECENT = 4
# Ranking decodes for a short side of at least this: a 24 MP JPEG at draft scale 1/4
# (1500 x 1000), where a missed focus or a shake of a few pixels still shows.
RANK_MIN_SIDE = 960
GRID = 8  # cells per side of the common grid
FOCUS_TIE = 0.03  # log-ratio: frames this close in focus are told apart by the model's MOS
_EPS = 1e-3


@dataclass(frozen=True)
class BurstOptions:
    gap: float = DEFAULT_GAP  # seconds
    similar_only: bool = False  # group by look alone, whatever the time between frames
    reject_duplicates: bool = False  # non-best frames are rejected, not pending
    workers: int | None = None  # threads for the ranking decodes (None: one per core)


# --- grouping ---------------------------------------------------------------------------------


def find_groups(results: Iterable[ShotResult], gap: float = DEFAULT_GAP,
                similar_only: bool = False) -> list[list[ShotResult]]:
    """Groups of 2+ shots that show one moment, each in capture order. A shot may join only a
    group that one of the RECENT shots before it (in capture order) belongs to: bursts and
    tripod series are shot one frame after the other, and comparing each shot with a whole
    folder would, at any threshold, find some unrelated look-alike. Failed shots and shots
    without a descriptor never group; without a capture time a shot groups only with
    `similar_only`."""
    usable = [r for r in results if r.ok and capture.is_descriptor(r.descriptor)
              and (similar_only or r.taken is not None)]
    usable.sort(key=lambda r: (r.taken if r.taken is not None else math.inf, r.path))
    groups: list[list[ShotResult]] = []
    looks: list[list[capture.Look]] = []  # per group, its latest LOOK_BACK frames
    recent: list[int] = []  # the groups of the last RECENT shots, oldest first
    for shot in usable:
        candidates = []
        for g in dict.fromkeys(recent):  # each group once
            last = groups[g][-1]
            if not similar_only and shot.taken - last.taken > gap:
                continue
            needed = (capture.MIN_CORRELATION if not similar_only and
                      shot.clock == last.clock == capture.EXIF_CLOCK
                      else capture.STRICT_CORRELATION)
            candidates += [(g, other, needed) for other in looks[g]]
        mine = capture.look(shot.descriptor)
        chosen = None
        if candidates:
            scores = capture.similarities(mine, [other for _, other, _ in candidates])
            margins = scores - np.array([needed for _, _, needed in candidates])
            best = int(np.argmax(margins))
            if margins[best] >= 0:
                chosen = candidates[best][0]
        if chosen is None:
            chosen = len(groups)
            groups.append([])
            looks.append([])
        groups[chosen].append(shot)
        looks[chosen] = (looks[chosen] + [mine])[-LOOK_BACK:]
        recent = (recent + [chosen])[-RECENT:]
    return [g for g in groups if len(g) >= 2]


# --- ranking ----------------------------------------------------------------------------------


def _cells(values: np.ndarray) -> np.ndarray:
    """Mean of `values` over a GRID x GRID grid of equal cells (the border remainder dropped)."""
    h, w = values.shape
    ch, cw = max(1, h // GRID), max(1, w // GRID)
    values = values[: ch * GRID, : cw * GRID]
    if values.shape != (ch * GRID, cw * GRID):  # smaller than the grid: pad by repeating
        values = np.pad(values, ((0, ch * GRID - values.shape[0]), (0, cw * GRID - values.shape[1])),
                        mode="edge")
    return values.reshape(GRID, ch, GRID, cw).mean(axis=(1, 3))


def focus_profile(image: Image.Image) -> np.ndarray:
    """[GRID, GRID]: per cell the fine detail (mean |Laplacian| of luma) divided by the frame's
    mean luma, so that an exposure step does not pass for sharpness."""
    gray = image.convert("L")
    light = max(float(np.asarray(gray, np.float32).mean()), 1.0)
    return _cells(detail_map(gray)) / light


def load_profile(path: str) -> np.ndarray | None:
    """The focus profile of the photo at `path` decoded at RANK_MIN_SIDE; None when it cannot
    be decoded again (gone since scoring): that frame then ranks last."""
    try:
        return focus_profile(load_rgb(path, RANK_MIN_SIDE))
    except Exception:  # noqa: BLE001 - decoded once already; a second failure only costs its rank
        return None


def focus_scores(profiles: list[np.ndarray | None]) -> list[float]:
    """Each frame's focus where the group is sharpest: the mean log detail of its cells,
    weighted by the square of the most detail any frame of the group has in that cell (so the
    subject in focus counts, a sky or a blurred background hardly). -inf without a profile."""
    known = [p for p in profiles if p is not None]
    if not known:
        return [-math.inf] * len(profiles)
    weights = np.max([p.ravel() for p in known], axis=0) ** 2
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(weights.size, 1 / weights.size)
    return [-math.inf if p is None else float(np.log(p.ravel() + _EPS) @ weights)
            for p in profiles]


def rank(group: list[ShotResult], scores: list[float]) -> list[ShotResult]:
    """The group's frames, best first: not rejected before rejected (when any is not), then
    by focus score; among frames within FOCUS_TIE of the sharpest, by MOS."""
    keep = [i for i, r in enumerate(group) if r.label != "rejected"] or list(range(len(group)))
    top = max(scores[i] for i in keep)
    tied = [i for i in keep if scores[i] >= top - FOCUS_TIE]
    best = max(tied, key=lambda i: (group[i].mos or 0.0, scores[i]))
    rest = sorted((i for i in range(len(group)) if i != best),
                  key=lambda i: (i not in keep, -scores[i], -(group[i].mos or 0.0)))
    return [group[best]] + [group[i] for i in rest]


def mark(ordered: list[ShotResult], number: int, reject_duplicates: bool = False) -> None:
    """Give the group its number and ranks; every frame but the first becomes a duplicate:
    at most pending (rejected with `reject_duplicates`), `duplicate` among its reasons. A frame
    the model rejected on its own stays as it is (its reasons say why; its group says the rest)."""
    best = ordered[0]
    for position, result in enumerate(ordered, start=1):
        result.group, result.group_rank, result.group_best = number, position, best.path
        if position == 1 or result.label == "rejected":
            continue
        label = "rejected" if reject_duplicates else "pending"
        low, high = STARS_BY_LABEL[label]
        result.label = label
        result.stars = None if result.stars is None else min(high, max(low, result.stars))
        if DUPLICATE not in result.reasons:
            result.reasons = [*result.reasons, DUPLICATE]


# --- per folder, as results stream ------------------------------------------------------------


class FolderGrouper:
    """Takes results as scoring yields them and hands them back a folder at a time, grouped,
    ranked and marked: `feed` a result (returns what is ready: the previous folder's results
    once this one starts), then `flush` at the end. Results keep their order."""

    def __init__(self, options: BurstOptions = BurstOptions(),
                 profile: Callable[[str], np.ndarray | None] = load_profile):
        self.options = options
        self.profile = profile
        self.next_number = 1
        self._folder: str | None = None
        self._held: list[ShotResult] = []
        self._pool: ThreadPoolExecutor | None = None

    def feed(self, result: ShotResult) -> list[ShotResult]:
        folder = os.path.dirname(result.path) if result.ok else self._folder
        ready = []
        if self._held and folder != self._folder:
            ready = self.flush()
        if result.ok or self._folder is None:
            self._folder = folder
        self._held.append(result)
        return ready

    def flush(self) -> list[ShotResult]:
        held, self._held, self._folder = self._held, [], None
        for group in find_groups(held, self.options.gap, self.options.similar_only):
            scores = focus_scores(self._profiles([r.path for r in group]))
            mark(rank(group, scores), self.next_number, self.options.reject_duplicates)
            self.next_number += 1
        return held

    def release(self) -> list[ShotResult]:
        """What is held, as scored, without grouping (the run was interrupted mid-folder)."""
        held, self._held, self._folder = self._held, [], None
        return held

    def _profiles(self, paths: list[str]) -> list[np.ndarray | None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.options.workers or os.cpu_count() or 1,
                                            thread_name_prefix="iqs-bursts")
        return list(self._pool.map(self.profile, paths))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
