"""Corporate actions: the csv source back-adjusts at read time, never twice, and exactly the windows
whose adjusted bars change get new fingerprints."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import build_sensor_context, instance_for_test, materialize

from sensequant_assets.assets.bars import market_bars
from sensequant_assets.definitions import defs
from sensequant_assets.io_manager import ArtifactsResource, PartitionDirIOManager
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.sensors import new_data
from sensequant_assets.sources import CsvDirSource, DataSourceError, SyntheticSource
from sensequant_assets.sources.corporate_actions import (
    ACTIONS_FILE_ENV,
    SHIPPED_FILE,
    CorporateActions,
    CorporateActionsError,
    configured_actions,
    load_actions,
    parse_actions,
)
from sensequant_tests import daily_csv
from sensequant_tests.daily_csv import write_bars

D = dt.date
HEADER = "timestamp,open,high,low,close,volume"
ACTIONS_HEADER = "symbol,ex_date,type,ratio,factor,adjusted_by_source,note"
PRICES = ["open", "high", "low", "close"]
QUARTERS = [(D(2024, 1, 1), D(2024, 3, 31)), (D(2024, 4, 1), D(2024, 6, 30)), (D(2024, 7, 1), D(2024, 9, 30))]


def reference(symbol: str = "TCS", start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
    """Known-good (continuous) bars: synthetic, so no fixture files to maintain."""
    return SyntheticSource(seed=3).bars(symbol, start or D(2024, 1, 1), end or D(2024, 9, 30))


def actions_file(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([ACTIONS_HEADER, *rows]) + "\n")
    return path


def unadjusted_split(bars: pd.DataFrame, ex_date: str, factor: float) -> pd.DataFrame:
    """What an unadjusted vendor serves: prices from the ex-date on scaled by `factor`, volumes by
    its inverse (a 1:2 split: half the price, twice the shares traded)."""
    raw = bars.copy()
    after = raw.index >= pd.Timestamp(ex_date, tz="Asia/Kolkata")
    raw.loc[after, PRICES] *= factor
    raw.loc[after, "volume"] /= factor
    return raw


def test_a_1_to_2_split_gives_continuous_prices_and_doubled_volumes_before_it(tmp_path: Path) -> None:
    ref = reference(end=D(2024, 3, 29))
    raw = unadjusted_split(ref, "2024-02-15", 0.5)
    folder = write_bars(tmp_path / "data", "TCS", raw)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    plain = CsvDirSource(tmp_path / "data", actions_files=())
    with pytest.raises(DataSourceError, match="SENSEQUANT_CORPORATE_ACTIONS_FILE"):
        plain.bars("TCS", D(2024, 1, 1), D(2024, 3, 31))  # unadjusted: refused, naming the remedy

    split = actions_file(tmp_path / "actions.csv", "TCS,2024-02-15,split,1:2,,no,face value 10 -> 5")
    bars = CsvDirSource(tmp_path / "data", actions_files=(split,)).bars("TCS", D(2024, 1, 1), D(2024, 3, 31))
    pre = bars.index < pd.Timestamp("2024-02-15", tz="Asia/Kolkata")
    assert pre.sum() > 20 and (~pre).sum() > 20
    np.testing.assert_array_equal(
        bars[PRICES].to_numpy(), raw[PRICES].to_numpy() * np.where(pre, 0.5, 1.0)[:, None]
    )
    np.testing.assert_array_equal(bars.loc[pre, "volume"], raw.loc[pre, "volume"] * 2)  # doubled
    np.testing.assert_array_equal(bars.loc[~pre, "volume"], raw.loc[~pre, "volume"])
    # Continuous: the adjusted series is the reference's, halved (no -50 % day).
    np.testing.assert_allclose(bars["close"], ref["close"] * 0.5, rtol=1e-12)
    assert np.abs(np.diff(np.log(bars["close"]))).max() < 0.1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the cache stays as fetched


def test_an_action_adjusted_by_source_changes_nothing_and_a_wrong_flag_is_caught(tmp_path: Path) -> None:
    ref = reference()
    write_bars(tmp_path / "data", "TCS", ref)  # the vendor already adjusted: continuous
    plain = CsvDirSource(tmp_path / "data", actions_files=())
    done = actions_file(tmp_path / "done.csv", "TCS,2024-05-16,bonus,1:1,,yes,")
    source = CsvDirSource(tmp_path / "data", actions_files=(done,))
    pd.testing.assert_frame_equal(source.bars("TCS", D(2024, 1, 1), D(2024, 9, 30)), ref)
    assert source.window_fingerprints("TCS", QUARTERS) == plain.window_fingerprints("TCS", QUARTERS)
    # Marked "not adjusted" although it was: adjusting twice makes a x2 jump, which is refused.
    twice = actions_file(tmp_path / "twice.csv", "TCS,2024-05-16,bonus,1:1,,no,")
    with pytest.raises(DataSourceError, match="2024-05-16") as caught:
        CsvDirSource(tmp_path / "data", actions_files=(twice,)).bars("TCS", D(2024, 4, 1), D(2024, 6, 30))
    assert caught.value.rule.startswith("close within x1.4 of the previous close")


@pytest.mark.parametrize("layout", ["daily", "single file"])
def test_adding_an_action_changes_exactly_the_fingerprints_of_the_windows_it_adjusts(
    tmp_path: Path, layout: str
) -> None:
    ref = reference()
    data = tmp_path / "data"
    if layout == "daily":
        write_bars(data, "TCS", ref)
    else:
        data.mkdir()
        ref.to_csv(data / "TCS.csv")
    empty = actions_file(tmp_path / "none.csv")
    baseline = CsvDirSource(data, actions_files=(empty,))
    before = baseline.window_fingerprints("TCS", QUARTERS)
    token, quick = baseline.data_token("TCS"), baseline.quick_token("TCS")
    assert before == CsvDirSource(data, actions_files=()).window_fingerprints("TCS", QUARTERS)

    # A dividend on the first bar of the second quarter adjusts the first quarter only.
    first_bar = ref.loc["2024-04-01":].index[0].date()
    actions_file(empty, f"TCS,{first_bar},dividend,,0.97,no,")
    after = baseline.window_fingerprints("TCS", QUARTERS)
    assert [after[s] != before[s] for s, _ in QUARTERS] == [True, False, False]
    assert baseline.data_token("TCS") != token and baseline.quick_token("TCS") != quick
    unadjusted = CsvDirSource(data, actions_files=())
    assert not baseline.bars("TCS", *QUARTERS[0]).equals(unadjusted.bars("TCS", *QUARTERS[0]))
    pd.testing.assert_frame_equal(
        baseline.bars("TCS", *QUARTERS[1]), CsvDirSource(data, actions_files=()).bars("TCS", *QUARTERS[1])
    )

    # One inside the third quarter adjusts all three; another symbol's action changes nothing.
    actions_file(
        empty,
        f"TCS,{first_bar},dividend,,0.97,no,",
        "TCS,2024-08-14,dividend,,0.99,no,",
        "INFY,2024-02-01,bonus,1:1,,no,",
    )
    later = baseline.window_fingerprints("TCS", QUARTERS)
    assert all(later[s] not in (before[s], after[s]) for s, _ in QUARTERS)
    # An action the data has not reached yet (ex-date after the last bar) adjusts nothing.
    actions_file(empty, f"TCS,{first_bar},dividend,,0.97,no,", "TCS,2025-01-10,dividend,,0.99,no,")
    assert baseline.window_fingerprints("TCS", QUARTERS) == after


@pytest.mark.parametrize(
    ("row", "line", "field", "says"),
    [
        ("TCS,2024-02-30,split,1:2,,no,", 2, "ex_date", "not a YYYY-MM-DD date"),
        ("TCS,2024-02-15,merger,1:2,,no,", 2, "type", "not one of split, bonus, demerger, dividend"),
        ("TCS,2024-02-15,split,1/2,,no,", 2, "ratio", "not A:B"),
        ("TCS,2024-02-15,split,,0.5,no,", 2, "factor", "takes a ratio"),
        ("TCS,2024-02-15,demerger,,1.2,no,", 2, "factor", "in (0, 1)"),
        ("TCS,2024-02-15,bonus,1:1,,maybe,", 2, "adjusted_by_source", "not yes or no"),
        ("TCS,2024-02-15,bonus,1:1,,,", 2, "adjusted_by_source", "missing"),
        ("tcs/x,2024-02-15,bonus,1:1,,no,", 2, "symbol", ""),
        ("TCS,2024-02-15,bonus,1:1,,no,a,b", 2, "note", "8 fields"),
    ],
)
def test_a_malformed_actions_file_is_refused_naming_file_line_and_field(
    tmp_path: Path, row: str, line: int, field: str, says: str
) -> None:
    path = actions_file(tmp_path / "actions.csv", row)
    with pytest.raises(CorporateActionsError) as caught:
        load_actions([path])
    message = str(caught.value)
    assert f"{path}, line {line}, field {field!r}" in message and says in message


def test_a_bad_header_a_repeated_row_and_a_missing_file_are_named(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.csv"
    with pytest.raises(CorporateActionsError, match=r"line 2, field 'exdate': unknown column"):
        parse_actions("# my actions\nsymbol,exdate,type,ratio,factor,adjusted_by_source\n", path)
    with pytest.raises(CorporateActionsError, match=r"line 1, field 'factor': column missing"):
        parse_actions("symbol,ex_date,type,ratio,adjusted_by_source\n", path)
    with pytest.raises(CorporateActionsError, match=r"line 1, field 'type': column named twice"):
        parse_actions("symbol,ex_date,type,ratio,factor,adjusted_by_source,Type\n", path)
    text = f"{ACTIONS_HEADER}\nTCS,2024-02-15,bonus,1:1,,no,\n\nTCS,2024-02-15,bonus,1:2,,no,\n"
    with pytest.raises(
        CorporateActionsError, match=r"line 4, field 'ex_date': TCS bonus on 2024-02-15 is also on line 2"
    ):
        parse_actions(text, path)
    # Through a source, the error names the file and the window asked for.
    write_bars(tmp_path / "data", "TCS", reference(end=D(2024, 1, 31)))
    monkeypatch.setenv(ACTIONS_FILE_ENV, str(tmp_path / "missing.csv"))
    with pytest.raises(
        DataSourceError, match=r"missing\.csv: cannot be read.*\[window 2024-01-01\.\.2024-01-31\]"
    ):
        CsvDirSource(tmp_path / "data").bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_ratios_become_price_factors_and_only_share_counts_change_volumes() -> None:
    text = "\n".join(
        [
            ACTIONS_HEADER,
            "A,2024-01-02,split,1:2,,no,",
            "A,2024-01-03,split,10:1,,no,consolidation",
            "A,2024-01-04,bonus,1:1,,no,",
            "A,2024-01-05,bonus,1:2,,no,",
            "A,2024-01-08,dividend,,0.98,no,",
        ]
    )
    actions = parse_actions(text, Path("x.csv"))
    assert [a.factor for a in actions] == [0.5, 10.0, 0.5, 2 / 3, 0.98]
    assert [a.volume_factor for a in actions] == [0.5, 10.0, 0.5, 2 / 3, 1.0]


def test_the_shipped_file_holds_the_jio_demerger_and_a_user_row_overrides_it(
    tmp_path: Path, monkeypatch
) -> None:
    shipped = {(a.ex_date, a.kind): a for a in load_actions([SHIPPED_FILE]).of("RELIANCE")}
    demerger = shipped[(D(2023, 7, 20), "demerger")]
    assert demerger.factor == pytest.approx(2580.0 / 2841.85, abs=1e-8) and not demerger.adjusted_by_source
    assert shipped[(D(2024, 10, 28), "bonus")].factor == 0.5
    user = actions_file(
        tmp_path / "mine.csv", "RELIANCE,2023-07-20,demerger,,0.90785932,yes,my vendor adjusts it"
    )
    monkeypatch.setenv(ACTIONS_FILE_ENV, str(user))
    mine = {(a.ex_date, a.kind): a for a in configured_actions(shipped=True).of("RELIANCE")}
    assert mine[(D(2023, 7, 20), "demerger")].adjusted_by_source
    assert (D(2024, 10, 28), "bonus") in mine  # the shipped rows it does not restate stay
    # A source not known to be unadjusted (a csv directory) applies the user's rows alone.
    assert list(configured_actions().of("RELIANCE")) == [mine[(D(2023, 7, 20), "demerger")]]


def test_the_shipped_demerger_removes_reliances_9_percent_drop_from_breezes_cache(
    tmp_path: Path, monkeypatch
) -> None:
    ref = reference("RELIANCE", D(2023, 6, 1), D(2023, 8, 31))
    raw = unadjusted_split(ref, "2023-07-20", 2580.0 / 2841.85)  # as Breeze serves it: a -9 % open
    raw["volume"] = ref["volume"]  # a demerger leaves the share count alone
    write_bars(tmp_path, "RELIANCE", raw)
    breeze = MarketDataResource(data_source="breeze", data_dir=str(tmp_path)).source_for("RELIANCE")
    bars = breeze.bars("RELIANCE", D(2023, 6, 1), D(2023, 8, 31))  # the shipped file
    np.testing.assert_allclose(bars["close"], ref["close"] * 2580.0 / 2841.85, rtol=1e-7)
    pd.testing.assert_series_equal(bars["volume"], raw["volume"])
    # A csv user reads the files as they are, unless (a vendor that does not adjust) naming the
    # shipped file.
    csv = MarketDataResource(data_source="csv", data_dir=str(tmp_path)).source_for("RELIANCE")
    np.testing.assert_allclose(csv.bars("RELIANCE", D(2023, 6, 1), D(2023, 8, 31))["close"], raw["close"])
    monkeypatch.setenv(ACTIONS_FILE_ENV, str(SHIPPED_FILE))
    pd.testing.assert_frame_equal(csv.bars("RELIANCE", D(2023, 6, 1), D(2023, 8, 31)), bars)
    # Named by both, the shipped rows apply once.
    pd.testing.assert_frame_equal(breeze.bars("RELIANCE", D(2023, 6, 1), D(2023, 8, 31)), bars)


# A vendor's RELIANCE, already adjusted: continuous through the shipped 2023-07-20 demerger and
# 2024-10-28 bonus (an unadjusted 1:1 bonus would halve the price overnight).
VENDOR_RELIANCE = {
    "2023-07-19": "1310.5,1322.0,1301.25,1315.75,5100000",
    "2023-07-20": "1316.0,1330.5,1309.0,1321.25,7200000",
    "2024-10-25": "1339.0,1345.5,1320.0,1325.5,6100000",
    "2024-10-28": "1327.0,1342.0,1321.5,1336.0,9800000",
    "2024-12-31": "1215.0,1222.75,1208.5,1218.25,4400000",
}
HALF_YEARS = [(D(2023, 7, 1), D(2023, 12, 31)), (D(2024, 7, 1), D(2024, 12, 31))]
# What the csv source of fc32761 (before corporate actions existed) gives for VENDOR_RELIANCE: its
# data token and the fingerprints of HALF_YEARS (computed with that commit's csv_dir.py).
BEFORE_ACTIONS = {
    "daily": (
        "5c56972a25e648e7ab252908a4450e40080ff84bfc425e17fee7f71e86dcaf6c",
        [
            "42501bb63b91fda737f8e22a89ee9a7d57f7b32b935cd8da2ca2d1608b227c4b",
            "02f1d43af1e11214fbc9cbde999e5343fa70faed4457634ea5d0d2340b379ad8",
        ],
    ),
    "single file": (
        "2c3b15be343ed3d21bf1a5e45e06026194b0c5d85ae5dbcee85187af07351420",
        [
            "89871a5bead1c0d1f68d5219e74d5638b30c36d851799b2d15ef55b3e2e44b87",
            "c3077575cbd2fda65fcbbc9fa6a153aa320d3abaadd594873feaf83b9e2e44c9",
        ],
    ),
}


def vendor_reliance(root: Path, layout: str) -> None:
    """VENDOR_RELIANCE in `layout`, with fixed modification times (the fingerprints hash them)."""
    stamp = 1_735_000_000 * 10**9
    if layout == "daily":
        folder = root / "RELIANCE" / "1day"
        folder.mkdir(parents=True)
        for n, (day, values) in enumerate(VENDOR_RELIANCE.items()):
            path = folder / f"{day}.csv"
            path.write_text(f"{HEADER}\n{day} 00:00:00+05:30,{values}\n")
            os.utime(path, ns=(stamp + n, stamp + n))
    else:
        root.mkdir(parents=True)
        rows = [f"{day} 00:00:00+05:30,{values}" for day, values in VENDOR_RELIANCE.items()]
        path = root / "RELIANCE.csv"
        path.write_text("\n".join([HEADER, *rows]) + "\n")
        os.utime(path, ns=(stamp, stamp))


@pytest.mark.parametrize("layout", ["daily", "single file"])
def test_a_csv_user_without_an_actions_file_reads_reliance_exactly_as_before(
    tmp_path: Path, monkeypatch, layout: str
) -> None:
    """The shipped actions are Breeze's: a csv user's vendor may have adjusted RELIANCE already
    (halving its earlier prices again made a +100 % day, refused), and an upgrade must not change
    any fingerprint (which retrains every RELIANCE window)."""
    monkeypatch.delenv(ACTIONS_FILE_ENV, raising=False)
    data = tmp_path / "data"
    vendor_reliance(data, layout)
    csv = MarketDataResource(data_source="csv", data_dir=str(data)).source_for("RELIANCE")
    everything = (D(2023, 1, 1), D(2024, 12, 31))
    bars = csv.bars("RELIANCE", *everything)
    pd.testing.assert_frame_equal(bars, CsvDirSource(data, actions_files=()).bars("RELIANCE", *everything))
    assert list(bars["close"]) == [float(v.split(",")[3]) for v in VENDOR_RELIANCE.values()]  # as written
    token, fingerprints = BEFORE_ACTIONS[layout]
    assert csv.data_token("RELIANCE") == token
    assert list(csv.window_fingerprints("RELIANCE", HALF_YEARS).values()) == fingerprints
    # The breeze source, whose cache is unadjusted, applies them (here wrongly: refused).
    breeze = MarketDataResource(data_source="breeze", data_dir=str(data)).source_for("RELIANCE")
    with pytest.raises(DataSourceError, match="2024-10-28"):
        breeze.bars("RELIANCE", *everything)


def test_an_action_added_later_makes_new_data_retrain_exactly_the_windows_it_adjusts(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(tmp_path / "artifacts"))  # the sensor's state
    data = tmp_path / "historical"
    daily_csv.write_daily(data, "RELIANCE", D(2021, 6, 1), D(2022, 12, 30))  # windows 2022-01, 2022-07
    mine = actions_file(tmp_path / "mine.csv")
    monkeypatch.setenv(ACTIONS_FILE_ENV, str(mine))
    market = MarketDataResource(data_source="csv", data_dir=str(data))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("symbols", ["RELIANCE"])

        def tick(cursor: str | None):
            context = build_sensor_context(
                instance=instance,
                cursor=cursor,
                definitions=defs,
                resources={
                    "market_data": market,
                    "artifacts": ArtifactsResource(location=str(tmp_path / "m")),
                },
            )
            return new_data(context)

        baseline = tick(None)
        assert baseline.run_requests == []
        actions_file(mine, "RELIANCE,2022-07-01,dividend,,0.98,no,")  # on the second window's first bar
        changed = tick(baseline.cursor)
        assert [str(r.partition_key) for r in changed.run_requests] == ["RELIANCE|2022-01-01"]
        assert "bars corrected" in changed.run_requests[0].tags["sensequant/reason"]
        assert tick(changed.cursor).run_requests == []

        # A file that already exists, named afterwards (the README's way to apply the shipped file):
        # no file changed after the training read the window, yet its bars did.
        theirs = actions_file(tmp_path / "theirs.csv", "RELIANCE,2022-07-01,dividend,,0.95,no,")
        resources = {
            "market_data": market,
            "artifacts_io_manager": PartitionDirIOManager.at(tmp_path / "m"),
        }
        read = materialize(
            [market_bars], partition_key="RELIANCE|2022-01-01", instance=instance, resources=resources
        )
        assert read.success
        monkeypatch.setenv(ACTIONS_FILE_ENV, str(theirs))
        switched = tick(changed.cursor)
        assert [str(r.partition_key) for r in switched.run_requests] == ["RELIANCE|2022-01-01"]


def test_the_merged_actions_are_built_once_per_change_of_the_files_not_per_lookup(
    tmp_path: Path, monkeypatch
) -> None:
    """A sensor tick asks every symbol's tokens: re-merging and sorting 5,000 actions on each call
    took a 500-symbol tick from 37 ms to 1.9 s. Built once per change of a file, indexed by symbol."""
    symbols = [f"S{i:03d}" for i in range(500)]
    rows = [f"{s},{y}-08-01,dividend,,0.99,no," for s in symbols for y in range(2015, 2025)]
    big = actions_file(tmp_path / "big.csv", *rows)
    monkeypatch.setenv(ACTIONS_FILE_ENV, str(big))
    for symbol in symbols[:3]:
        write_bars(tmp_path / "data", symbol, reference(symbol, D(2024, 7, 1), D(2024, 9, 30)))
    built = []
    merge = CorporateActions.of_rows.__func__

    def counting(cls, actions, *args, **kwargs):
        built.append(1)
        return merge(cls, actions, *args, **kwargs)

    monkeypatch.setattr(CorporateActions, "of_rows", classmethod(counting))
    source = CsvDirSource(tmp_path / "data")
    first = load_actions([big])
    for symbol in symbols[:3]:
        source.quick_token(symbol), source.data_token(symbol), source.window_fingerprints(symbol, QUARTERS)
        source.bars(symbol, *QUARTERS[2])
    assert load_actions([big]) is first and len(first.of("S001")) == 10
    assert len(built) == 1
    actions_file(big, *rows[:-1])  # a change: merged once more, and the lookups see it
    assert len(source._actions().of("S499")) == 9 and len(built) == 2
    assert load_actions([big]) is source._actions()
