"""Kill, race and fill-up checks of `iqs cull` and `iqs undo` (a scripted check, not a test).

Each round makes a fresh folder of shots (RAW+JPEG pairs, sidecars, some rated by a person),
then, with the real command in separate processes:
  kill-cull   SIGKILL `iqs cull --move-rejected` at a random instant, check that every file
              exists exactly once with its bytes, then `iqs undo` must restore the tree;
  kill-undo   cull to the end, SIGKILL `iqs undo` at a random instant, then `iqs undo` again
              must exit 0 and restore the tree;
  race        two `iqs cull --move-rejected` at once: one must refuse (exit 3), and undoing
              until nothing is left must restore the tree (no sidecar twice);
  full        `--to` on a tmpfs too small for every shot (needs root): no shot may end up
              split between the folder and `--to`, and undo restores the tree.

    python bench/robustness.py --rounds 20 --shots 60 [--model weights/iqs-fast.onnx]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

IQS = [sys.executable, "-m", "iqs_cli"]


def make_folder(root: Path, shots: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(shots):
        folder = root / f"day{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        brightness = 6 if i % 2 == 0 else 140  # every other shot dark: rejected
        pixels = np.clip(brightness + rng.normal(0, 20, (240, 320, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"IMG_{i:04d}.JPG", quality=90)
        if i % 4 == 0:
            (folder / f"IMG_{i:04d}.CR2").write_bytes(rng.bytes(2000))  # RAW stand-in
        if i % 5 == 0:
            (folder / f"IMG_{i:04d}.JPG.xmp").write_text(
                '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
                '02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/'
                'dc/elements/1.1/"' + (' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"'
                                       if i % 10 == 0 else "")
                + '><dc:subject><rdf:Bag><rdf:li>kw</rdf:li></rdf:Bag></dc:subject>'
                '</rdf:Description></rdf:RDF></x:xmpmeta>')


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        if ".iqs" in path.relative_to(root).parts or not path.is_file():
            continue
        out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def once_each(before: dict, after: dict, dest_prefix: str = "_rejected/") -> list[str]:
    """Problems: files lost, duplicated or changed (sidecars iqs wrote are left out)."""
    problems = []
    for rel, digest in before.items():
        places = [p for p in (rel, dest_prefix + rel) if p in after]
        if len(places) != 1:
            problems.append(f"{rel}: in {len(places)} places")
        elif not rel.endswith(".xmp") and after[places[0]] != digest:
            problems.append(f"{rel}: bytes changed")
    return problems


def run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(IQS + args, capture_output=True, text=True, **kw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--shots", type=int, default=60)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    rng = random.Random(0)
    tally = {"kill-cull": [0, 0], "kill-undo": [0, 0], "race": [0, 0], "full": [0, 0]}
    work = Path(tempfile.mkdtemp(prefix="iqs-robust-"))
    env = dict(os.environ, IQS_CACHE_DIR=str(work / "cache"))
    try:
        # A first cull warms the results cache, so every kill lands while changing files.
        root = work / "warm"
        make_folder(root, args.shots, 0)
        run(["cull", str(root), "-q", *model], env=env)
        shutil.rmtree(root)
        for n in range(args.rounds):
            for check in tally:
                root = work / f"r{n}-{check}"
                make_folder(root, args.shots, 0)
                before = tree(root)
                problems = globals()["check_" + check.replace("-", "_")](
                    root, before, model, env, rng, work)
                tally[check][0] += 1
                tally[check][1] += bool(problems)
                if problems:
                    print(f"round {n} {check}: {problems[:3]}", flush=True)
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for check, (rounds, bad) in tally.items():
        print(f"{check:10s} {rounds} rounds, {bad} with a problem")
    print(f"kills that landed mid-run: cull {KILLED_MIDWAY['cull']}, undo {KILLED_MIDWAY['undo']};"
          f" full-disk rounds where --to filled up: {FILLED[0]}")
    return 1 if any(bad for _, bad in tally.values()) else 0


KILLED_MIDWAY = {"cull": 0, "undo": 0}  # kills that landed while the command was running
def _kill_when(command: list[str], root: Path, env, op: str, count: int) -> None:
    """SIGKILL the command once its journal holds `count` lines of `op` (a step under way)."""
    process = subprocess.Popen(IQS + command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    needle = f'"op": "{op}"'.encode()
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        logs = sorted((root / ".iqs").glob("journal-*.jsonl")) if (root / ".iqs").is_dir() else []
        if logs and logs[-1].read_bytes().count(needle) >= count:
            KILLED_MIDWAY[command[0]] += 1
            break
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _undo_all(root: Path, env) -> list[str]:
    for _ in range(10):
        done = run(["undo", str(root)], env=env)
        if done.returncode != 0:
            return [f"undo exit {done.returncode}: {done.stderr.strip()[-300:]}"]
        if "nothing to undo" in done.stdout:
            return []
    return ["undo never ran out of runs"]


def check_kill_cull(root, before, model, env, rng, work) -> list[str]:
    _kill_when(["cull", str(root), "--move-rejected", "-q", *model], root, env,
               rng.choice(["write", "move"]), rng.randint(1, len(before) // 3))
    problems = once_each(before, tree(root))
    problems += _undo_all(root, env)
    return problems + ([] if tree(root) == before else ["tree differs after undo"])


def check_kill_undo(root, before, model, env, rng, work) -> list[str]:
    run(["cull", str(root), "--move-rejected", "-q", *model], env=env)
    _kill_when(["undo", str(root)], root, env, "reverting", rng.randint(1, len(before)))
    problems = _undo_all(root, env)
    return problems + ([] if tree(root) == before else ["tree differs after undo"])


def check_race(root, before, model, env, rng, work) -> list[str]:
    runs = [subprocess.Popen(IQS + ["cull", str(root), "--move-rejected", "-q", *model], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(2)]
    codes = sorted(p.wait() for p in runs)
    problems = [] if codes in ([0, 0], [0, 3]) else [f"exit codes {codes}"]
    problems += _undo_all(root, env)
    return problems + ([] if tree(root) == before else ["tree differs after undo"])


FILLED = [0]


def check_full(root, before, model, env, rng, work) -> list[str]:
    dest = work / "small"
    dest.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(dest)],
                      capture_output=True).returncode != 0:
        return []
    try:
        done = run(["cull", str(root), "--move-rejected", "--to", str(dest), "-q", *model],
                   env=env)
        FILLED[0] += "No space left" in done.stderr
        split = []
        for rel in before:
            if rel.endswith(".CR2"):
                jpeg = rel[:-4] + ".JPG"
                if (root / rel).exists() != (root / jpeg).exists():
                    split.append(f"{rel}: shot split between the folder and --to")
        problems = split + _undo_all(root, env)
        return problems + ([] if tree(root) == before else ["tree differs after undo"])
    finally:
        subprocess.run(["umount", "-l", str(dest)], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
