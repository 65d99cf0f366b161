"""Shots in, ShotResults out: cache look-up, decoding in a thread pool, batched inference.

Decoding of the next batch runs in worker threads while the current batch is inferred, so the
two share the cores instead of taking turns. At most two batches of tensors are alive at once:
memory stays flat however many photos there are. Results come out in input order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from iqs_cli import capture
from iqs_cli.cache import FileKey, ResultCache
from iqs_cli.card import image_to_tensor
from iqs_cli.decode import DecodeError, load_rgb, os_error_message
from iqs_cli.discover import DiscoveryError, Shot
from iqs_cli.engine import ModelSession, outputs_row
from iqs_cli.focus import focus_tensor
from iqs_cli.result import ShotResult
from iqs_cli.verdict import Thresholds, decide

# When to take the second, larger look (iqs_cli/focus.py): at shots the whole view would
# reject (the default: costs time only for those), at every shot, or never.
FOCUS_MODES = ("rejected", "all", "off")


@dataclass
class _Item:
    result: ShotResult
    key: FileKey | None = None
    future: Future | None = None
    outputs: dict | None = None  # raw model outputs once known
    features: np.ndarray | None = field(default=None, repr=False)  # pooled, when asked for
    tensor: np.ndarray | None = field(default=None, repr=False)
    facts: dict = field(default_factory=dict)  # descriptor and capture time (capture.py)


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, DecodeError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while decoding; the image is too large for this machine"
    return f"unexpected error while decoding ({type(exc).__name__}: {exc}); please report it"


class Scorer:
    def __init__(self, session: ModelSession, thresholds: Thresholds = Thresholds(),
                 cache: ResultCache | None = None, batch_size: int = 16,
                 workers: int | None = None, focus: str = "rejected"):
        if focus not in FOCUS_MODES:
            raise ValueError(f"focus must be one of {', '.join(FOCUS_MODES)}, got {focus!r}")
        if session.head is not None:
            # A personal model judges the whole view, as the person did in their viewer: a
            # sharp window of a photo they rejected for its colours says nothing about taste.
            focus = "off"
        self.session = session
        self.card = session.card
        self.thresholds = thresholds
        self.cache = cache
        self.batch_size = max(1, batch_size)
        self.workers = max(1, workers or (os.cpu_count() or 1))
        self.focus = focus
        self._pool: ThreadPoolExecutor | None = None

    def _decode_shot(self, path: str) -> tuple[np.ndarray, dict]:
        image = load_rgb(path, self.card.input.decode_min_side)
        # What burst grouping needs, from the pixels at hand (kept with the cached outputs).
        taken, clock = capture.taken_when(path)
        facts = {"descriptor": capture.descriptor(image), "taken": taken, "clock": clock}
        return image_to_tensor(image, self.card.input), facts

    def _start(self, entry: Shot | DiscoveryError, pool: ThreadPoolExecutor) -> _Item:
        if isinstance(entry, DiscoveryError):
            path = os.path.abspath(entry.path) if entry.path else entry.path  # records are absolute
            return _Item(ShotResult(path=path, files=[path], error=entry.message))
        result = ShotResult(
            path=str(entry.primary), files=[str(f) for f in entry.files],
            model=self.card.name, model_version=self.card.version,
        )
        item = _Item(result)
        try:
            item.key = FileKey.of(entry.primary)
        except OSError as exc:
            result.error = os_error_message(exc)
            return item
        if self.cache is not None:
            item.outputs = self.cache.get(item.key)
            if item.outputs is not None and "descriptor" not in item.outputs:
                item.outputs = None  # cached before bursts: scored again once, for its look
            if self.session.returns_features and item.outputs is not None:
                item.features = self.cache.get_features(item.key, self._feature_size())
            result.cached = item.outputs is not None
        if item.outputs is None or (self.session.returns_features and item.features is None):
            item.future = pool.submit(self._decode_shot, str(entry.primary))
        return item

    def _finish(self, items: list[_Item]) -> list[_Item]:
        to_infer: list[_Item] = []
        for item in items:
            if item.future is None:
                continue
            try:
                item.tensor, item.facts = item.future.result()
                to_infer.append(item)
            except BaseException as exc:  # noqa: BLE001 - one bad file must not stop the run
                if isinstance(exc, KeyboardInterrupt):
                    raise
                item.result.error = _describe_exception(exc)
        # Tensors of one shape share a batch (squash-resized models give one shape for all).
        by_shape: dict[tuple, list[_Item]] = {}
        for item in to_infer:
            by_shape.setdefault(item.tensor.shape, []).append(item)
        fresh: list[tuple[FileKey, dict]] = []
        fresh_features: list[tuple[FileKey, np.ndarray]] = []
        for group in by_shape.values():
            batch = np.stack([item.tensor for item in group])
            try:
                outputs = self.session.infer(batch)
            except Exception as exc:  # noqa: BLE001 - report per file, keep going
                for item in group:
                    item.result.error = f"model failed on this image ({exc})"
                continue
            for index, item in enumerate(group):
                item.outputs = outputs_row(outputs, index, self.card)
                fresh.append((item.key, item.outputs))
                if outputs.features is not None:
                    item.features = np.asarray(outputs.features[index], np.float32)
                    fresh_features.append((item.key, item.features))
            for item in group:
                item.tensor = None
        for item in to_infer:
            if item.outputs is not None:
                item.outputs.update(item.facts)
        fresh += self._look_closer(items)
        if self.cache is not None:
            self.cache.put_many(list(dict(fresh).items()))
            if self.session.returns_features:
                self.cache.put_features(fresh_features)
        for item in items:
            if item.outputs is not None and item.result.error is None:
                self._apply(item.result, item.outputs)
        return items

    def _feature_size(self) -> int:
        return int(self.card.features.get("size", 0))

    def _needs_focus(self, item: _Item) -> bool:
        if self.focus == "off" or item.outputs is None or item.result.error is not None:
            return False
        if "focus" in item.outputs:  # known, from this run or the cache (None: no larger view)
            return False
        if self.focus == "all":
            return True
        first = decide(item.outputs["probabilities"], item.outputs["mos"],
                       item.outputs.get("attributes", {}), self.card, self.thresholds)
        return first.label == "rejected"

    def _look_closer(self, items: list[_Item]) -> list[tuple[FileKey, dict]]:
        """The second look (iqs_cli/focus.py) for the shots that need it; returns the cache
        entries it changed. A failure here never fails the shot: the whole view stands."""
        wanted = [item for item in items if self._needs_focus(item)]
        if not wanted:
            return []
        spec = self.card.input
        futures = [self._pool.submit(focus_tensor, item.result.path, spec) for item in wanted]
        ready: list[tuple[_Item, np.ndarray]] = []
        for item, future in zip(wanted, futures):
            try:
                tensor = future.result()
            except Exception:  # noqa: BLE001 - decoded once already; the whole view stands
                tensor = None
            item.outputs["focus"] = None
            if tensor is not None:
                ready.append((item, tensor))
        if ready:
            try:
                outputs = self.session.infer(np.stack([tensor for _, tensor in ready]))
            except Exception:  # noqa: BLE001 - as above
                outputs = None
            for index, (item, _) in enumerate(ready):
                if outputs is not None:
                    row = outputs_row(outputs, index, self.card)
                    item.outputs["focus"] = {k: row[k] for k in ("probabilities", "attributes")}
        return [(item.key, item.outputs) for item in wanted if item.key is not None]

    def _apply(self, result: ShotResult, outputs: dict) -> None:
        verdict = decide(
            outputs["probabilities"], outputs["mos"], outputs.get("attributes", {}),
            self.card, self.thresholds,
            focus=outputs.get("focus") if self.focus != "off" else None,
            focus_can_reject=self.focus == "all",
        )
        result.probabilities = outputs["probabilities"]
        result.mos = outputs["mos"]
        result.attributes = outputs.get("attributes", {})
        result.label, result.stars, result.reasons = verdict.label, verdict.stars, verdict.reasons
        result.descriptor, result.taken = outputs.get("descriptor"), outputs.get("taken")
        result.clock = outputs.get("clock")

    def score(self, entries: Iterable[Shot | DiscoveryError]) -> Iterator[ShotResult]:
        for item in self._items(entries):
            yield item.result

    def score_with_features(self, entries: Iterable[Shot | DiscoveryError]
                            ) -> Iterator[tuple[ShotResult, np.ndarray | None]]:
        """(result, pooled features or None when the shot failed); needs a session made with
        features=True. Features come from the cache when it has them."""
        if not self.session.returns_features:
            raise ValueError("score_with_features needs ModelSession(..., features=True)")
        for item in self._items(entries):
            yield item.result, (item.features if item.result.ok else None)

    def _items(self, entries: Iterable[Shot | DiscoveryError]) -> Iterator[_Item]:
        stream = iter(entries)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="iqs-decode") as pool:
            self._pool = pool
            previous: list[_Item] | None = None
            # A small first batch (one photo per decoding thread) starts inference while the
            # rest of the second batch decodes, instead of the model waiting for a whole batch.
            size = min(self.batch_size, self.workers)
            while True:
                chunk = list(islice(stream, size))
                size = self.batch_size
                current = [self._start(entry, pool) for entry in chunk]
                if previous is not None:
                    yield from self._finish(previous)
                if not chunk:
                    break
                previous = current
