"""The panel engine against Qlib itself: every operator (nested), Alpha158 and the Qlib statistics.

The oracle is `D.features` on a Qlib store written from the same bars (each stock's bin starting at
its first day, as the store writes it); the panel must equal it bit for bit, NaN pattern included.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precompute_assets.indicators.expressions import panel_engine
from precompute_assets.indicators.expressions.qlib_engine import init_qlib
from precompute_assets.store.base_fields import BASE_FIELDS, base_fields
from precompute_assets.store.bin_file import write_bin
from precompute_assets.store.calendar import write_calendar
from precompute_assets.store.layout import StoreLayout

CALENDAR = pd.bdate_range("2015-01-05", periods=420)


def awkward_bars(seed: int, start: int, length: int) -> pd.DataFrame:
    """Random bars with NaN runs, single NaN rows, flat windows, zero and NaN volume, ties."""
    rng = np.random.default_rng(seed)
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, length)))
    close = close.round(2)  # ties for Rank/Quantile/IdxMax
    close[40:52] = close[39]  # a flat window: std 0, Corr/Rsquare masks
    frame = pd.DataFrame(
        {
            "open": close * rng.uniform(0.98, 1.02, length),
            "high": close * rng.uniform(1.0, 1.04, length),
            "low": close * rng.uniform(0.96, 1.0, length),
            "close": close,
            "volume": rng.integers(0, 5000, length).astype(float),
            "factor": np.ones(length),
        },
        index=CALENDAR[start : start + length],
    )
    frame.loc[frame.index[60:70], "volume"] = 0.0
    holes = rng.random(length) < 0.05
    frame.iloc[holes, :5] = np.nan
    frame.iloc[100:130, :5] = np.nan  # a suspension longer than every window
    frame.iloc[200:203, 4] = np.nan  # NaN volume with prices
    return frame


BARS = {
    "SH600001": awkward_bars(1, 0, 420),
    "SH600002": awkward_bars(2, 37, 383),  # listed later
    "SZ000003": awkward_bars(3, 5, 300),  # delisted before the end
    "SZ000004": awkward_bars(4, 150, 90),  # short life
}


def write_qlib_store(root: Path, bars_by_code: dict[str, pd.DataFrame], calendar: pd.DatetimeIndex = CALENDAR) -> Path:
    """A Qlib store of the bars' base fields, each stock's bins from its first calendar day."""
    layout = StoreLayout(root)
    write_calendar(layout, calendar)
    lines = []
    for code, bars in bars_by_code.items():
        start = int(calendar.get_loc(bars.index[0]))
        layout.stock_dir(code).mkdir(parents=True, exist_ok=True)
        for name, values in base_fields(bars).items():
            write_bin(layout.bin_path(code, name), start, values)
        lines.append(f"{code}\t{bars.index[0]:%Y-%m-%d}\t{bars.index[-1]:%Y-%m-%d}\n")
    layout.instruments_path.parent.mkdir(parents=True, exist_ok=True)
    layout.instruments_path.write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def qlib_store(tmp_path_factory):
    root = write_qlib_store(tmp_path_factory.mktemp("panel_qlib"), BARS)
    init_qlib(root)
    return root


def qlib_features(
    bars_by_code: dict[str, pd.DataFrame], fields: list[str], calendar: pd.DatetimeIndex = CALENDAR
) -> dict[str, np.ndarray]:
    """Qlib's own values, stock by stock, on each stock's bars rows, stored as the store stores them."""
    from qlib.data import D

    found = {}
    for code, bars in bars_by_code.items():
        frame = D.features([code], fields, start_time=calendar[0], end_time=calendar[-1], freq="day")
        frame = frame.xs(code, level="instrument").reindex(bars.index)
        values = frame.to_numpy(np.float32)
        found[code] = np.where(np.isinf(values), np.float32(np.nan), values)
    return found


def assert_panel_equals_qlib(
    expressions: list[str], bars_by_code: dict[str, pd.DataFrame] = BARS, calendar: pd.DatetimeIndex = CALENDAR
) -> None:
    """Every column of every stock equal to Qlib's, bit for bit (NaN where Qlib has NaN)."""
    expected = qlib_features(bars_by_code, expressions, calendar)
    got = panel_engine.evaluate_on_panel(dict(zip(expressions, expressions, strict=True)), bars_by_code, calendar)
    for code in bars_by_code:
        for column, expression in enumerate(expressions):
            np.testing.assert_array_equal(
                got[code][:, column], expected[code][:, column], err_msg=f"{code} {expression}"
            )


WINDOWED = ["Mean", "Sum", "Std", "Var", "Max", "Min", "Med", "Mad", "Rank", "Count", "IdxMax", "IdxMin"]
WINDOWED += ["Slope", "Rsquare", "Resi", "WMA", "EMA", "Delta", "Ref"]
OPERATOR_CASES = (
    [f"{op}($close, {n})" for op in WINDOWED for n in (1, 5, 20)]
    + [f"{op}($close, 0)" for op in WINDOWED if op not in ("Ref", "Delta")]
    + [f"{op}($volume, 30)" for op in ("Skew", "Kurt")]
    + ["Skew($close, 5)", "Kurt($close, 0)", "EMA($close, 0.3)"]
    + [f"Quantile($close, {n}, {q})" for n in (1, 5, 20) for q in (0.2, 0.5, 0.8)]
    + [f"{op}($close, $volume, {n})" for op in ("Corr", "Cov") for n in (1, 5, 20)]  # N=0 fails in Qlib
    + ["Abs($close-$open)", "Sign($close-Ref($close, 1))", "Log($volume+1)", "Power($close, 2)"]
    + ["Greater($open, $close)", "Less($open, $close)", "$close>$open", "$close>=$open", "$close<$open"]
    + ["$close<=$open", "$close==Ref($close, 1)", "$close!=Ref($close, 1)", "($close>$open)&($volume>0)"]
    + ["($close>$open)|($volume>0)", "Not($close>$open)", "If($close>$open, $high, $low)", "$vwap/$close"]
    + ["0-$close", "2*$close-$high-$low", "$close/$open", "1/$volume"]
)
NESTED_CASES = [
    "Mean($close>Ref($close, 1), 10)",
    "Sum(Greater($volume-Ref($volume, 1), 0), 5)/(Sum(Abs($volume-Ref($volume, 1)), 5)+1e-12)",
    "Std(Abs($close/Ref($close, 1)-1)*$volume, 10)/(Mean(Abs($close/Ref($close, 1)-1)*$volume, 10)+1e-12)",
    "Corr($close/Ref($close, 1), Log($volume/Ref($volume, 1)+1), 10)",
    "Rank(Slope(Mean($close, 5), 10), 20)",
    "IdxMax(Resi(Log($close), 10), 20)-IdxMin(Rsquare($close, 10), 20)",
    "Quantile(Delta($close, 3), 10, 0.8)/Max(Count($volume, 5), 1)",
    "EMA(Mean($close, 5), 10)-WMA(Ref($close, 2), 5)",
    "Mean(If($close>$open, $volume, 0), 5)",
    "Sum(Sign(Delta($close, 1)), 10)",
]


@pytest.mark.parametrize("expression", OPERATOR_CASES)
def test_each_operator_equals_qlib(qlib_store, expression):
    assert_panel_equals_qlib([expression])


@pytest.mark.parametrize("expression", NESTED_CASES)
def test_nested_expressions_equal_qlib(qlib_store, expression):
    assert_panel_equals_qlib([expression])


def test_alpha158_and_qlib_stats_equal_qlib_on_awkward_stocks(qlib_store):
    from precompute_assets.indicators.catalog import load_registry

    registry = load_registry()
    assert_panel_equals_qlib([i.expression for f in ("alpha158", "qlib_stats") for i in registry.all(f)])


def test_bars_with_other_columns_in_another_order_give_qlibs_values(qlib_store):
    # the base fields are read by column name: a text column and a reordering change nothing
    expressions = ["$vwap/$close", "Mean($volume, 5)/($volume+1e-12)", "($high-$low)/$open", "$factor"]
    noted = {code: bars.iloc[:, ::-1].assign(note="vendor") for code, bars in BARS.items()}
    expected = qlib_features(BARS, expressions)
    got = panel_engine.evaluate_on_panel(dict(zip(expressions, expressions, strict=True)), noted, CALENDAR)
    for code in BARS:
        np.testing.assert_array_equal(got[code], expected[code], err_msg=code)


def assert_within_one_ulp(got: np.ndarray, expected: np.ndarray, message: str) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{message}: NaN pattern")
    finite = ~np.isnan(expected)
    np.testing.assert_array_max_ulp(got[finite], expected[finite], maxulp=1)


@pytest.mark.parametrize("seed", range(3))
def test_tails_equal_the_full_history_within_one_ulp(qlib_store, seed):
    from precompute_assets.indicators.catalog import load_registry

    registry = load_registry()
    indicators = [i for f in ("alpha158", "qlib_stats") for i in registry.all(f)]
    expressions = {i.name: i.expression for i in indicators}
    rng = np.random.default_rng(seed)
    new_from = {code: bars.index[int(rng.integers(0, len(bars)))] for code, bars in BARS.items()}
    new_from["SH600001"] = BARS["SH600001"].index[-1]  # the daily update: one new day
    tails = panel_engine.evaluate_tails("alpha158", BARS, CALENDAR, new_from, expressions)
    full = qlib_features(BARS, list(expressions.values()))
    for code, bars in BARS.items():
        first = int(bars.index.searchsorted(new_from[code]))
        got = tails.frames[code]
        assert got.index.equals(bars.index[first:])
        for column, name in enumerate(expressions):
            assert_within_one_ulp(
                got[name].to_numpy(), full[code][first:, column], f"{code} {name} {expressions[name]}"
            )


TAIL_CASES = [e for e in OPERATOR_CASES + NESTED_CASES if "EMA" not in e and ", 0)" not in e]
"""Every operator, nested too, whose value Qlib's window accounting bounds (EMA and expanding windows
read the whole history, so a tail cannot equal it)."""


@pytest.mark.parametrize("seed", range(2))
def test_tails_of_every_operator_equal_qlibs_full_history_within_one_ulp(qlib_store, seed):
    # each operator runs on only the rows its consumers read: a wrong count shows as a partial window
    rng = np.random.default_rng(100 + seed)
    new_from = {code: bars.index[int(rng.integers(0, len(bars)))] for code, bars in BARS.items()}
    new_from["SH600001"] = BARS["SH600001"].index[-1]
    tails = panel_engine.evaluate_tails("alpha158", BARS, CALENDAR, new_from, {e: e for e in TAIL_CASES})
    full = qlib_features(BARS, TAIL_CASES)
    for code, bars in BARS.items():
        first = int(bars.index.searchsorted(new_from[code]))
        assert tails.frames[code].index.equals(bars.index[first:])
        for column, expression in enumerate(TAIL_CASES):
            got = tails.frames[code][expression].to_numpy()
            assert_within_one_ulp(got, full[code][first:, column], f"{code} {expression}")


def test_an_unsupported_operator_takes_qlibs_path_and_the_run_says_so(qlib_store, caplog, monkeypatch):
    # Kurt stands for an operator the panel lacks (a user's own or a future Qlib one): the panel
    # must hand its expressions to Qlib's engine and name it once, whatever the number of batches
    monkeypatch.setattr(panel_engine, "NOT_ON_A_PANEL", panel_engine.NOT_ON_A_PANEL | {"Kurt"})
    monkeypatch.setattr(panel_engine, "_REPORTED", set())
    expressions = {"mean5": "Mean($close, 5)", "kurt": "Kurt($close, 20)/Mean($close, 5)"}
    expected = qlib_features(BARS, list(expressions.values()))
    with caplog.at_level(logging.WARNING, logger=panel_engine.__name__):
        result = panel_engine.evaluate_expressions("alpha158", BARS, CALENDAR, expressions)
        panel_engine.evaluate_expressions("alpha158", BARS, CALENDAR, expressions)
    said = [r.getMessage() for r in caplog.records if "Kurt" in r.getMessage()]
    assert len(said) == 1, said
    init_qlib(qlib_store)  # Qlib's engine pointed Qlib at its staging store
    for code in BARS:
        got = result.frames[code][list(expressions)].to_numpy()
        np.testing.assert_array_equal(got, expected[code], err_msg=code)
    with pytest.raises(panel_engine.UnsupportedOperator, match="ChangeInstrument"):
        panel_engine.evaluate_on_panel({"x": "ChangeInstrument('SH600001', $close)"}, BARS, CALENDAR)


def test_tails_with_an_unsupported_operator_take_qlibs_path(qlib_store, monkeypatch):
    # Qlib's engine gets each stock's bars from as far back as its expressions read: only the new
    # days of its values are the tail's
    monkeypatch.setattr(panel_engine, "NOT_ON_A_PANEL", panel_engine.NOT_ON_A_PANEL | {"Kurt"})
    monkeypatch.setattr(panel_engine, "_REPORTED", set())
    expressions = {"mean5": "Mean($close, 5)", "kurt": "Kurt($close, 20)/Mean($close, 5)"}
    expected = qlib_features(BARS, list(expressions.values()))
    new_from = {code: bars.index[-3] for code, bars in BARS.items()}
    tails = panel_engine.evaluate_tails("alpha158", BARS, CALENDAR, new_from, expressions)
    init_qlib(qlib_store)  # Qlib's engine pointed Qlib at its staging store
    for code, bars in BARS.items():
        first = int(bars.index.searchsorted(new_from[code]))
        for column, name in enumerate(expressions):
            got = tails.frames[code][name].to_numpy()
            assert_within_one_ulp(got, expected[code][first:, column], f"{code} {name}")


def test_the_engine_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.delenv(panel_engine.ENGINE_VARIABLE, raising=False)
    assert panel_engine.expression_engine() == "panel"
    monkeypatch.setenv(panel_engine.ENGINE_VARIABLE, "qlib")
    assert panel_engine.expression_engine() == "qlib"
    monkeypatch.setenv(panel_engine.ENGINE_VARIABLE, "fast")
    with pytest.raises(ValueError):
        panel_engine.expression_engine()


assert set(BASE_FIELDS) <= set(base_fields(BARS["SH600001"]))
