import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fittingroom.cli import main
from fittingroom.evaluation.compare import compare_runs, format_table, text_chart
from fittingroom.figures.evaluation import compare_curves_png


@pytest.fixture
def two_runs(tiny_run, tmp_path):
    """The tiny run and a copy of it with a better accuracy and a different history."""
    other = shutil.copytree(tiny_run, tmp_path / "better")
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "test_accuracy": 2.0}))  # the best by construction
    with open(other / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["val_accuracy"] = str(float(row["val_accuracy"]) / 2)
    with open(other / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tiny_run, other


def test_compare_runs_reads_the_key_figures_and_histories(two_runs):
    first, other = two_runs
    rows = compare_runs([first, other])
    assert [row["run"] for row in rows] == [first.name, "better"]
    metrics = json.loads((first / "metrics.json").read_text())
    assert rows[0]["test_accuracy"] == metrics["test_accuracy"] and rows[0]["params"] == 266_004
    assert rows[0]["test_macro_f1"] == metrics["test_macro_f1"]  # evaluation figures are compared too
    assert rows[1]["history"]["val_accuracy"] == [v / 2 for v in rows[0]["history"]["val_accuracy"]]


def test_format_table_aligns_columns_and_marks_the_best(two_runs):
    table = format_table(compare_runs(list(two_runs)))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "model", "preset"] and len(lines) == 3
    assert lines[2].startswith("better") and lines[2].endswith("<") and not lines[1].endswith("<")
    assert "2.0000" in lines[2] and "266,004" in lines[1]
    end = lines[0].index("test acc") + len("test acc")  # numbers are right-aligned under their title
    assert all(line[end - 1].isdigit() and line[end] == " " for line in lines[1:])


def test_runs_with_the_same_folder_name_are_told_apart_by_path(tiny_run, tmp_path):
    copy = shutil.copytree(tiny_run, tmp_path / "x" / tiny_run.name)
    assert [row["run"] for row in compare_runs([tiny_run, copy])] == [str(tiny_run), str(copy)]


def test_text_chart_puts_each_point_where_it_belongs():
    chart = text_chart({"up": [0.0, 0.5, 1.0], "flat": [0.5, 0.5, 0.5]}, title="acc", width=11, height=5)
    lines = chart.splitlines()
    grid = [line.split("|", 1)[1] for line in lines[1:6]]
    assert lines[0] == "acc" and lines[1].startswith("1.0000") and lines[5].startswith("0.0000")
    assert grid[4][0] == "*" and grid[0][10] == "*"  # "up" goes from bottom left to top right
    assert grid[2][0] == "o" and grid[2][10] == "o" and grid[2][5] == "o"  # the later curve wins a shared cell
    assert lines[-2:] == ["  * up", "  o flat"]
    assert text_chart({"a": []}) == "no history to plot"


def test_compare_curves_png_draws_one_colour_per_run():
    png = compare_curves_png({"a": {"val_accuracy": [0.5, 0.6], "val_loss": [1, 0.8]},
                              "b": {"val_accuracy": [0.7, 0.9], "val_loss": [0.6, 0.3]}})
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    for colour in ([0x1F, 0x77, 0xB4], [0xFF, 0x7F, 0x0E]):  # matplotlib's C0 and C1
        assert (np.abs(pixels - colour).sum(axis=2) < 30).sum() > 100


def test_compare_cli_prints_the_table_and_writes_the_picture(two_runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["compare", *map(str, two_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and "val_accuracy" in printed and f"Wrote {out}" in printed
    assert Image.open(out).size[0] > 500
    assert main(["compare", *map(str, two_runs), "--out", str(out), "--json", "--force"]) == 0  # redraws it
    result = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in result["runs"]] == [two_runs[0].name, "better"] and "history" not in result["runs"][0]


def test_compare_a_folder_that_is_not_a_run_or_an_unwritable_picture(tiny_run, tmp_path, capsys):
    assert main(["compare", str(tiny_run), str(tmp_path), "--out", str(tmp_path / "c.png")]) == 1
    assert "not a run or model folder" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
    assert main(["compare", str(tiny_run), "--out", str(tmp_path / "missing" / "c.png")]) == 1
    assert "--out" in capsys.readouterr().err
