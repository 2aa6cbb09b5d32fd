"""The tidy schema (attnlab.tables): one column list, defaults, CIs, dtypes, atomic CSVs."""
import math
import os

import pandas as pd
import pytest
import torch

from attnlab import tables
from attnlab.layout import TokenLayout
from attnlab.metrics import ROW_COLUMNS, AttentionStats
from attnlab.tables import COLUMNS, DEFAULTS, SCHEMA, Z95, columns_except, tidy, write_csv

# The CSV schema every command writes: changing it breaks every reader of old results.
EXPECTED_COLUMNS = ("model", "checkpoint", "arch", "attention", "transform", "magnitude", "magnitude_y", "layer",
                    "head", "metric", "radius", "value", "std", "ci_low", "ci_high", "n_images", "stage", "n_seeds",
                    "seeds")


def row(**kw):
    base = {"model": "m", "checkpoint": "abc123", "metric": "entropy", "value": 1.5, "n_images": 4}
    return {**base, **kw}


# --------------------------------------------------------------------------- the schema as data


def test_schema_is_one_column_list_with_meanings():
    assert COLUMNS == EXPECTED_COLUMNS
    assert tuple(c.name for c in SCHEMA) == COLUMNS
    assert all(c.meaning.strip() for c in SCHEMA)
    assert tables.REQUIRED == ("model", "checkpoint", "metric", "value", "n_images")
    assert set(DEFAULTS) | set(tables.REQUIRED) == set(COLUMNS)
    assert not set(DEFAULTS) & set(tables.REQUIRED)


def test_streaming_rows_are_a_subset_of_the_schema_in_its_order():
    assert ROW_COLUMNS == ("model", "checkpoint", "attention", "layer", "head", "metric", "radius", "value", "std",
                           "n_images")
    assert ROW_COLUMNS == tuple(c for c in COLUMNS if c in ROW_COLUMNS)
    assert columns_except() == COLUMNS
    with pytest.raises(ValueError, match="not_a_column"):
        columns_except("arch", "not_a_column")


def test_streaming_frame_tidies_into_the_schema():
    layout = TokenLayout(1, 2, 16)
    stats = AttentionStats(radii=(0.0, 1.0))
    stats.update(0, (3 * torch.randn(3, 2, 5, 5)).softmax(-1), layout)
    df = tidy(stats.to_frame("m", "c"), arch="vit_tiny")
    assert tuple(df.columns) == COLUMNS
    assert (df["arch"] == "vit_tiny").all() and (df["transform"] == "none").all()
    assert df["ci_low"].notna().all()  # std over 3 images is finite, so is the interval


# --------------------------------------------------------------------------- tidy


def test_defaults_filled_for_missing_columns():
    df = tidy([row()])
    r = df.iloc[0]
    assert r["arch"] == "" and r["attention"] == "-" and r["transform"] == "none"
    assert r["layer"] == -1 and r["head"] == -1 and r["stage"] == 0
    for c in ("magnitude", "magnitude_y", "radius", "std", "ci_low", "ci_high"):  # no std: no interval either
        assert math.isnan(r[c]), c


def test_defaults_fill_gaps_left_by_concatenated_frames():
    with_layer = pd.DataFrame([row(layer=3, head=1, attention="own")])
    without = pd.DataFrame([row()])
    df = tidy(pd.concat([with_layer, without], ignore_index=True))
    assert df["layer"].tolist() == [3, -1]
    assert df["head"].tolist() == [1, -1]
    assert df["attention"].tolist() == ["own", "-"]


def test_constants_apply_to_every_row_and_override():
    df = tidy([row(arch="old"), row(metric="mad_px")], arch="vit_small", transform="shift", magnitude=2.0)
    assert df["arch"].tolist() == ["vit_small", "vit_small"]
    assert df["transform"].tolist() == ["shift", "shift"]
    assert df["magnitude"].tolist() == [2.0, 2.0]
    # a constant may also supply a required column
    rows = [{k: v for k, v in row().items() if k != "checkpoint"}]
    assert tidy(rows, checkpoint="timm:vit").loc[0, "checkpoint"] == "timm:vit"


@pytest.mark.parametrize("missing", ["model", "checkpoint", "metric", "value", "n_images"])
def test_required_column_missing_is_an_error(missing):
    rows = [{k: v for k, v in row().items() if k != missing}]
    with pytest.raises(ValueError, match=rf"required columns \['{missing}'\]"):
        tidy(rows)


def test_unknown_column_is_an_error():
    with pytest.raises(ValueError, match=r"columns \['accuracy'\] are not in the schema"):
        tidy([row(accuracy=0.9)])
    with pytest.raises(ValueError, match="not in the schema"):
        tidy([row()], epoch=3)  # constants are checked too


def test_normal_ci_filled_only_where_missing():
    rows = [
        row(value=2.0, std=1.0, n_images=16),                              # filled: 2 +- Z95 / 4
        row(value=2.0, std=1.0, n_images=16, ci_low=0.5, ci_high=3.5),     # a bootstrap CI, kept
        row(value=2.0, std=1.0, n_images=0),                               # n clipped to 1
        row(value=2.0, n_images=16),                                       # no std: no interval
    ]
    df = tidy(rows)
    half = Z95 * 1.0 / 4.0
    assert df.loc[0, "ci_low"] == pytest.approx(2.0 - half) and df.loc[0, "ci_high"] == pytest.approx(2.0 + half)
    assert (df.loc[1, "ci_low"], df.loc[1, "ci_high"]) == (0.5, 3.5)
    assert df.loc[2, "ci_low"] == pytest.approx(2.0 - Z95) and df.loc[2, "ci_high"] == pytest.approx(2.0 + Z95)
    assert math.isnan(df.loc[3, "ci_low"]) and math.isnan(df.loc[3, "ci_high"])
    assert Z95 == pytest.approx(1.959963984540054)


def test_integer_columns_and_column_order():
    shuffled = pd.DataFrame([row(layer=2.0, head=0.0, n_images=8.0)])[["value", "n_images", "metric", "checkpoint",
                                                                      "layer", "model", "head"]]
    df = tidy(shuffled)
    assert tuple(df.columns) == COLUMNS
    for c in ("layer", "head", "n_images", "stage"):
        assert df[c].dtype == "int64", c
    assert df["value"].dtype == "float64"


def test_the_stage_column_is_an_integer_and_zero_by_default():
    stage = SCHEMA[COLUMNS.index("stage")]
    assert DEFAULTS["stage"] == 0 and "stride" in stage.meaning
    df = tidy(pd.concat([pd.DataFrame([row(layer=3, stage=2)]), pd.DataFrame([row()])], ignore_index=True))
    assert df["stage"].tolist() == [2, 0] and df["stage"].dtype == "int64"


def test_one_run_by_default_and_the_seeds_when_given():
    assert COLUMNS[-2:] == ("n_seeds", "seeds") and DEFAULTS["n_seeds"] == 1 and DEFAULTS["seeds"] == "-"
    assert "t interval over runs" in SCHEMA[COLUMNS.index("n_seeds")].meaning
    df = tidy(pd.concat([pd.DataFrame([row(n_seeds=3, seeds="0,1,2")]), pd.DataFrame([row()])], ignore_index=True))
    assert df["n_seeds"].tolist() == [3, 1] and df["n_seeds"].dtype == "int64" and df["seeds"].tolist() == ["0,1,2", "-"]


def test_tidy_does_not_modify_its_input():
    frame = pd.DataFrame([row(value=1.0, std=0.5)])
    before = frame.copy()
    tidy(frame, arch="vit")
    pd.testing.assert_frame_equal(frame, before)


def test_empty_frame_keeps_the_schema():
    empty = pd.DataFrame(columns=list(ROW_COLUMNS))
    df = tidy(empty, arch="vit")
    assert tuple(df.columns) == COLUMNS and len(df) == 0


# --------------------------------------------------------------------------- write_csv


def test_write_csv_round_trip(tmp_path):
    df = tidy([row(std=0.1), row(metric="globality", radius=2.0, layer=1, head=0)], arch="vit")
    path = write_csv(df, tmp_path / "deep" / "er" / "table.csv")
    assert path == tmp_path / "deep" / "er" / "table.csv"
    pd.testing.assert_frame_equal(pd.read_csv(path), df)
    assert os.listdir(path.parent) == ["table.csv"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


class _Unprintable:
    """A cell that fails to turn into text: pandas has written earlier chunks by then."""

    def __str__(self):
        raise RuntimeError("cannot format this cell")

    __repr__ = __str__


def _failing_frame():
    return pd.DataFrame({"model": ["m"] * 4999 + [_Unprintable()], "value": range(5000)})


@pytest.mark.parametrize("existing", [False, True])
def test_write_csv_failing_midway_leaves_nothing_partial(tmp_path, existing):
    path = tmp_path / "table.csv"
    if existing:
        path.write_text("model,value\nold,1\n")
    with pytest.raises(RuntimeError, match="cannot format"):
        write_csv(_failing_frame(), path)
    assert os.listdir(tmp_path) == (["table.csv"] if existing else [])
    if existing:
        assert path.read_text() == "model,value\nold,1\n"


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_write_csv_interrupted_keeps_the_old_file(tmp_path, monkeypatch, error):
    path = tmp_path / "table.csv"
    path.write_text("old\n")

    def half_written(self, target, **kwargs):
        with open(target, "w") as f:
            f.write("model,va")
        raise error("interrupted")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_written)
    with pytest.raises(error):
        write_csv(tidy([row()]), path)
    assert os.listdir(tmp_path) == ["table.csv"]
    assert path.read_text() == "old\n"
