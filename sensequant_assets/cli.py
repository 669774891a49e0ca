"""`sensequant`: the headless entry point, driving the same Dagster definitions as the UI.

Settings given as flags are exported as SENSEQUANT_* variables before the definitions are imported,
so the CLI and a `dagster dev` started with the same variables see the same graph.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DEFAULT_DAGSTER_HOME = ".dagster_home"
# Dagster's console log would drown the one-line-per-partition summary; the UI keeps the full log.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class PartitionOutcome:
    partition_key: str
    status: str  # materialised | skipped | failed
    detail: str


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensequant", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="materialise every symbol-window in a date range")
    train.add_argument("--symbols", required=True, help="comma-separated NSE symbols, e.g. RELIANCE,TCS")
    train.add_argument("--start", required=True, type=_date, help="first day (YYYY-MM-DD)")
    train.add_argument("--end", required=True, type=_date, help="last day (YYYY-MM-DD)")
    train.add_argument("--data-source", choices=["synthetic", "csv"], help="SENSEQUANT_DATA_SOURCE")
    train.add_argument("--data-dir", help="SENSEQUANT_DATA_DIR (for the csv source)")
    train.add_argument("--artifacts-dir", help="SENSEQUANT_ARTIFACTS_DIR")
    train.add_argument(
        "--max-failure-rate",
        type=_rate,
        default=0.15,
        help="exit non-zero when more than this share of partitions fail (skips are not failures)",
    )

    for name, text in (
        (
            "promote",
            "promote a symbol's newest student of the judged configuration if the latest briefing "
            "decided PROMOTE",
        ),
        ("rollback", "restore an archived production model of a symbol"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--symbol", required=True)
        cmd.add_argument("--artifacts-dir", help="SENSEQUANT_ARTIFACTS_DIR")
        if name == "promote":
            cmd.add_argument(
                "--partition",
                help="partition key to promote (default: newest student of the judged configuration)",
            )
        else:
            cmd.add_argument("--to", help="archive id (default: the most recent archive)")

    symbols = sub.add_parser("symbols", help="list or register symbols (the `symbols` partitions)")
    symbols.add_argument("action", choices=["list", "add", "remove"])
    symbols.add_argument("names", nargs="?", default="", help="comma-separated symbols for add/remove")
    return parser


def _export(args: argparse.Namespace) -> None:
    for flag, var in (
        ("data_source", "SENSEQUANT_DATA_SOURCE"),
        ("data_dir", "SENSEQUANT_DATA_DIR"),
        ("artifacts_dir", "SENSEQUANT_ARTIFACTS_DIR"),
    ):
        value = getattr(args, flag, None)
        if value:
            os.environ[var] = str(Path(value).resolve()) if flag != "data_source" else value
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():  # a new instance: keep its first run quiet and local
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    # Dagster's beta/preview notices about APIs we chose knowingly would bury the summary.
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview)")


def _instance():
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _outcome(key: str, result) -> PartitionOutcome:
    """Classify one run from its events: failed (first error), materialised (its directory, plus
    any downstream skip such as the first window's evaluation) or skipped (the reason)."""
    from sensequant_assets.assets.partition_context import SKIP_METADATA_KEY

    events = result.all_events
    if not result.success:
        errors = [
            e.step_failure_data.error.message.strip().splitlines()[-1]
            for e in events
            if e.is_step_failure and e.step_failure_data.error
        ]
        return PartitionOutcome(key, "failed", errors[0] if errors else "run failed")
    skipped = {}
    for e in events:
        if e.event_type_value == "ASSET_OBSERVATION":
            obs = e.asset_observation_data.asset_observation
            if SKIP_METADATA_KEY in obs.metadata:
                skipped.setdefault(obs.metadata[SKIP_METADATA_KEY].value, obs.asset_key.to_user_string())
    materialised = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    if "teacher_model" not in materialised and skipped:
        return PartitionOutcome(key, "skipped", next(iter(skipped)))
    paths = sorted(
        {
            str(e.materialization.metadata["path"].value)
            for e in materialised.values()
            if "path" in e.materialization.metadata
        }
    )
    notes = [f"({asset} skipped: {reason})" for reason, asset in skipped.items()]
    return PartitionOutcome(key, "materialised", " ".join([", ".join(paths), *notes]))


def train(args: argparse.Namespace) -> int:
    _export(args)
    from sensequant_assets.partitions import make_key, windows_between
    from sensequant_assets.settings import SettingsError, partition_settings
    from sensequant_assets.sources.symbols import InvalidSymbolError, parse_symbols

    try:
        symbols = parse_symbols(args.symbols)
        first_start = partition_settings().start_date
    except (InvalidSymbolError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.start < first_start:
        print(
            f"error: --start {args.start} is before SENSEQUANT_START_DATE={first_start}; "
            "windows start there (set SENSEQUANT_START_DATE to train earlier windows)",
            file=sys.stderr,
        )
        return 2
    windows = windows_between(args.start, args.end)
    if not windows:
        print(f"error: no complete window lies inside {args.start}..{args.end}", file=sys.stderr)
        return 2

    from sensequant_assets.definitions import defs
    from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME

    instance = _instance()
    known = set(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    new = [s for s in symbols if s not in known]
    if new:
        instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, new)
    job = defs.resolve_job_def("train_job")
    print(
        f"training {len(symbols)} symbols x {len(windows)} windows on DAGSTER_HOME="
        f"{os.environ['DAGSTER_HOME']}",
        flush=True,
    )
    outcomes: list[PartitionOutcome] = []
    started = time.perf_counter()
    for symbol in symbols:
        for window in windows:
            key = make_key(symbol, window)
            result = job.execute_in_process(
                instance=instance,
                partition_key=key,
                run_config=QUIET,
                raise_on_error=False,
                tags={"sensequant/trigger": "cli"},
            )
            outcome = _outcome(str(key), result)
            outcomes.append(outcome)
            print(f"{outcome.partition_key:<28} {outcome.status:<12} {outcome.detail}", flush=True)
    elapsed = time.perf_counter() - started
    counts = {s: sum(o.status == s for o in outcomes) for s in ("materialised", "skipped", "failed")}
    rate = counts["failed"] / len(outcomes)
    print(
        f"total: {len(outcomes)} partitions, {counts['materialised']} materialised, "
        f"{counts['skipped']} skipped, {counts['failed']} failed "
        f"(failure rate {rate:.0%}, limit {args.max_failure_rate:.0%}) in {elapsed:.1f}s"
    )
    briefing_ok = _brief(defs, instance, symbols)
    return 1 if rate > args.max_failure_rate or not briefing_ok else 0


def _brief(defs, instance, symbols: list[str]) -> bool:
    """Run the briefing (and promotion) job; print the decision of every trained symbol."""
    result = defs.resolve_job_def("briefing_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False, tags={"sensequant/trigger": "cli"}
    )
    if not result.success:
        failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        print(f"briefing failed: {failures[0].strip() if failures else 'run failed'}")
        return False
    briefing = result.output_for_node("promotion_briefing")
    print("promotion briefing:")
    if not any(entry["symbol"] in symbols for entry in briefing.symbols):
        print("  (no evaluated window yet: a symbol needs two consecutive trained windows)")
    for entry in briefing.symbols:
        if entry["symbol"] not in symbols:
            continue
        ic = entry["ic"]
        ci = "IC n/a"
        if ic.get("ci_low") is not None:
            ci = f"IC {ic['pooled']:+.3f} [{ic['ci_low']:+.3f}, {ic['ci_high']:+.3f}]"
            ci += f" q={ic['q_value']:.3g}" if ic.get("q_value") is not None else ""
        why = ", ".join(entry["reasons"]) or "all gates passed"
        print(f"  {entry['symbol']:<14} {entry['decision']:<18} {ci}  ({why})")
    return True


def symbols_command(args: argparse.Namespace) -> int:
    _export(args)
    from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME
    from sensequant_assets.sources.symbols import InvalidSymbolError, parse_symbols

    instance = _instance()
    known = list(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    if args.action == "list":
        print("\n".join(known) if known else "(no symbols registered)")
        return 0
    try:
        names = parse_symbols(args.names)
    except InvalidSymbolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not names:
        print(f"error: `symbols {args.action}` needs a comma-separated list of symbols", file=sys.stderr)
        return 2
    if args.action == "add":
        new = [n for n in names if n not in known]
        if new:
            instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, new)
        print(f"added: {', '.join(new) or '(none, all known)'}")
    else:
        for name in names:
            if name in known:
                instance.delete_dynamic_partition(SYMBOLS_PARTITIONS_NAME, name)
        print(f"removed: {', '.join(n for n in names if n in known) or '(none)'}")
    return 0


def registry_command(args: argparse.Namespace) -> int:
    """`promote` follows the stored briefing's decision; `rollback` restores an archive."""
    _export(args)
    from sensequant_assets import registry
    from sensequant_assets.io_manager import ArtifactError, ArtifactStore, codec_for
    from sensequant_assets.settings import env
    from sensequant_assets.sources.symbols import InvalidSymbolError, validate_symbol

    base = env("SENSEQUANT_ARTIFACTS_DIR")
    try:
        symbol = validate_symbol(args.symbol)
        if args.command == "rollback":
            record = registry.rollback(base, symbol, args.to or None, reason="sensequant rollback")
            print(f"{symbol}: production model is now {record.partition_key} (restored)")
            return 0
        briefing = ArtifactStore(Path(base)).read_fixed(codec_for("promotion_briefing"), "promotion_briefing")
        entry = next((b for b in briefing.symbols if b["symbol"] == symbol), None)
        if entry is None:
            print(f"error: briefing {briefing.generated_at} has no decision for {symbol}", file=sys.stderr)
            return 1
        judged = entry.get("config_id")
        if judged is None:
            print(
                f"error: briefing {briefing.generated_at} names no judged configuration for {symbol}; "
                "re-run the briefing",
                file=sys.stderr,
            )
            return 1
        key = args.partition
        if not key:
            from dagster import AssetKey

            materialised = _instance().get_materialized_partitions(AssetKey("student_model"))
            key = registry.newest_student_of_config(base, symbol, materialised, judged).partition_key
            if key is None:
                print(
                    f"error: no materialised student_model of {symbol} of the judged configuration {judged}",
                    file=sys.stderr,
                )
                return 1
        decision, gates = entry["decision"], entry["gates"]
        record = registry.promote(
            base, symbol, key, decision, gates, reason="sensequant promote", config_id=judged
        )
        print(f"{symbol}: production model is now {record.partition_key} (configuration {judged})")
        return 0
    except (InvalidSymbolError, ArtifactError, registry.RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        return train(args)
    if args.command in ("promote", "rollback"):
        return registry_command(args)
    return symbols_command(args)


if __name__ == "__main__":
    sys.exit(main())
