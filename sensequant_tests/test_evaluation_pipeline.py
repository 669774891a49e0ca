"""Walk-forward evaluation, the briefing and promotion, through the real Dagster graph."""

from __future__ import annotations

import base64
import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, materialize

from sensequant_assets import registry
from sensequant_assets.assets.student import default_config_id
from sensequant_assets.assets.teacher import window_rows
from sensequant_assets.jobs import rollback_job
from sensequant_assets.ml.briefing import PromotionGates, brief_symbols
from sensequant_tests.pipeline_helpers import ALL_ASSETS, failure_messages, resources, run, skip_reasons

SIGNAL, NULL = "TCS", "INFY"
WINDOWS = ["2022-01-01", "2022-07-01", "2023-01-01", "2023-07-01", "2024-01-01", "2024-07-01"]
MARKET = {"signal_symbols": SIGNAL, "random_walk_symbols": NULL, "signal_ic": 0.6246}  # a strong smoke test


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DagsterInstance, list]:
    """Six windows of a planted-signal symbol and a random-walk symbol, then the briefing."""
    artifacts = tmp_path_factory.mktemp("models")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", [SIGNAL, NULL])
    results = []
    for symbol in (SIGNAL, NULL):
        for window in WINDOWS:
            result = run(artifacts, f"{symbol}|{window}", instance=instance, **MARKET)
            assert result.success, failure_messages(result)
            results.append(result)
    brief = materialize(
        ALL_ASSETS,
        selection=["promotion_briefing", "production_models"],
        resources=resources(artifacts, **MARKET),
        instance=instance,
        raise_on_error=False,
    )
    assert brief.success, failure_messages(brief)
    return artifacts, instance, results


def _dir(symbol: str, window: str, end: str) -> str:
    return f"{symbol}_{window}_to_{end}"


def test_first_window_says_it_has_nothing_to_evaluate(graph) -> None:
    artifacts, _, results = graph
    reasons = skip_reasons(results[0])
    assert "first window" in reasons["student_evaluation"]
    assert not (artifacts / _dir(SIGNAL, "2022-01-01", "2022-06-30") / "evaluation").exists()


def test_evaluation_files_and_out_of_sample_protocol(graph) -> None:
    artifacts, _, _ = graph
    evaluation = artifacts / _dir(SIGNAL, "2022-07-01", "2022-12-31") / "evaluation"
    assert sorted(p.name for p in evaluation.iterdir()) == [
        "equity.csv",
        "equity.png",
        "metrics.json",
        "predictions.parquet",
        "reliability.png",
    ]
    metrics = json.loads((evaluation / "metrics.json").read_text())
    # The model evaluated here is the previous window's student, scored on this window's rows.
    assert metrics["model_partition"] == f"{SIGNAL}|2022-01-01"
    previous = json.loads(
        (artifacts / _dir(SIGNAL, "2022-01-01", "2022-06-30") / "student" / "metadata.json").read_text()
    )
    assert metrics["model_sha256"] == previous["model_sha256"]
    predictions = pd.read_parquet(evaluation / "predictions.parquet")
    labels = pd.read_csv(artifacts / _dir(SIGNAL, "2022-07-01", "2022-12-31") / "labels.csv.gz")
    # The teacher of this (second) window learnt from the first too (the default lookback, cut at the
    # first partition); the evaluation scores this window's own rows only.
    own = window_rows(labels, date(2022, 7, 1), date(2022, 12, 31))
    assert len(predictions) == len(own) == metrics["n"] < len(labels)
    assert pd.to_datetime(labels["ts"]).min() < pd.Timestamp("2022-07-01", tz="Asia/Kolkata")
    assert pd.to_datetime(predictions["ts"]).min() >= pd.Timestamp("2022-07-01", tz="Asia/Kolkata")
    for key in ("auc", "accuracy", "hit_rate", "brier", "log_loss", "ic", "backtest"):
        assert key in metrics, key
    assert (evaluation / "equity.png").read_bytes().startswith(b"\x89PNG")


def test_the_figures_are_inline_and_compact_and_full_size_on_disk(graph) -> None:
    """Every inline byte is stored in the event log: a palette PNG of each figure, a few tens of
    KiB per event at most; the full-colour files stay in the partition directory."""
    artifacts, instance, _ = graph
    [record] = instance.fetch_materializations(
        AssetRecordsFilter(AssetKey("student_evaluation"), asset_partitions=[f"{SIGNAL}|2022-07-01"]), limit=1
    ).records
    meta = record.asset_materialization.metadata
    evaluation = artifacts / _dir(SIGNAL, "2022-07-01", "2022-12-31") / "evaluation"
    inline = {}
    for key, name in (("equity_curve", "equity.png"), ("reliability_diagram", "reliability.png")):
        text = meta[key].value
        assert text.startswith("![") and "](data:image/png;base64," in text
        png = base64.b64decode(text.split("base64,", 1)[1].rstrip(")"))
        assert png.startswith(b"\x89PNG")
        inline[key] = len(text)
        assert len(png) < (evaluation / name).stat().st_size / 2, key
    assert sum(inline.values()) < 40_000, inline


def test_briefing_promotes_signal_rejects_random_walk_and_is_reproducible(graph) -> None:
    artifacts, _, _ = graph
    body = json.loads((artifacts / "briefings" / "promotion_briefing.json").read_text())
    decisions = {b["symbol"]: b for b in body["symbols"]}
    assert decisions[SIGNAL]["decision"] == "PROMOTE", decisions[SIGNAL]["reasons"]
    assert decisions[NULL]["decision"] != "PROMOTE"
    assert decisions[SIGNAL]["windows"] == len(WINDOWS) - 1
    assert (artifacts / "briefings" / "promotion_briefing.md").read_text().startswith("# Promotion briefing")
    assert len(list((artifacts / "briefings" / "history").glob("promotion_briefing_*.json"))) == 1

    # Every number comes from the stored predictions: recompute the briefing of both symbols (one
    # family: the multiple-testing correction and the DSR's trials span the briefing).
    stitched = {
        symbol: pd.concat(
            [
                pd.read_parquet(p)
                for p in sorted(artifacts.glob(f"{symbol}_*/evaluation/predictions.parquet"))
            ],
            ignore_index=True,
        )
        for symbol in (SIGNAL, NULL)
    }
    trials = {symbol: decisions[symbol]["n_trials"] for symbol in stitched}
    again = {
        b["symbol"]: b for b in brief_symbols(stitched, horizon=7, n_trials=trials, gates=PromotionGates())
    }[SIGNAL]
    judged = {k: decisions[SIGNAL].pop(k) for k in ("config_id", "windows_left_out")}
    assert json.loads(json.dumps(again, default=str)) == decisions[SIGNAL]
    # A default run is judged under the code's default configuration, and nothing was left out.
    assert judged == {"config_id": default_config_id(7), "windows_left_out": 0}


def test_promotion_copies_the_newest_student_and_rollback_restores(graph) -> None:
    artifacts, instance, _ = graph
    current = registry.current(artifacts, SIGNAL)
    assert current is not None and current.partition_key == f"{SIGNAL}|2024-07-01"
    assert current.config_id == default_config_id(7)
    source = artifacts / _dir(SIGNAL, "2024-07-01", "2024-12-31") / "student" / "student_model.pkl"
    assert (
        artifacts / "production" / SIGNAL / "current" / "student_model.pkl"
    ).read_bytes() == source.read_bytes()
    assert registry.current(artifacts, NULL) is None, "a REJECT is never promoted"

    # Promote an older window by hand, then roll back through the Dagster job.
    registry.promote(artifacts, SIGNAL, f"{SIGNAL}|2024-01-01", "PROMOTE", {}, reason="test")
    result = rollback_job.execute_in_process(
        run_config={"ops": {"rollback_model": {"config": {"symbol": SIGNAL}}}},
        resources={"artifacts": resources(artifacts)["artifacts"]},
        instance=instance,
    )
    assert result.success
    assert registry.current(artifacts, SIGNAL).partition_key == f"{SIGNAL}|2024-07-01"
    actions = [h["action"] for h in registry.history(artifacts, SIGNAL)]
    assert actions == ["promote", "promote", "rollback"]


def test_a_briefing_recomputed_in_forked_workers_equals_one_computed_in_process(
    graph, monkeypatch, tmp_path: Path
) -> None:
    """A briefing recomputes its changed symbols in forked workers (local artifacts); what it decides
    and caches is the same to the bit as computing them one by one in the run's process."""
    from sensequant_assets.assets import partition_context, workers

    artifacts, instance, _ = graph
    artifacts = Path(shutil.copytree(artifacts, tmp_path / "models"))  # the module's briefing stays as it is
    monkeypatch.setattr(partition_context, "usable_cpus", lambda: 2)  # two cores, whatever the machine
    pools = []

    class CountedPool(workers.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(workers, "ProcessPoolExecutor", CountedPool)

    def brief(run_workers: str, extra_trials: int) -> tuple[list, dict, int]:
        monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", run_workers)
        result = materialize(
            ALL_ASSETS,
            selection=["promotion_briefing"],
            resources=resources(artifacts, **MARKET),
            instance=instance,
            run_config={"ops": {"promotion_briefing": {"config": {"extra_trials": extra_trials}}}},
            raise_on_error=False,
        )
        assert result.success, failure_messages(result)
        [mat] = result.asset_materializations_for_node("promotion_briefing")
        artifact = result.output_for_node("promotion_briefing")
        return artifact.symbols, artifact.cache, mat.metadata["symbols_recomputed"].value

    # The trials are an input of every symbol's statistics, so each change recomputes both symbols.
    symbols, cache, recomputed = brief("1", 1)
    assert recomputed == 2 and not pools
    assert brief("1", 0)[2] == 2
    forked_symbols, forked_cache, recomputed = brief("2", 1)
    assert recomputed == 2 and len(pools) == 1, "the two changed symbols were not computed in workers"
    assert forked_symbols == symbols
    assert list(forked_cache) == list(cache)
    for symbol, entry in cache.items():
        forked = forked_cache[symbol]
        assert {k: v for k, v in forked.items() if k != "excess"} == {
            k: v for k, v in entry.items() if k != "excess"
        }
        np.testing.assert_array_equal(forked["excess"], entry["excess"])
