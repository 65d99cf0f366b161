"""`iqs score` end to end with the tiny ONNX model: outputs, exit codes, bad input, cache."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import make_photo, unprivileged
from iqs_cli.cli import app

runner = CliRunner()
DARK_REASONS = {"underexposed", "noise", "compression", "blur"}  # what the tiny model says of black


def score(*args: str, input: bytes | None = None):
    return runner.invoke(app, ["score", *args], input=input, catch_exceptions=False)


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_photo(folder / "dark.jpg", brightness=5, size=(120, 80))
    make_photo(folder / "mid.jpg", brightness=128, size=(120, 80))
    make_photo(folder / "sub" / "bright.png", brightness=250, size=(80, 120))
    return folder


def test_scores_a_folder_as_jsonl(photos, tiny_model):
    result = score(str(photos), "--model", str(tiny_model), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = {Path(r["path"]).name: r for r in jsonl(result.stdout)}
    assert set(records) == {"dark.jpg", "mid.jpg", "bright.png"}
    assert records["dark.jpg"]["label"] == "rejected"
    assert records["mid.jpg"]["label"] == "pending"
    assert records["dark.jpg"]["mos"] < records["mid.jpg"]["mos"] < records["bright.png"]["mos"]
    dark = records["dark.jpg"]
    # Reason tokens (not the table's wording); the tiny model rates every defect alike on it.
    assert dark["stars"] == 1 and set(dark["reasons"]) == DARK_REASONS
    assert abs(sum(dark["probabilities"].values()) - 1) < 1e-3
    assert dark["model"] == "tiny" and dark["model_version"] == "0.0.1" and dark["error"] is None


def test_no_recursive_skips_subfolders(photos, tiny_model):
    result = score(str(photos), "--model", str(tiny_model), "-f", "jsonl", "--no-recursive")
    assert sorted(Path(r["path"]).name for r in jsonl(result.stdout)) == ["dark.jpg", "mid.jpg"]


def test_json_csv_and_output_file(photos, tiny_model, tmp_path):
    as_json = score(str(photos), "--model", str(tiny_model), "--format", "json")
    assert len(json.loads(as_json.stdout)) == 3
    out = tmp_path / "results.csv"
    result = score(str(photos), "--model", str(tiny_model), "--output", str(out))
    assert result.exit_code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 3 and {"path", "label", "mos", "stars", "p_rejected"} <= set(rows[0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results.csv")]  # no temp left


def test_table_for_people(photos, tiny_model):
    result = score(str(photos), "--model", str(tiny_model), "--format", "table")
    assert result.exit_code == 0
    assert "rejected" in result.stdout and "pending" in result.stdout
    # sorted by score: the bright photo comes before the dark one
    assert result.stdout.index("bright.png") < result.stdout.index("dark.jpg")


def test_reasons_are_tokens_for_scripts_and_words_for_people(photos, tiny_model, monkeypatch):
    monkeypatch.chdir(photos)  # short relative paths: the table keeps each reason on one line
    records = {Path(r["path"]).name: r for r in jsonl(score(".", "--model", str(tiny_model), "-f", "jsonl").stdout)}
    assert set(records["dark.jpg"]["reasons"]) == DARK_REASONS
    assert records["mid.jpg"]["reasons"] == [] and records["bright.png"]["reasons"] == []
    as_json = {Path(r["path"]).name: r for r in json.loads(score(".", "--model", str(tiny_model), "-f", "json").stdout)}
    assert as_json["dark.jpg"]["reasons"] == records["dark.jpg"]["reasons"]
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(score(".", "--model", str(tiny_model), "-f", "csv").stdout))}
    assert rows["dark.jpg"]["reasons"].split("; ") == records["dark.jpg"]["reasons"]
    assert rows["mid.jpg"]["reasons"] == ""
    table = score(".", "--model", str(tiny_model), "-f", "table").stdout
    dark_line = next(line for line in table.splitlines() if "dark.jpg" in line)
    for words in ("underexposed", "noisy", "heavy JPEG artifacts", "blurry"):
        assert words in dark_line, (words, dark_line)
    assert "compression" not in table and "noise;" not in table


def test_every_rejected_shot_has_a_reason(photos, tiny_model, monkeypatch):
    monkeypatch.chdir(photos)
    # --reject-at 0 rejects every shot the class head can, also those no attribute explains.
    records = {Path(r["path"]).name: r for r in jsonl(
        score(".", "--model", str(tiny_model), "-f", "jsonl", "--reject-at", "0").stdout)}
    assert set(records["dark.jpg"]["reasons"]) == DARK_REASONS
    # mid-grey: every severity just under the 0.5 threshold, above half of it -> the strongest
    mid = records["mid.jpg"]
    assert mid["label"] == "rejected"
    assert 0.25 <= max(mid["attributes"].values()) < 0.5
    assert len(mid["reasons"]) == 1 and mid["reasons"][0] in DARK_REASONS
    # white: no defect named and a fair MOS: not thrown away, whatever the class head says
    # (a rejection without a defect needs a MOS under the 3-star cut: verdict._coherent).
    bright = records["bright.png"]
    assert max(bright["attributes"].values()) < 0.25 and bright["mos"] >= 45
    assert bright["label"] != "rejected" and bright["reasons"] == []
    assert all(r["reasons"] for r in records.values() if r["label"] == "rejected")
    table = score(".", "--model", str(tiny_model), "-f", "table", "--reject-at", "0").stdout
    dark_line = next(line for line in table.splitlines() if "dark.jpg" in line)
    assert "noisy" in dark_line and "noise" not in dark_line  # wording, not tokens


def test_xmp_carries_reason_tokens(photos, tiny_model):
    from iqs_cli.xmp import read_labels

    result = score(str(photos), "--model", str(tiny_model), "-f", "jsonl", "--reject-at", "0", "--write-xmp")
    assert result.exit_code == 0, result.output
    records = {Path(r["path"]).name: r for r in jsonl(result.stdout)}
    dark = read_labels(photos / "dark.jpg.xmp")["iqs"]
    assert dark["label"] == "rejected" and dark["reasons"] == records["dark.jpg"]["reasons"]
    assert set(dark["reasons"]) == DARK_REASONS
    mid = read_labels(photos / "mid.jpg.xmp")["iqs"]
    assert mid["reasons"] == records["mid.jpg"]["reasons"] and len(mid["reasons"]) == 1
    assert "reasons" not in read_labels(photos / "sub" / "bright.png.xmp")["iqs"]  # kept, no reason


def test_card_wording_shows_in_the_table_only(photos, tiny_model, tmp_path, monkeypatch):
    model = tmp_path / "worded" / "tiny.onnx"
    model.parent.mkdir()
    model.write_bytes(tiny_model.read_bytes())
    card = json.loads(tiny_model.with_suffix(".json").read_text())
    card["attribute_reasons"] = {"compression": "blocky", "noise": "grainy"}  # old cards' key
    model.with_suffix(".json").write_text(json.dumps(card))
    monkeypatch.chdir(photos)
    table = score(".", "--model", str(model), "-f", "table").stdout
    dark_line = next(line for line in table.splitlines() if "dark.jpg" in line)
    assert "blocky" in dark_line and "grainy" in dark_line and "heavy JPEG artifacts" not in dark_line
    dark = next(r for r in jsonl(score(".", "--model", str(model), "-f", "jsonl").stdout)
                if r["path"].endswith("dark.jpg"))
    assert set(dark["reasons"]) == DARK_REASONS


def test_paths_from_stdin(photos, tiny_model):
    listing = "\n".join(str(p) for p in sorted(photos.rglob("*")) if p.is_file()) + "\n"
    result = score("-", "--model", str(tiny_model), "-f", "jsonl", input=listing.encode())
    assert result.exit_code == 0, result.output
    assert len(jsonl(result.stdout)) == 3


def test_missing_model_is_one_clear_usage_error(photos, tmp_path):
    result = score(str(photos), "--model", str(tmp_path / "nope.onnx"))
    assert result.exit_code == 2
    assert "model file not found" in result.output and "--model" in result.output


def test_unknown_option_is_usage_error(photos, tiny_model):
    assert score(str(photos), "--model", str(tiny_model), "--format", "yaml").exit_code == 2
    assert score(str(photos), "--bogus").exit_code == 2


def _bad_inputs(folder: Path, shared: Path | None) -> dict[str, str]:
    """name -> words its error line must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    good = make_photo(folder / "good.jpg", size=(64, 48))
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    (folder / "random.jpg").write_bytes(os.urandom(2048))
    # A PNG header claiming 40000 x 40000 pixels: more than Pillow's decompression-bomb limit.
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
    png += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    png += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    (folder / "bomb.png").write_bytes(png)
    os.symlink(folder / "gone.jpg", folder / "broken-link.jpg")
    expected = {
        "zero.jpg": "empty", "truncated.jpg": "truncated", "random.jpg": "not an image",
        "bomb.png": "too large", "broken-link.jpg": "symbolic link",
    }
    try:
        weird = os.fsdecode(b"caf\xe9-latin1.jpg")
        make_photo(folder / weird, size=(64, 48))
        (folder / os.fsdecode(b"bad-\xff.jpg")).write_bytes(b"")
        expected[os.fsdecode(b"bad-\xff.jpg")] = "empty"
    except (OSError, UnicodeError):
        pass
    if shared is not None:
        shutil.copy(shared / "raw-samples" / "IMG_1361.dng", folder / "nopreview.dng")
        expected["nopreview.dng"] = "no embedded jpeg preview"
    return expected


def test_bad_inputs_each_get_one_line_and_the_run_goes_on(tmp_path, tiny_model, shared_data):
    folder = tmp_path / "bad"
    expected = _bad_inputs(folder, shared_data)
    result = score(str(folder), "--model", str(tiny_model), "-f", "jsonl")
    assert result.exit_code == 1
    records = {Path(r["path"]).name: r for r in jsonl(result.stdout)}
    assert all(os.path.isabs(r["path"]) for r in records.values())
    assert records["good.jpg"]["error"] is None and records["good.jpg"]["label"]
    for name, words in expected.items():
        assert records[name]["error"] and words in records[name]["error"].lower(), (name, records[name])
        lines = [line for line in result.stderr.splitlines() if name.encode("utf-8", "backslashreplace").decode() in line
                 or name in line]
        assert len(lines) == 1, (name, result.stderr)


def test_a_path_that_does_not_exist_is_a_usage_error(photos, tmp_path, tiny_model):
    missing = tmp_path / "does-not-exist"
    result = score(str(photos), str(missing), "--model", str(tiny_model), "-f", "jsonl")
    assert result.exit_code == 2 and f"{missing}: does not exist" in result.stderr
    assert result.stdout == ""  # nothing scored: the command line needs fixing first
    for command in ("cull", "undo"):
        result = runner.invoke(app, [command, str(missing)])
        assert result.exit_code == 2 and "does not exist" in result.stderr


def test_folders_and_non_photos_from_stdin_are_skipped_with_one_note(photos, tmp_path, tiny_model):
    (tmp_path / "x.jpg").mkdir()
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("a note")
    odd = [tmp_path / "x.jpg", tmp_path / ".hidden.jpg", tmp_path / "notes.txt", tmp_path]
    files = [p for p in sorted(photos.rglob("*")) if p.is_file()]
    listing = "\n".join(str(p) for p in [*odd, *files]) + "\n"
    result = score("-", "--model", str(tiny_model), "-f", "jsonl", input=listing.encode())
    assert result.exit_code == 0, result.output
    assert len(jsonl(result.stdout)) == 3
    note = " ".join(result.stderr.split())
    assert ("from the list: 2 folders (give folders as arguments to walk them), 1 hidden file and "
            "1 non-photo file skipped") in note
    only_folders = score("-", "--model", str(tiny_model), input=f"{tmp_path / 'x.jpg'}\n".encode())
    assert only_folders.exit_code == 1 and "no photos found in stdin" in only_folders.stderr


def test_unreadable_file(user_tmp_path, tiny_model, monkeypatch):
    """Run as an unprivileged user even under root (root reads files whatever their
    permissions): the model and the cache live where that user can reach them."""
    model_dir = user_tmp_path / "model"
    model_dir.mkdir()
    for part in (tiny_model, tiny_model.with_suffix(".json")):
        shutil.copy(part, model_dir / part.name)
    model = model_dir / tiny_model.name
    warm_up = make_photo(user_tmp_path / "warm-up" / "ok.jpg")
    assert score(str(warm_up), "--model", str(model)).exit_code == 0  # imports done as root
    monkeypatch.setenv("IQS_CACHE_DIR", str(user_tmp_path / "cache"))
    photos = user_tmp_path / "photos"
    photo = make_photo(photos / "locked.jpg")
    photo.chmod(0)
    with unprivileged():
        result = score(str(photos), "--model", str(model), "-f", "jsonl")
    assert result.exit_code == 1 and "permission" in jsonl(result.stdout)[0]["error"]


def test_cache_rescores_only_what_changed(photos, tiny_model, monkeypatch):
    first = jsonl(score(str(photos), "--model", str(tiny_model), "-f", "jsonl").stdout)
    assert first and all(r["error"] is None for r in first)
    make_photo(photos / "mid.jpg", brightness=250, size=(120, 80))  # changed: re-scored
    import iqs_cli.scoring

    decoded = []
    real_load = iqs_cli.scoring.load_rgb
    monkeypatch.setattr(iqs_cli.scoring, "load_rgb", lambda p, s: decoded.append(p) or real_load(p, s))
    second = score(str(photos), "--model", str(tiny_model), "-f", "jsonl")
    assert [Path(p).name for p in decoded] == ["mid.jpg"]
    records = {Path(r["path"]).name: r for r in jsonl(second.stdout)}
    assert records["mid.jpg"]["mos"] > {Path(r["path"]).name: r for r in first}["mid.jpg"]["mos"]
    from iqs_cli.cache import FileKey, ResultCache
    from iqs_cli.fsutil import sha256_file

    cache = ResultCache(model_sha256=sha256_file(tiny_model))
    assert cache.get(FileKey.of(photos / "dark.jpg")) is not None
    cache.close()


def test_no_cache_leaves_cache_alone(photos, tiny_model, tmp_path):
    score(str(photos), "--model", str(tiny_model), "-f", "jsonl", "--no-cache")
    assert not (Path(os.environ["IQS_CACHE_DIR"]) / "results.sqlite3").exists()


def test_two_runs_at_once_share_the_cache(photos, tiny_model, tmp_path):
    for i in range(30):
        make_photo(photos / "many" / f"p{i:02d}.jpg", brightness=8 * i, seed=i)
    command = [sys.executable, "-m", "iqs_cli", "score", str(photos), "--model", str(tiny_model),
               "-f", "jsonl", "--batch-size", "4"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    third = subprocess.run(command, capture_output=True, timeout=120)
    assert third.returncode == 0
    records = jsonl(third.stdout.decode())
    assert len(records) == 33 and all(r["error"] is None for r in records)
    assert b"warning" not in third.stderr


def test_corrupt_cache_file_degrades_to_no_cache(photos, tiny_model):
    cache_dir = Path(os.environ["IQS_CACHE_DIR"])
    cache_dir.mkdir(parents=True)
    (cache_dir / "results.sqlite3").write_bytes(b"this is not a database" * 100)
    result = score(str(photos), "--model", str(tiny_model), "-f", "jsonl")
    assert result.exit_code == 0 and len(jsonl(result.stdout)) == 3
    assert "cache" in result.stderr


def test_python_dash_m_and_version(tiny_model, photos):
    done = subprocess.run([sys.executable, "-m", "iqs_cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("iqs ")


def test_cuda_request_without_cuda_is_a_clear_error(photos, tiny_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = score(str(photos), "--model", str(tiny_model), "--device", "cuda")
    assert result.exit_code == 2 and "onnxruntime-gpu" in result.output


def test_raw_and_jpeg_siblings_are_one_shot(tmp_path, tiny_model, shared_data):
    shutil.copy(shared_data / "raw-samples" / "Canon-R6-pruned.CR3", tmp_path / "IMG_1.CR3")
    make_photo(tmp_path / "IMG_1.JPG", size=(90, 60))
    shutil.copy(shared_data / "raw-samples" / "Canon-R6-pruned.CR3", tmp_path / "IMG_2.CR3")
    result = score(str(tmp_path), "--model", str(tiny_model), "-f", "jsonl")
    assert result.exit_code == 0, result.output
    records = {Path(r["path"]).name: r for r in jsonl(result.stdout)}
    assert set(records) == {"IMG_1.JPG", "IMG_2.CR3"}
    assert sorted(Path(f).name for f in records["IMG_1.JPG"]["files"]) == ["IMG_1.CR3", "IMG_1.JPG"]
    assert records["IMG_2.CR3"]["label"] is not None  # scored through its embedded preview


def test_output_to_a_fifo_writes_into_it(photos, tiny_model, tmp_path):
    """--output to something that is not a regular file (/dev/null, a FIFO) writes to it and
    never replaces it (an atomic replace of /dev/null as root would destroy the device)."""
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = score(str(photos), "--model", str(tiny_model), "-f", "jsonl", "-o", str(fifo))
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert len(jsonl(received[0])) == 3
