"""The technical family against outside references only.

Oracles: the TA-Lib reference files and the non-TA-Lib reference file of `refdata/talib_reference`
(SH600000, SH600519), TA-Lib run here on five other real stocks, the StockCharts-derived spreadsheets
of the `ta` project, and plain numpy. Nothing is compared with values this code once produced.
Also: point in time (changing later rows never changes earlier values) and missing days (a NaN row is
left out, so recursive indicators carry on across it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from conftest import leading_nans

from precompute_assets.indicators.families import technical
from precompute_assets.indicators.families.base import compute_per_stock
from precompute_assets.indicators.registry import REGISTRY

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"
TALIB_REF = REFDATA / "talib_reference"
FIXTURES = REFDATA / "ta_stockcharts_fixtures"
REQUIRED = ["open", "high", "low", "close", "volume"]

# fmt: off
DESIGN_ORDER = [
    "MA5", "MA10", "MA20", "MA60", "SMA", "EMA", "WMA", "RSI14", "STOCH_K", "STOCH_D", "WILLIAMS_R", "CCI",
    "MOMENTUM", "ROC", "MACD", "MACD_SIGNAL", "MACD_HIST", "BOLLINGER_UPPER", "BOLLINGER_MIDDLE", "BOLLINGER_LOWER",
    "SAR", "ADX", "ICHIMOKU_TENKAN", "ICHIMOKU_KIJUN", "ICHIMOKU_SENKOU_A", "ICHIMOKU_SENKOU_B", "VWAP_20", "OBV",
    "AD_LINE", "VOLUME_RSI", "ATR14", "VOLATILITY", "HISTORICAL_VOLATILITY", "KDJ_K", "KDJ_D", "KDJ_J"
]
REF_CODES = ["SH600000", "SH600519"]
OTHER_CODES = ["SZ000001", "SZ000792", "SH601318", "SZ300750", "SZ302132"]  # SZ302132 has NaN rows

# our column -> column of talib_reference/<CODE>.parquet (same TA-Lib call, per its README)
TALIB_REFERENCE = {
    "MA5": "MA5", "MA10": "MA10", "MA20": "MA20", "MA60": "MA60", "SMA": "SMA20", "WMA": "WMA20",
    "RSI14": "RSI14", "STOCH_K": "STOCH_K", "STOCH_D": "STOCH_D", "WILLIAMS_R": "WILLR14", "CCI": "CCI20",
    "MOMENTUM": "MOM10", "ROC": "ROC10", "MACD": "MACD", "MACD_SIGNAL": "MACD_SIGNAL", "MACD_HIST": "MACD_HIST",
    "BOLLINGER_UPPER": "BB_UPPER", "BOLLINGER_MIDDLE": "BB_MIDDLE", "BOLLINGER_LOWER": "BB_LOWER", "SAR": "SAR",
    "ADX": "ADX14", "ICHIMOKU_TENKAN": "MIDPRICE9", "ICHIMOKU_KIJUN": "MIDPRICE26", "OBV": "OBV", "AD_LINE": "AD",
    "VOLUME_RSI": "VOL_RSI14", "ATR14": "ATR14",
}  # EMA(c, 20) is not in the file: see test_ema_matches_talib

# our column -> column of talib_reference/<CODE>_nontalib.parquet
NONTALIB_REFERENCE = {
    "KDJ_K": "KDJ_K", "KDJ_D": "KDJ_D", "KDJ_J": "KDJ_J", "ICHIMOKU_TENKAN": "ICHI_TENKAN9",
    "ICHIMOKU_KIJUN": "ICHI_KIJUN26", "ICHIMOKU_SENKOU_A": "ICHI_SPAN_A", "ICHIMOKU_SENKOU_B": "ICHI_SPAN_B",
    "VOLATILITY": "VOL20_RET_STD", "HISTORICAL_VOLATILITY": "HV20",
}
# fmt: on

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# DESIGN.md's TA-Lib definitions, written out again here: (high, low, close, volume) -> column
TALIB_CALLS: dict[str, Callable[..., np.ndarray]] = {
    "MA5": lambda hi, lo, c, v: talib.SMA(c, 5),
    "MA10": lambda hi, lo, c, v: talib.SMA(c, 10),
    "MA20": lambda hi, lo, c, v: talib.SMA(c, 20),
    "MA60": lambda hi, lo, c, v: talib.SMA(c, 60),
    "SMA": lambda hi, lo, c, v: talib.SMA(c, 20),
    "EMA": lambda hi, lo, c, v: talib.EMA(c, 20),
    "WMA": lambda hi, lo, c, v: talib.WMA(c, 20),
    "RSI14": lambda hi, lo, c, v: talib.RSI(c, 14),
    "STOCH_K": lambda hi, lo, c, v: talib.STOCH(hi, lo, c, 14, 3, 0, 3, 0)[0],
    "STOCH_D": lambda hi, lo, c, v: talib.STOCH(hi, lo, c, 14, 3, 0, 3, 0)[1],
    "WILLIAMS_R": lambda hi, lo, c, v: talib.WILLR(hi, lo, c, 14),
    "CCI": lambda hi, lo, c, v: talib.CCI(hi, lo, c, 20),
    "MOMENTUM": lambda hi, lo, c, v: talib.MOM(c, 10),
    "ROC": lambda hi, lo, c, v: talib.ROC(c, 10),
    "MACD": lambda hi, lo, c, v: talib.MACD(c, 12, 26, 9)[0],
    "MACD_SIGNAL": lambda hi, lo, c, v: talib.MACD(c, 12, 26, 9)[1],
    "MACD_HIST": lambda hi, lo, c, v: talib.MACD(c, 12, 26, 9)[2],
    "BOLLINGER_UPPER": lambda hi, lo, c, v: talib.BBANDS(c, 20, 2.0, 2.0, 0)[0],
    "BOLLINGER_MIDDLE": lambda hi, lo, c, v: talib.BBANDS(c, 20, 2.0, 2.0, 0)[1],
    "BOLLINGER_LOWER": lambda hi, lo, c, v: talib.BBANDS(c, 20, 2.0, 2.0, 0)[2],
    "SAR": lambda hi, lo, c, v: talib.SAR(hi, lo, 0.02, 0.2),
    "ADX": lambda hi, lo, c, v: talib.ADX(hi, lo, c, 14),
    "ICHIMOKU_TENKAN": lambda hi, lo, c, v: talib.MIDPRICE(hi, lo, 9),
    "ICHIMOKU_KIJUN": lambda hi, lo, c, v: talib.MIDPRICE(hi, lo, 26),
    "OBV": lambda hi, lo, c, v: talib.OBV(c, v),
    "AD_LINE": lambda hi, lo, c, v: talib.AD(hi, lo, c, v),
    "VOLUME_RSI": lambda hi, lo, c, v: talib.RSI(v, 14),
    "ATR14": lambda hi, lo, c, v: talib.ATR(hi, lo, c, 14),
}
RECURSIVE = ["EMA", "RSI14", "MACD", "ATR14", "OBV", "KDJ_K"]


@cache
def _real_bars(code: str) -> pd.DataFrame:
    frame = pd.read_parquet(REFDATA / "csi300_daily" / f"{code}.parquet", columns=["date", *REQUIRED, "factor"])
    bars = frame.set_index("date").sort_index().dropna(subset=REQUIRED).astype(np.float64)
    bars["vwap"] = (bars["high"] + bars["low"] + bars["close"]) / 3
    return bars


def real_bars(code: str) -> pd.DataFrame:
    """One real stock's valid rows, shaped as a family compute receives them (a fresh copy)."""
    return _real_bars(code).copy()


def fixture_bars(name: str, **columns: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A StockCharts sheet and bars built from it; fields it lacks are filled where they cannot matter."""
    sheet = pd.read_csv(FIXTURES / name)
    bars = pd.DataFrame({field: sheet[column].astype(np.float64) for field, column in columns.items()})
    for field in ("open", "high", "low"):
        if field not in bars:
            bars[field] = bars["close"]
    if "volume" not in bars:
        bars["volume"] = 1.0
    bars["factor"] = 1.0
    bars["vwap"] = (bars["high"] + bars["low"] + bars["close"]) / 3
    return sheet, bars


def compute(name: str, bars: pd.DataFrame) -> np.ndarray:
    return pd.Series(REGISTRY.get(name).compute(bars), index=bars.index).to_numpy(np.float64)


def hlcv(bars: pd.DataFrame) -> Arrays:
    return tuple(bars[field].to_numpy(np.float64) for field in ("high", "low", "close", "volume"))  # type: ignore[return-value]


def assert_matches(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5, label: str = "") -> None:
    """Same NaN pattern, then relative agreement (plus a tiny absolute slack for values crossing zero)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, label
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{label}: NaN pattern differs")
    finite = ~np.isnan(expected)
    scale = float(np.max(np.abs(expected[finite]))) if finite.any() else 1.0
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=1e-9 * scale, err_msg=label)


# --- registry ---------------------------------------------------------------------------------------


def test_registered_in_design_order() -> None:
    assert REGISTRY.names("technical") == DESIGN_ORDER
    for indicator in REGISTRY.all("technical"):
        assert indicator.compute is not None and indicator.formula and "\n" not in indicator.formula
        assert indicator.added == "2026-11-25" and indicator.version == "1"


@pytest.mark.parametrize("code", REF_CODES)
def test_warmup_matches_reference_lookback(code: str) -> None:
    measured = json.loads((TALIB_REF / f"{code}_leading_nans.json").read_text())
    for name, column in TALIB_REFERENCE.items():
        assert REGISTRY.get(name).warmup == measured[column], name
    nontalib = pd.read_parquet(TALIB_REF / f"{code}_nontalib.parquet")
    for name, column in NONTALIB_REFERENCE.items():
        assert REGISTRY.get(name).warmup == leading_nans(nontalib[column].to_numpy(np.float64)), name


@pytest.mark.parametrize("name", DESIGN_ORDER)
def test_warmup_is_the_leading_nan_count(name: str) -> None:
    bars = real_bars("SZ000001")
    assert leading_nans(compute(name, bars)) == REGISTRY.get(name).warmup


@pytest.mark.parametrize("rows", [0, 1, 30, 80])
def test_short_histories_give_nan_warmup(rows: int) -> None:
    bars = real_bars("SH600000").iloc[:rows]
    for name in DESIGN_ORDER:
        values = compute(name, bars)
        assert len(values) == rows, name
        assert np.isnan(values[: REGISTRY.get(name).warmup]).all(), name


# --- TA-Lib reference files ---------------------------------------------------------------------------


@cache
def _reference(code: str, kind: str = "") -> pd.DataFrame:
    return pd.read_parquet(TALIB_REF / f"{code}{kind}.parquet").set_index("date")


@pytest.mark.parametrize("code", REF_CODES)
@pytest.mark.parametrize("name", list(TALIB_REFERENCE))
def test_matches_talib_reference_file(code: str, name: str) -> None:
    bars, reference = real_bars(code), _reference(code)
    assert bars.index.equals(reference.index)
    assert_matches(compute(name, bars), reference[TALIB_REFERENCE[name]].to_numpy(), label=f"{code} {name}")


@pytest.mark.parametrize("code", REF_CODES)
def test_ema_matches_talib(code: str) -> None:
    """EMA(c, 20) is not in the reference file: TA-Lib here for it, the file's EMA12/EMA26 for the helper."""
    bars, reference = real_bars(code), _reference(code)
    assert_matches(compute("EMA", bars), talib.EMA(bars["close"].to_numpy(), 20), label="EMA")
    for n in (12, 26):
        assert_matches(technical.ema(bars, n).to_numpy(), reference[f"EMA{n}"].to_numpy(), label=f"EMA{n}")


@pytest.mark.parametrize("code", OTHER_CODES)
def test_matches_talib_on_other_stocks(code: str) -> None:
    bars = real_bars(code)
    for name, call in TALIB_CALLS.items():
        assert_matches(compute(name, bars), call(*hlcv(bars)), label=f"{code} {name}")


# --- non-TA-Lib reference file --------------------------------------------------------------------------


@pytest.mark.parametrize("code", REF_CODES)
@pytest.mark.parametrize("name", list(NONTALIB_REFERENCE))
def test_matches_nontalib_reference_file(code: str, name: str) -> None:
    bars, reference = real_bars(code), _reference(code, "_nontalib")
    assert bars.index.equals(reference.index)
    assert_matches(compute(name, bars), reference[NONTALIB_REFERENCE[name]].to_numpy(), label=f"{code} {name}")


@pytest.mark.parametrize("code", REF_CODES)
def test_senkou_b_is_the_talib_midprice_26_days_earlier(code: str) -> None:
    bars, reference = real_bars(code), _reference(code)
    assert_matches(compute("ICHIMOKU_SENKOU_B", bars), reference["MIDPRICE52"].shift(26).to_numpy())


@pytest.mark.parametrize("code", REF_CODES)
def test_vwap_helper_matches_reference_roll14(code: str) -> None:
    bars, reference = real_bars(code), _reference(code, "_nontalib")
    assert_matches(technical.vwap_tp(bars, 14).to_numpy(), reference["VWAP_TP_ROLL14"].to_numpy(), label="VWAP14")


@pytest.mark.parametrize("code", REF_CODES + OTHER_CODES)
def test_vwap_20_matches_numpy(code: str) -> None:
    bars = real_bars(code)
    high, low, close, volume = hlcv(bars)
    windows = np.lib.stride_tricks.sliding_window_view
    expected = np.full(len(bars), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected[19:] = windows((high + low + close) / 3 * volume, 20).sum(-1) / windows(volume, 20).sum(-1)
    expected[~np.isfinite(expected)] = np.nan
    actual = compute("VWAP_20", bars)
    actual[~np.isfinite(actual)] = np.nan
    assert_matches(actual, expected, rtol=1e-9, label=f"{code} VWAP_20")


def test_kdj_is_nan_on_a_flat_range_and_carries_on() -> None:
    """SH600000 was suspended in March 2010: the 9-day range on 2010-03-10 is flat, so RSV is undefined."""
    bars = real_bars("SH600000")
    at = bars.index.get_loc(pd.Timestamp("2010-03-10"))
    k, d, _ = technical.kdj(bars)
    raw = technical.rsv(bars)
    assert np.isnan(raw.iloc[at]) and np.isnan(k.iloc[at]) and np.isnan(d.iloc[at])
    assert k.iloc[at + 1] == pytest.approx(2 / 3 * k.iloc[at - 1] + raw.iloc[at + 1] / 3, rel=1e-12)
    assert d.iloc[at + 1] == pytest.approx(2 / 3 * d.iloc[at - 1] + k.iloc[at + 1] / 3, rel=1e-12)


def test_kdj_smoothing_of_a_panel_is_pandas_ewm_on_each_stock() -> None:
    """A daily update smooths every stock's RSV at once: each column must be pandas' own ewm of
    [50, RSV...] bit for bit, across undefined (NaN) days and a flat stretch (pandas' exact-constant guard)."""
    closes = np.column_stack([real_bars(code)["close"].to_numpy()[-700:] for code in ("SH600000", "SH600519")])
    rsv = np.column_stack([closes, closes[::-1], np.full(len(closes), 50.0)]) % 100
    rsv[::17, 0] = np.nan
    rsv[100:250, 1] = np.nan
    rsv[300:400, 1] = 50.0
    smoothed = technical.seeded_smooth(rsv)
    for stock in range(rsv.shape[1]):
        x = rsv[:, stock]
        seeded = pd.Series(np.concatenate(([technical.KDJ_SEED], x)))
        expected = seeded.ewm(alpha=1 / 3, adjust=False, ignore_na=True).mean().to_numpy()[1:]
        expected[np.isnan(x)] = np.nan
        assert np.array_equal(smoothed[:, stock], expected, equal_nan=True), stock


# --- StockCharts spreadsheets (bukosabino/ta, test/data) ---------------------------------------------------


def test_cci_matches_stockcharts() -> None:
    sheet, bars = fixture_bars("cs-cci.csv", open="Open", high="High", low="Low", close="Close")
    assert_matches(compute("CCI", bars), sheet["CCI"].to_numpy(), rtol=5e-5, label="CCI(20)")


def test_williams_r_matches_stockcharts() -> None:
    """The sheet leaves Close blank during the warm-up; %R at t reads only close at t, so any fill will do."""
    sheet, bars = fixture_bars("cs-percentr.csv", high="High", low="Low", close="Close")
    bars["close"] = bars["close"].fillna((bars["high"] + bars["low"]) / 2)
    assert_matches(compute("WILLIAMS_R", bars), sheet["Williams_%R"].to_numpy(), rtol=5e-5, label="WILLR(14)")


def test_bollinger_matches_stockcharts() -> None:
    sheet, bars = fixture_bars("cs-bbands.csv", close="Close")
    for name, column in [
        ("BOLLINGER_UPPER", "HighBand"),
        ("BOLLINGER_MIDDLE", "MiddleBand"),
        ("BOLLINGER_LOWER", "LowBand"),
    ]:
        assert_matches(compute(name, bars), sheet[column].to_numpy(), rtol=5e-5, label=name)


def test_ad_line_matches_stockcharts() -> None:
    sheet, bars = fixture_bars("cs-accum.csv", high="High", low="Low", close="Close", volume="Volume")
    assert_matches(compute("AD_LINE", bars), sheet["ADLine"].to_numpy(), rtol=5e-5, label="AD")


# --- point in time --------------------------------------------------------------------------------------


def perturbed_after(bars: pd.DataFrame, cut: int, seed: int = 7) -> pd.DataFrame:
    """Every input value after row `cut` multiplied by its own random factor in 0.5..1.5."""
    changed = bars.copy()
    rng = np.random.default_rng(seed)
    changed.iloc[cut + 1 :] = changed.iloc[cut + 1 :].to_numpy() * rng.uniform(0.5, 1.5, (len(bars) - cut - 1, 7))
    return changed


@pytest.mark.parametrize("name", DESIGN_ORDER)
@pytest.mark.parametrize("cut", [40, 1500])
def test_point_in_time(name: str, cut: int) -> None:
    bars = real_bars("SZ000792")  # long suspensions and a +306% jump
    before, after = compute(name, bars), compute(name, perturbed_after(bars, cut))
    assert not np.array_equal(before[cut + 1 :], after[cut + 1 :], equal_nan=True), "perturbation had no effect"
    np.testing.assert_array_equal(after[: cut + 1], before[: cut + 1], err_msg=name)


# --- missing days -----------------------------------------------------------------------------------------


def test_missing_day_is_nan_and_recursions_carry_on() -> None:
    bars = real_bars("SH600000")
    gaps = np.flatnonzero(np.diff(bars.index.to_numpy()) > np.timedelta64(1, "D"))
    after = int(gaps[gaps > 2000][0])
    missing = bars.index[after] + pd.Timedelta(days=1)
    nan_row = pd.DataFrame(np.nan, index=pd.DatetimeIndex([missing], name=bars.index.name), columns=bars.columns)
    with_gap = pd.concat([bars, nan_row]).sort_index()
    indicators = REGISTRY.all("technical")

    gapped = compute_per_stock("technical", {"SH600000": with_gap}, indicators)
    plain = compute_per_stock("technical", {"SH600000": bars}, indicators)

    assert not gapped.errors and not plain.errors
    frame = gapped.frames["SH600000"]
    assert list(frame.columns) == DESIGN_ORDER and frame.index.equals(with_gap.index)
    assert frame.loc[missing].isna().all()
    pd.testing.assert_frame_equal(frame.drop(index=missing), plain.frames["SH600000"])
    later = frame.index > missing
    for name in RECURSIVE:
        assert np.isfinite(frame.loc[later, name].iloc[:200]).all(), name
        expected = compute(name, bars).astype(np.float32)
        np.testing.assert_array_equal(frame.loc[later, name].to_numpy(), expected[after + 1 :], err_msg=name)
