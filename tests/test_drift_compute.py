"""`sluice drift compute` end to end: verdicts, outputs, both readers, Parquet, every refusal."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import sluice

from engine.adapters import drift_files
from engine.adapters import drift_tables as tables
from engine.app.drift_compute import compute
from engine.core import expression_eval, expressions

HAVE_PYARROW = drift_files.have_pyarrow()
needs_pyarrow = pytest.mark.skipif(not HAVE_PYARROW, reason="pyarrow is not installed")


def write_csv(path: Path, columns: dict[str, Sequence[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    return path


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def normal_columns(seed: int, rows: int, shift: dict[str, float] | None = None) -> dict[str, Any]:
    """Five standard-normal features x0..x4 (as Python floats), some shifted."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    return {f"x{i}": (rng.normal(size=rows) + shift.get(f"x{i}", 0.0)).tolist() for i in range(5)}


@pytest.fixture(params=["pyarrow", "stdlib"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each CSV reader; `stdlib` hides pyarrow as if not installed."""
    if request.param == "pyarrow" and not HAVE_PYARROW:
        pytest.skip("pyarrow is not installed")
    if request.param == "stdlib":
        monkeypatch.setattr(drift_files, "have_pyarrow", lambda: False)
    return str(request.param)


def compute_cli(*args: str) -> tuple[int, str, str]:
    """Run `sluice drift compute ARGS` in-process: (exit code, stdout, stderr)."""
    done = sluice("drift", "compute", *args)
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, done.stdout, done.stderr


def refused(*args: str) -> str:
    """The error of a run that must exit 2, on one line-joined string."""
    code, out, err = compute_cli(*args)
    assert code == 2, (out, err)
    assert err.startswith("sluice: error: "), err
    return err


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "report"


# -- verdicts ---------------------------------------------------------------------------


def test_two_draws_of_one_distribution_do_not_drift(
    tmp_path: Path, out_dir: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", normal_columns(1, 5000))
    cur = write_csv(tmp_path / "cur.csv", normal_columns(2, 5000))
    code, out, _ = compute_cli(
        "--reference", str(ref), "--current", str(cur), "--out", str(out_dir)
    )
    assert code == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["drift_detected"] is False
    assert metrics["drifted_features"] == 0 and metrics["features"] == 5
    assert 0 < metrics["drift_score"] < 0.05  # KS D of two 5,000-draws is about 0.01-0.03
    assert out.splitlines()[0].startswith("No drift in 5 features")


def test_a_two_sigma_shift_in_one_feature_flags_that_feature_only(
    tmp_path: Path, out_dir: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", normal_columns(1, 5000))
    cur = write_csv(tmp_path / "cur.csv", normal_columns(2, 5000, shift={"x3": 2.0}))
    code, _, _ = compute_cli("--reference", str(ref), "--current", str(cur), "--out", str(out_dir))
    assert code == 0  # drift is a finding, not a failure
    details = json.loads((out_dir / "drift.json").read_text())
    assert details["drift_detected"] is True
    assert details["drifted_features"] == ["x3"]
    shifted = details["features"]["x3"]
    assert shifted["method"] == "ks" and shifted["score"] == shifted["ks_statistic"] > 0.6
    assert shifted["psi"] > 2  # both statistics are reported for numeric features
    assert shifted["ks_pvalue"] < 1e-12
    assert details["features"]["x0"]["drifted"] is False
    bins = shifted["bins"]
    assert len(bins) == 10 and bins[0]["low"] is None and bins[-1]["high"] is None
    assert sum(b["reference"] for b in bins) == pytest.approx(1.0)
    assert bins[-1]["current"] > 0.7  # P(N(2, 1) > 1.28) = 0.76: the open top bin
    report = (out_dir / "report.md").read_text().splitlines()
    assert report[0] == "# Drift detected in 1 of 5 features (largest score " + (
        f"{shifted['score']:.4g}: x3)"
    )
    rows = [line for line in report if line.startswith("| `")]
    assert rows[0].startswith("| `x3` | numeric | ks |") and rows[0].endswith("| **yes** |")
    scores = [float(row.split("|")[4]) for row in rows]
    assert scores == sorted(scores, reverse=True)


def test_a_new_category_is_caught(
    tmp_path: Path, out_dir: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(7)
    plans = ["basic", "pro", "team"]
    ref = {"plan": rng.choice(plans, size=3000).tolist(), "age": rng.normal(40, 9, 3000).tolist()}
    cur = {
        "plan": rng.choice([*plans, "enterprise"], size=3000, p=[0.3, 0.3, 0.2, 0.2]).tolist(),
        "age": rng.normal(40, 9, 3000).tolist(),
    }
    args = ["--reference", str(write_csv(tmp_path / "r.csv", ref))]
    args += ["--current", str(write_csv(tmp_path / "c.csv", cur)), "--out", str(out_dir), "--json"]
    code, out, _ = compute_cli(*args)
    assert code == 0
    details = json.loads(out)
    assert details == json.loads((out_dir / "drift.json").read_text())
    plan = details["features"]["plan"]
    assert plan["type"] == "categorical" and plan["method"] == "psi" and plan["drifted"] is True
    assert plan["ks_statistic"] is None and plan["ks_pvalue"] is None
    new = [c for c in plan["categories"] if c["value"] == "enterprise"]
    assert new and new[0]["reference"] == 0 and new[0]["current"] == pytest.approx(0.2, abs=0.03)
    assert details["drifted_features"] == ["plan"]


def test_fail_on_drift_exits_1_after_writing_the_report(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", normal_columns(1, 500))
    cur = write_csv(tmp_path / "cur.csv", normal_columns(2, 500, shift={"x1": 3.0}))
    args = ["--reference", str(ref), "--current", str(cur), "--out", str(out_dir)]
    assert compute_cli(*args, "--fail-on-drift")[0] == 1
    assert json.loads((out_dir / "metrics.json").read_text())["drift_detected"] is True
    same = write_csv(tmp_path / "same.csv", normal_columns(1, 500))
    args = ["--reference", str(ref), "--current", str(same), "--out", str(out_dir)]
    assert compute_cli(*args, "--fail-on-drift")[0] == 0


def test_method_psi_scores_numbers_by_psi_and_thresholds_apply_per_method(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", normal_columns(1, 2000))
    cur = write_csv(tmp_path / "cur.csv", normal_columns(2, 2000, shift={"x2": 0.5}))
    base = ["--reference", str(ref), "--current", str(cur), "--out", str(out_dir), "--json"]
    psi = json.loads(compute_cli(*base, "--method", "psi")[1])
    x2 = psi["features"]["x2"]
    assert x2["method"] == "psi" and x2["score"] == x2["psi"] and x2["threshold"] == 0.2
    assert psi["drifted_features"] == ["x2"]
    # A bare --threshold sets every method; a per-method one wins whatever the order.
    mixed = json.loads(compute_cli(*base, "--threshold", "ks=0.9", "--threshold", "0.5")[1])
    assert mixed["thresholds"] == {"psi": 0.5, "ks": 0.9}
    assert mixed["drift_detected"] is False
    strict = json.loads(compute_cli(*base, "--threshold", "ks=0.001", "--bins", "4")[1])
    assert strict["drifted_features"] == ["x0", "x1", "x2", "x3", "x4"]
    assert len(strict["features"]["x0"]["bins"]) == 4


def test_features_select_columns_repeated_or_comma_separated(
    tmp_path: Path, out_dir: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", normal_columns(1, 300))
    cur = write_csv(tmp_path / "cur.csv", normal_columns(2, 300))
    args = ["--reference", str(ref), "--current", str(cur), "--out", str(out_dir), "--json"]
    found = json.loads(compute_cli(*args, "--features", "x4, x1", "--features", "x0,x4")[1])
    assert list(found["features"]) == ["x4", "x1", "x0"]


# -- outputs ----------------------------------------------------------------------------


def test_metrics_are_flat_numbers_whose_keys_work_in_when_expressions(
    tmp_path: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["mean radius", "mean_radius", "mean.radius", "größe", "kind-of", "9lives"]
    rng = np.random.default_rng(11)
    data = {name: rng.normal(size=200).tolist() for name in names}
    ref, cur = write_csv(tmp_path / "r.csv", data), write_csv(tmp_path / "c.csv", data)
    code, _, _ = compute_cli("--reference", str(ref), "--current", str(cur), "--out", str(out_dir))
    assert code == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert list(metrics)[:4] == ["drift_detected", "drift_score", "drifted_features", "features"]
    assert [k for k in metrics if k.startswith("feature_")] == [
        "feature_mean_radius",
        "feature_mean_radius_2",
        "feature_mean_radius_3",
        "feature_gr__e",
        "feature_kind-of",
        "feature_9lives",
    ]
    for key, value in metrics.items():
        assert isinstance(value, bool | int | float), (key, value)
        if isinstance(value, bool):
            parsed = expressions.parse(f"metrics.{key} == {str(value).lower()}")
            assert expression_eval.holds(parsed, {"metrics": metrics})
        else:
            parsed = expressions.parse(f"metrics.{key} > 0.3")
            assert expression_eval.holds(parsed, {"metrics": metrics}) is (value > 0.3)
    details = json.loads((out_dir / "drift.json").read_text())
    assert details["features"]["mean.radius"]["metric"] == "feature_mean_radius_3"


def test_out_defaults_to_sluice_outputs_then_drift_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_csv(tmp_path / "ref.csv", normal_columns(1, 100))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICE_OUTPUTS", str(tmp_path / "outputs"))
    assert compute_cli("--reference", "ref.csv", "--current", "ref.csv")[0] == 0
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [
        "drift.json",
        "metrics.json",
        "report.md",
    ]
    monkeypatch.delenv("SLUICE_OUTPUTS")
    assert compute_cli("--reference", str(ref), "--current", str(ref))[0] == 0
    assert (tmp_path / "drift-report" / "metrics.json").is_file()


def test_help_does_not_import_numpy_or_pyarrow() -> None:
    code = (
        "import sys, engine.cli.main; "
        "assert 'numpy' not in sys.modules and 'pyarrow' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the two readers, Parquet ------------------------------------------------------------

EDGE_VALUES = [
    "1", "+1", "-1", "1.", ".5", "+.5", "1e5", "1E+5", "1e-5", " 2", "3 ", "\t4", "00012",
    "-0", "1.e5", "1e400", "inf", "-Infinity", "NAN", "nan", "", "NA", "null",
    "1_000", "0x10", "\u0661", "1,5", ".", "-", "1e", "e5", "--1", "1ee5", "\xa01", "abc", "true",
]  # fmt: skip


@needs_pyarrow
def test_the_number_rule_is_pyarrows_float_parser() -> None:
    import pyarrow as pa

    from engine.adapters import drift_arrow as arrow

    def arrow_numbers(values: list[str]) -> Any:
        return arrow.as_numbers(pa.chunked_array([pa.array(values, pa.string())]))

    assert arrow_numbers(EDGE_VALUES) is None  # mixed: some values are no number
    for value in EDGE_VALUES:
        if value in tables.MISSING:
            continue
        parsed = arrow_numbers([value])
        assert (parsed is not None) == bool(tables.NUMBER.fullmatch(value)), value
        plain = tables._parse_numbers([value])
        assert (plain is not None) == (parsed is not None), value
        if plain is not None:
            assert np.array_equal(plain, parsed.to_numpy(), equal_nan=True), value


def _both_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> list[str]:
    """Run compute with pyarrow and with the stdlib reader: both outputs, or both errors."""
    found = []
    for fast in (True, False):
        monkeypatch.setattr(drift_files, "have_pyarrow", lambda fast=fast: fast)
        try:
            result = compute(*args)
        except tables.DataError as exc:
            found.append(f"error: {exc}")
        else:
            from engine.app import drift_report as report

            found.append(json.dumps(report.details(result), sort_keys=True))
    return found


@needs_pyarrow
def test_csv_readers_agree_on_awkward_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = write_lines(
        tmp_path / "ref.csv",
        "\ufeffpadded,sci,label,note",  # a byte-order mark before the header
        ' 1.5,1e3,a,"hello, world"',
        "2.5 ,+.5,b,plain",
        "",  # blank lines are skipped
        '\t3.5,-2E-2,"a","two',
        'lines"',
        "4.5,7.,c,x",
    )
    cur = write_lines(tmp_path / "cur.csv", "note,label,sci,padded", "y,a,2,1", "z,b,3,9")
    reports = _both_readers(tmp_path, monkeypatch, str(ref), str(cur))
    assert reports[0] == reports[1]
    details = json.loads(reports[0])
    assert details["reference"]["rows"] == 4
    assert details["features"]["padded"]["type"] == "numeric"
    assert details["features"]["note"]["type"] == "categorical"
    notes = {c["value"] for c in details["features"]["note"]["categories"]}
    assert notes == {"hello, world", "plain", "two\nlines", "x", "y", "z"}


BAD_FILES = {
    "missing.csv": ("a,b", "1,x", "2,", "NA,y", "4,z"),
    "ragged.csv": ("a,b", "1,x", "2,y,extra"),
    "quoted-ragged.csv": ("a,b", '1,"multi', 'line"', "2"),
    "text-in-numbers.csv": ("a,b", "1,x", "2,y", "three,z"),
    "infinite.csv": ("a,b", "1,x", "1e999,y"),
    "header-only.csv": ("a,b",),
}


@needs_pyarrow
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_csv_readers_give_the_same_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    good = write_lines(tmp_path / "good.csv", "a,b", "1,x", "2,y", "3,z")
    bad = write_lines(tmp_path / name, *BAD_FILES[name])
    errors = _both_readers(tmp_path, monkeypatch, str(good), str(bad))
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"error: {bad}")


@needs_pyarrow
def test_parquet_gives_the_same_result_as_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(21)
    ref = {"n": rng.normal(size=800).tolist(), "k": rng.choice(["u", "v"], 800).tolist()}
    cur = {"n": rng.normal(0.4, size=800).tolist(), "k": rng.choice(["u", "v", "w"], 800).tolist()}
    from_csv = compute(
        str(write_csv(tmp_path / "r.csv", ref)), str(write_csv(tmp_path / "c.csv", cur))
    )
    from_parquet = compute(
        str(write_parquet(tmp_path / "r.parquet", ref)), str(write_parquet(tmp_path / "c.pq", cur))
    )
    mixed = compute(str(tmp_path / "r.csv"), str(tmp_path / "c.pq"))
    for result in (from_parquet, mixed):
        assert [(f.name, f.kind, f.score, f.psi) for f in result.features] == [
            (f.name, f.kind, f.score, f.psi) for f in from_csv.features
        ]
    assert from_parquet.reference.format == "parquet"


@needs_pyarrow
def test_parquet_column_types(tmp_path: Path) -> None:
    import pyarrow as pa

    rows = 200
    rng = np.random.default_rng(4)
    columns = {
        "ints": pa.array(rng.integers(0, 50, rows)),
        "floats32": pa.array(rng.normal(size=rows).astype(np.float32)),
        "flags": pa.array(rng.integers(0, 2, rows).astype(bool)),
        "words": pa.array(rng.choice(["a", "b"], rows)).dictionary_encode(),
        "numeric_text": pa.array([str(v) for v in rng.integers(0, 9, rows)]),
    }
    path = write_parquet(tmp_path / "t.parquet", columns)
    result = compute(str(path), str(path))
    kinds = {f.name: f.kind for f in result.features}
    assert kinds == {
        "ints": "numeric",
        "floats32": "numeric",
        "flags": "categorical",
        "words": "categorical",
        "numeric_text": "numeric",
    }
    flags = next(f for f in result.features if f.name == "flags")
    assert flags.by_category is not None and sorted(flags.by_category.categories) == [
        "false",
        "true",
    ]
    assert result.drift_detected is False


# -- refusals ---------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path: Path) -> Iterator[Path]:
    yield write_lines(tmp_path / "good.csv", "age,plan", "31,basic", "45,pro", "52,basic")


def test_missing_values_are_counted_and_located(
    tmp_path: Path, good: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_lines(tmp_path / "bad.csv", "age,plan", "31,basic", ",pro", "52,basic", "NaN,pro")
    err = refused("--reference", str(good), "--current", str(bad))
    assert f"{bad}:3: column 'age': 2 missing values" in err
    assert "hint:" in err and "--features" in err


def test_a_constant_reference_feature_is_refused(
    tmp_path: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_lines(tmp_path / "ref.csv", "age,level", "31,3", "45,3", "52,3")
    cur = write_lines(tmp_path / "cur.csv", "age,level", "30,3", "40,4", "50,3")
    err = refused("--reference", str(ref), "--current", str(cur))
    assert f"{ref}: column 'level': every value is 3" in err
    assert "--features age" in err


def test_a_feature_missing_from_a_file_is_named_with_a_suggestion(
    tmp_path: Path, good: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_lines(tmp_path / "other.csv", "age,plans", "31,basic")
    err = refused("--reference", str(good), "--current", str(other))
    assert f"{other}: has no column 'plan' (did you mean 'plans'?)" in err
    err = refused("--reference", str(good), "--current", str(good), "--features", "agee")
    assert f"{good}: has no column 'agee' (did you mean 'age'?)" in err


def test_numbers_in_one_file_and_text_in_the_other_name_the_first_text_line(
    tmp_path: Path, good: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_lines(tmp_path / "bad.csv", "age,plan", "31,basic", "45,pro", "fifty,pro")
    err = refused("--reference", str(good), "--current", str(bad))
    assert f"{bad}:4: column 'age': 'fifty' is not a number, but every value" in err
    assert str(good) in err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "is empty: no header row"),
        (("age,plan",), "has a header but no rows"),
        (("age,plan", "31,basic", "45,pro,extra"), ":3: has 3 fields but the header has 2"),
        (("age,age", "1,2"), "has two columns named 'age'"),
    ],
)
def test_malformed_csv_files_are_refused(
    tmp_path: Path,
    good: Path,
    reader: str,
    capsys: pytest.CaptureFixture[str],
    lines: tuple[str, ...],
    message: str,
) -> None:
    bad = write_lines(tmp_path / "bad.csv", *lines)
    err = refused("--reference", str(good), "--current", str(bad))
    assert f"{bad}{message}" in err or f"{bad}: {message}" in err


def test_unknown_unreadable_and_absent_files_are_refused(
    tmp_path: Path, good: Path, reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = write_lines(tmp_path / "data.txt", "age", "1")
    err = refused("--reference", str(text), "--current", str(good))
    assert f"{text}: unknown file type '.txt'" in err
    err = refused("--reference", str(good), "--current", str(tmp_path / "nope.csv"))
    assert f"{tmp_path / 'nope.csv'}: no such file" in err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("age,plan\n31,caf\xe9\n".encode("latin-1"))
    assert f"{latin}: is not UTF-8 text" in refused(
        "--reference", str(good), "--current", str(latin)
    )
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    err = refused("--reference", str(good), "--current", str(broken))
    if reader == "stdlib":
        assert f"{broken}: reading Parquet files needs pyarrow" in err
        assert "pip install 'sluice[drift]'" in err
    else:
        assert f"{broken}: is not a readable Parquet file" in err


def test_categorical_features_under_ks_suggest_another_method(
    good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused("--reference", str(good), "--current", str(good), "--method", "ks")
    assert "column 'plan': holds text (categories); KS needs numbers" in err
    assert "--method auto" in err and "--method psi" in err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "--threshold 'abc': not a number"),
        ("psi=-1", "must be a positive number"),
        ("chi2=0.1", "unknown statistic 'chi2'"),
        ("ks=0.1", "given twice"),
    ],
)
def test_bad_thresholds_are_usage_errors(
    good: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    args = ["--reference", str(good), "--current", str(good), "--threshold", "ks=0.2"]
    assert message in refused(*args, "--threshold", value)
