"""Issue 12: the command line as a new user meets it (table, help, messages, exit codes)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from tests.helpers import make_photo
from iqs_cli import xmp
from iqs_cli.cli import app
from iqs_cli.report import plural, results_table, shorten_middle, summary_line
from iqs_cli.result import ShotResult

runner = CliRunner()


def rendered(table, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table)
    return console.file.getvalue().splitlines()


def test_the_table_fits_80_columns_with_paths_relative_to_the_folder():
    base = "/home/ann/Pictures/2026-05-holiday-in-the-mountains"
    results = [
        ShotResult(path=f"{base}/day-{i}-a-rather-long-folder-name/IMG_2026_05_{i:04d}.JPG",
                   files=[f"{base}/day-{i}-a-rather-long-folder-name/IMG_2026_05_{i:04d}.CR2",
                          f"{base}/day-{i}-a-rather-long-folder-name/IMG_2026_05_{i:04d}.JPG"],
                   label=label, mos=mos, stars=stars,
                   reasons=["underexposed", "noise"] if label == "rejected" else [])
        for i, (label, mos, stars) in enumerate([("accepted", 80.0, 5), ("pending", 50.0, 3),
                                                  ("rejected", 6.0, 1)])]
    lines = rendered(results_table(results, width=80), 80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].strip() == f"in {base}"  # the folder once, in the title
    body = "\n".join(lines[1:])
    assert base not in body
    assert "IMG_2026_05_0000.JPG +CR2" in body  # the file name whole, the RAW named
    assert len(lines) <= 1 + 2 + 3 + 2  # title, header + rule, a line per shot (+ reasons)


def test_paths_are_cut_in_the_middle_keeping_the_file_name():
    assert shorten_middle("a/b.jpg", 20) == "a/b.jpg"
    cut = shorten_middle("day-1-a-long-folder/sub/IMG_0001.JPG +CR2", 30)
    assert len(cut) == 30 and cut.endswith("/IMG_0001.JPG +CR2") and "…" in cut
    assert len(shorten_middle("x" * 50, 20)) == 20


def test_plurals_and_rates():
    assert plural(1, "shot") == "1 shot" and plural(2, "shot") == "2 shots"
    line = summary_line({"accepted": 1}, 0, 0, 0.2).plain
    assert "1 shot in 0.2 s" in line and "/s" not in line  # a rate from one photo says nothing
    assert "(25.0/s)" in summary_line({"accepted": 50}, 0, 0, 2.0).plain


def test_help_is_grouped_and_free_of_python_types():
    result = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "80"}, color=False)
    text = result.stdout
    assert result.exit_code == 0
    for noise in ("<list[str]>", "<bool>", "<str>", "<path>"):
        assert noise not in text
    for panel in ("Input", "Model", "Output", "XMP labels"):
        assert f"╭─ {panel} " in text
    assert "iqs-base (default)" in text and "iqs-fast" in text
    assert len(text.splitlines()) <= 60
    cull_help = runner.invoke(app, ["cull", "--help"], env={"COLUMNS": "80"}).stdout
    assert "╭─ Moving " in cull_help and "<bool>" not in cull_help


def test_format_any_case_unknown_output_extension_and_probabilities(tmp_path, tiny_model):
    make_photo(tmp_path / "p" / "a.jpg")
    ok = runner.invoke(app, ["score", str(tmp_path / "p"), "-f", "JSONL", "--model", str(tiny_model)])
    assert ok.exit_code == 0 and json.loads(ok.stdout.splitlines()[0])["label"]
    bad = runner.invoke(app, ["score", str(tmp_path / "p"), "-o", str(tmp_path / "res.xlsx"),
                              "--model", str(tiny_model)])
    assert bad.exit_code == 2 and not (tmp_path / "res.xlsx").exists()
    assert "cannot tell the format" in bad.stderr and ".csv" in bad.stderr
    named = runner.invoke(app, ["score", str(tmp_path / "p"), "-o", str(tmp_path / "res.xlsx"),
                                "-f", "csv", "--model", str(tiny_model)])
    assert named.exit_code == 0 and (tmp_path / "res.xlsx").read_text().startswith("path,")
    percent = runner.invoke(app, ["score", str(tmp_path / "p"), "--reject-at", "55"])
    assert percent.exit_code == 2
    assert "55 is not a probability" in " ".join(percent.output.split())
    assert "0.55" in percent.output


def test_no_summary_in_a_log_and_error_records_are_absolute(tmp_path, tiny_model, monkeypatch):
    folder = tmp_path / "p"
    make_photo(folder / "a.jpg")
    (folder / "broken.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["score", "p", "p/broken.jpg", "--model", str(tiny_model),
                                 "-f", "jsonl"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(os.path.isabs(r["path"]) for r in records)
    assert "shots in" not in result.stderr  # stderr is not a terminal here
    assert "\n" not in result.stderr.strip().split("error: ", 1)[1]  # one line, not hard-wrapped


def test_lightroom_style_merges_into_an_existing_digikam_sidecar(tmp_path, tiny_model):
    photo = make_photo(tmp_path / "p" / "a.jpg")
    existing = tmp_path / "p" / "a.jpg.xmp"
    existing.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org'
                        '/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http:'
                        '//purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>kw</rdf:li>'
                        '</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
    result = runner.invoke(app, ["score", str(tmp_path / "p"), "--write-xmp", "--sidecar-name",
                                 "lightroom", "-f", "jsonl", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "p" / "a.xmp").exists()  # no second sidecar hiding the first
    assert xmp.read_labels(existing)["pick"] in (1, 2, 3) and "kw" in existing.read_text()
    assert "into the photo.ext.xmp sidecar already there" in " ".join(result.stderr.split())
    photo2 = make_photo(tmp_path / "p" / "b.jpg", seed=2)
    runner.invoke(app, ["score", str(photo2), "--write-xmp", "--sidecar-name", "lightroom",
                        "--model", str(tiny_model)])
    assert (tmp_path / "p" / "b.xmp").exists()  # no sidecar there yet: the style's own name
    assert photo.exists()


def test_undo_in_a_subfolder_names_the_folder_to_undo(tmp_path, tiny_model):
    root = tmp_path / "trip"
    make_photo(root / "day1" / "a.jpg", brightness=3)
    assert runner.invoke(app, ["cull", str(root), "--model", str(tiny_model)]).exit_code == 0
    result = runner.invoke(app, ["undo", str(root / "day1")])
    assert result.exit_code == 0
    assert f"iqs undo {root}" in " ".join(result.stdout.split())
    done = runner.invoke(app, ["undo", str(root)])
    assert done.exit_code == 0 and ": 0 files restored, 1 removed" in done.stdout


def test_skips_for_want_of_shared_data_are_named_in_the_summary(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_needs_data="def test_it(shared_data):\n    pass\n")
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    outcome.assert_outcomes(skipped=1)
    assert any("1 tests skipped: ../shared/data is not beside this checkout" in line
               for line in outcome.outlines)


def test_names_with_brackets_show_in_full_in_the_table():
    results = [ShotResult(path="/p/[x]1.jpg", files=["/p/[x]1.jpg"], label="accepted",
                          mos=80.0, stars=5),
               ShotResult(path="/p/[bold]2.jpg", files=["/p/[bold]2.jpg"], error="broken [red]")]
    text = "\n".join(rendered(results_table(results, width=100), 100))
    assert "[x]1.jpg" in text and "[bold]2.jpg" in text and "broken [red]" in text


def test_usage_messages_keep_square_brackets(tmp_path):
    missing = tmp_path / "[x] trip"
    result = runner.invoke(app, ["cull", str(missing)])
    assert result.exit_code == 2 and f"{missing}: does not exist" in " ".join(result.stderr.split())


def test_dry_run_counts_in_words(tmp_path, tiny_model):
    make_photo(tmp_path / "p" / "a.jpg")
    result = runner.invoke(app, ["cull", str(tmp_path / "p"), "--dry-run", "--model", str(tiny_model)])
    assert "would write labels for 1 shot (" in result.stdout


def test_undo_prints_folder_names_as_they_are(tmp_path, tiny_model):
    root = tmp_path / "[red] trip"  # a style name: rich markup would swallow it
    make_photo(root / "a.jpg", brightness=3)
    culled = runner.invoke(app, ["cull", str(root), "--model", str(tiny_model)])
    assert culled.exit_code == 0 and f"undo with: iqs undo {root}" in culled.stdout
    again = runner.invoke(app, ["undo", str(root)])
    assert again.exit_code == 0 and "undid the run" in again.stdout
    assert f"nothing to undo in {root}" in runner.invoke(app, ["undo", str(root)]).stdout
