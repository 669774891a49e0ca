"""Asset checks of `market_bars`, the teacher's labels and `student_evaluation`, per partition.

The checks are `check_specs` of the assets themselves and run inside the asset's step, on the values
it has just computed: nothing is read back from the artifact files, and a check can stop a partition
before its files are written. One check per asset (`bars_valid`, `soft_labels_valid`,
`predictions_cover_window`) judges several rules, each named in the result and counted in its
metadata: every check costs one event per partition of a run, which Dagster hands the event log one
at a time (never batched, unlike a batch's materialisations). Each asset calls its suite so (`bars.py`):

    checks = BAR_CHECKS.evaluate(context, values)
    skipped.update(checks.refused)                 # a blocking failure: the partition is not written
    yield from emit(context, ..., checks.keep(values), skipped, ...)
    yield from checks.events(context)              # the results, after the materialisations

How results map to partitions (Dagster 1.13.28, read in its source):
- The specs carry the assets' `partitions_def` (a preview feature), so Dagster plans one check
  execution per partition of a run, single or ranged (`AssetCheckEvaluationPlanned.partitions_subset`,
  one `asset_check_executions` row each), and the UI shows a status per partition.
- The public `AssetCheckResult` has no partition: `to_asset_check_evaluation` takes it from the run's
  `dagster/partition` tag, which a ranged run (a batched backfill) does not have, so every result of
  a range would be recorded without a partition (and the planned rows would end "skipped"). The
  suite yields one `AssetCheckEvaluation` per partition and check instead, in every run, naming the
  partition and this run's materialisation of it (the UI's partition status compares that with the
  partition's latest materialisation, and leaves the status blank when they differ); the storage
  matches it to the planned row of that partition. A partition refused in a run of one partition,
  or in a batch that wrote nothing, has no materialisation of this run: its result names the
  partition's latest materialisation, the one it keeps (as Dagster's own `AssetCheckResult` does in
  a run of one partition), so the partition shows FAILED rather than blank, and the description
  says that the partition keeps that earlier materialisation. (A batch that writes any partition
  has Dagster record a materialisation of every partition of its range, the refused ones too: those
  are named.)
- `AssetCheckEvaluation` is exported by `dagster` but not documented as public: `test_asset_checks.py`
  fails loudly if its fields change. Without its `partition` (`PER_PARTITION_RESULTS`) the suite falls
  back to `AssetCheckResult`: per partition in a run of one partition, one per check in a ranged run,
  passed when every partition passed, its metadata naming each failing partition (symbol, window, rule).
- A partition the asset skipped (no bars, too few rows, no earlier student) has no result: its
  planned execution ends as "skipped" when the run ends, and the skip's reason is where it always was.

Blocking (the rules under which continuing would feed garbage downstream: bars out of order, repeated
or outside the window, OHLC that contradict themselves, soft labels that are not probabilities,
predictions that do not cover the window): a partition failing one is refused like any skipped
partition (no files written, its reason recorded, downstream steps skip it) and its result fails with
ERROR. In a run of one partition the step then fails (Dagster's blocking: the run is red, nothing
downstream runs). In a batch the other partitions go on: Dagster fails a whole step on any failed
blocking result, which would stop every partition downstream, so a batch's results are recorded with
`blocking=False` and say that the partition was skipped. A soft rule (a long gap, a class with fewer
rows than a leaf needs) fails with WARN: recorded, never blocking.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    Output,
    PreviewWarning,
)

from sensequant_assets.assets.partition_context import PartitionWindow, run_partition_keys, window_of
from sensequant_assets.partitions import symbol_window_partitions

try:  # not exported by `dagster`; the test of the private API fails loudly if it moves
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as _Target,
    )
except ImportError:  # pragma: no cover - exercised through PER_PARTITION_RESULTS in the tests
    _Target = None  # type: ignore[assignment,misc]

ERROR, WARN = AssetCheckSeverity.ERROR, AssetCheckSeverity.WARN

# One result per partition of a ranged run needs `AssetCheckEvaluation(partition=...)`; without it
# a ranged run gets one result per check (see the module docstring).
PER_PARTITION_RESULTS = (
    _Target is not None and "partition" in inspect.signature(AssetCheckEvaluation.__new__).parameters
)
SHOWN = 3  # offending rows named in a result's description


@dataclass(frozen=True)
class Verdict:
    """One check's result on one partition: `summary` says what was found (for a failure: which rows);
    `rule` names the rule broken."""

    passed: bool
    summary: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    severity: AssetCheckSeverity = ERROR
    rule: str = ""


# (value, partition, reference) -> Verdict; `reference` is what the asset hands for comparison (the
# window's labelled rows for an evaluation, the teacher's leaf minimum), None when it hands nothing.
Rule = Callable[[Any, PartitionWindow, Any], Verdict]


@dataclass(frozen=True)
class PartitionCheck:
    """One check of an asset: its rules judged together (one result per partition: every check is one
    event per partition of a run, written on its own, so an asset has one check with several rules)."""

    name: str
    description: str
    blocking: bool
    rules: tuple[Rule, ...]

    def judge(self, value: Any, pw: PartitionWindow, reference: Any) -> Verdict:
        """Passed if every rule passed; else ERROR if a failed rule is ERROR (WARN otherwise), naming
        the failed rules and what they found. Metadata: every rule's numbers."""
        verdicts = [rule(value, pw, reference) for rule in self.rules]
        failed = [v for v in verdicts if not v.passed]
        metadata = {k: v for verdict in verdicts for k, v in verdict.metadata.items()}
        if not failed:  # a pass leaves out the problems it did not find (its zero counts)
            found = {k: v for k, v in metadata.items() if not _nothing(v)}
            return Verdict(True, "; ".join(v.summary for v in verdicts), found)
        severity = ERROR if any(v.severity == ERROR for v in failed) else WARN
        shown = [v for v in failed if v.severity == severity] + [v for v in failed if v.severity != severity]
        return Verdict(
            False,
            "; ".join(v.summary for v in shown),
            metadata,
            severity,
            rule="; ".join(v.rule for v in shown),
        )


@dataclass(frozen=True)
class CheckSuite:
    """The checks of one asset: its `check_specs`, and their evaluation in the asset's step."""

    asset: str
    checks: tuple[PartitionCheck, ...]

    @property
    def specs(self) -> list[AssetCheckSpec]:
        with warnings.catch_warnings():  # partitioned check specs are a preview feature in 1.13
            warnings.simplefilter("ignore", PreviewWarning)
            return [
                AssetCheckSpec(
                    c.name,
                    asset=self.asset,
                    description=c.description,
                    blocking=c.blocking,
                    partitions_def=symbol_window_partitions,
                )
                for c in self.checks
            ]

    def evaluate(
        self,
        context: AssetExecutionContext,
        values: Mapping[str, Any],
        reference: Callable[[PartitionWindow], Any] | None = None,
    ) -> CheckRun:
        """Every selected check on every computed partition; blocking failures become refusals."""
        selected = {key.name for key in context.selected_asset_check_keys if key.asset_key == self.key}
        checks = tuple(c for c in self.checks if c.name in selected)
        verdicts: dict[str, dict[str, Verdict]] = {c.name: {} for c in checks}
        refused: dict[str, str] = {}
        for key in sorted(values):
            pw = window_of(key)
            ref = reference(pw) if reference is not None else None
            for check in checks:
                verdict = check.judge(values[key], pw, ref)  # a rule that raises fails the step
                verdicts[check.name][key] = verdict
                if not verdict.passed and verdict.severity == ERROR and check.blocking:
                    refused.setdefault(key, refusal(pw, check.name, verdict))
        return CheckRun(self, checks, verdicts, refused)

    @property
    def key(self) -> AssetKey:
        return AssetKey(self.asset)


def refusal(pw: PartitionWindow, check: str, verdict: Verdict) -> str:
    """The reason a refused partition is skipped: symbol and window, check, rule, rows."""
    return f"{pw.label}: refused by the {check} check (rule: {verdict.rule}): {verdict.summary}"


@dataclass(frozen=True)
class CheckRun:
    suite: CheckSuite
    checks: tuple[PartitionCheck, ...]
    verdicts: Mapping[str, Mapping[str, Verdict]]  # check name -> partition key -> verdict
    refused: Mapping[str, str]  # partition key -> reason, for those failing a blocking check

    def keep(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` without the refused partitions."""
        return {key: value for key, value in values.items() if key not in self.refused}

    def events(self, context: AssetExecutionContext) -> Iterator:
        """The results, yielded after the asset's outputs (so a batch's results can name this run's
        materialisations), and an output for every selected check, which Dagster requires."""
        if PER_PARTITION_RESULTS:
            yield from self._per_partition(context)
        elif context.has_partition_key:
            yield from self._single(context)
        else:
            yield from self._per_run(context)

    def _single(self, context: AssetExecutionContext) -> Iterator:
        """Fallback in a run of one partition: Dagster names the partition of an AssetCheckResult."""
        (key,) = run_partition_keys(context)
        for check in self.checks:
            verdict = self.verdicts[check.name].get(key)
            if verdict is None:  # skipped partition: no result, the execution shows as skipped
                yield check_output(self.suite.asset, check.name)
                continue
            yield AssetCheckResult(
                asset_key=self.suite.key,
                check_name=check.name,
                passed=verdict.passed,
                severity=verdict.severity,
                description=describe(window_of(key), check, verdict, batch=False),
                metadata=result_metadata(window_of(key), verdict),
            )

    def _per_partition(self, context: AssetExecutionContext) -> Iterator:
        keys = sorted(run_partition_keys(context))
        batch = len(keys) > 1
        judged = sorted({key for verdicts in self.verdicts.values() for key in verdicts})
        targets = target_materialisations(context, self.suite.key, judged)
        for check in self.checks:
            yield check_output(self.suite.asset, check.name)
            for key, verdict in sorted(self.verdicts[check.name].items()):
                pw = window_of(key)
                target = targets.get(key)
                description = describe(pw, check, verdict, batch=batch)
                if target is not None and target.run_id != context.run_id:
                    description += (
                        f" The partition keeps its earlier materialisation (run {target.run_id[:8]}), "
                        "which this result is shown against."
                    )
                yield AssetCheckEvaluation(
                    asset_key=self.suite.key,
                    check_name=check.name,
                    passed=verdict.passed,
                    metadata=result_metadata(pw, verdict),
                    target_materialization_data=target,
                    severity=verdict.severity,
                    description=description,
                    blocking=check.blocking and not batch,
                    partition=key,
                )

    def _per_run(self, context: AssetExecutionContext) -> Iterator:
        """Fallback: one result per check for the whole run, naming each failing partition."""
        batch = len(run_partition_keys(context)) > 1
        for check in self.checks:
            verdicts = self.verdicts[check.name]
            if not verdicts:
                yield check_output(self.suite.asset, check.name)
                continue
            failed = {key: v for key, v in sorted(verdicts.items()) if not v.passed}
            worst = ERROR if any(v.severity == ERROR for v in failed.values()) else WARN
            table = [
                {"symbol": window_of(k).symbol, "window": window_of(k).window_key, "rule": v.rule}
                | {"found": v.summary[:200]}
                for k, v in failed.items()
            ]
            yield AssetCheckResult(
                asset_key=self.suite.key,
                check_name=check.name,
                passed=not failed,
                # a batch goes on past its refused partitions: an ERROR would stop all of them
                severity=WARN if batch else worst,
                description=(
                    f"{len(failed)} of {len(verdicts)} partitions failed"
                    + (" (refused partitions were skipped, the others went on)" if batch and failed else "")
                    if failed
                    else f"{len(verdicts)} partitions passed"
                ),
                metadata={"partitions": len(verdicts), "failed": len(failed), "failing_partitions": table},
            )


def check_output(asset: str, check: str) -> Output:
    """The output Dagster gives a check spec: named by `AssetCheckSpec.get_python_identifier`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        name = AssetCheckSpec(check, asset=asset).get_python_identifier()
    return Output(None, output_name=name)


def target_materialisations(
    context: AssetExecutionContext, asset_key: AssetKey, keys: Sequence[str]
) -> dict[str, Any]:
    """partition key -> the materialisation its result is shown against. The UI's partition status
    compares it with the partition's latest materialisation and shows nothing when they differ (a
    result naming none counts as outdated once the partition has one). This run's materialisation
    of the partition (one query); for a partition this run did not write (refused), its latest one,
    from an earlier run, which it keeps (two queries, only when there are such partitions)."""
    if _Target is None or not keys:
        return {}
    instance = context.instance
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(keys)), limit=len(keys)
    ).records
    targets = {str(r.partition_key): r for r in records if r.run_id == context.run_id}
    if missing := set(keys) - set(targets):
        latest = instance.event_log_storage.get_latest_storage_id_by_partition(
            asset_key, DagsterEventType.ASSET_MATERIALIZATION, partitions=missing
        )
        if latest:
            earlier = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=asset_key, storage_ids=list(latest.values())), limit=len(latest)
            ).records
            targets.update({str(r.partition_key): r for r in earlier})
    return {
        key: _Target(storage_id=r.storage_id, run_id=r.run_id, timestamp=r.timestamp)
        for key, r in targets.items()
    }


def describe(pw: PartitionWindow, check: PartitionCheck, verdict: Verdict, *, batch: bool) -> str:
    """A failure names the partition, rule and consequence. A pass says only what was found: the UI
    shows it beside its partition, and Dagster stores the description three times in each event."""
    if verdict.passed:
        return verdict.summary
    text = f"{pw.label}: {verdict.summary} (rule: {verdict.rule})"
    if verdict.severity == WARN:
        return f"{text}. Kept: a warning, not blocking."
    if not check.blocking:
        return text
    if batch:
        return f"{text}. Refused: nothing written for this partition, downstream skips it; the batch went on."
    return f"{text}. Refused: nothing written for this partition; the step fails (blocking check)."


def _nothing(value: Any) -> bool:
    """A zero count or an absent finding ("none"): what a passing result need not carry."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0) or value == "none"


def result_metadata(pw: PartitionWindow, verdict: Verdict) -> dict[str, Any]:
    """The rule's numbers, plus symbol, window and rule on a failure (small: one event per partition)."""
    meta = dict(verdict.metadata)
    if not verdict.passed:
        meta.update(symbol=pw.symbol, window=pw.window_key, rule=verdict.rule)
    return meta


# --- market_bars ---------------------------------------------------------------------------------


def _days(index: pd.Index) -> np.ndarray:
    """Calendar days of a bar index (the bars' own zone), as datetime64[D]."""
    stamps = pd.DatetimeIndex(index)
    if stamps.tz is not None:
        stamps = stamps.tz_localize(None)
    return stamps.normalize().to_numpy().astype("datetime64[D]")


def _rows(mask: np.ndarray, days: np.ndarray | None = None) -> str:
    """The first offending rows, 1-based in the window's bars, with their day."""
    at = np.flatnonzero(mask)[:SHOWN]
    shown = ", ".join(f"row {i + 1}" + (f" ({days[i]})" if days is not None else "") for i in at)
    more = f" and {int(mask.sum()) - len(at)} more" if mask.sum() > len(at) else ""
    return shown + more


def dates_strictly_increasing(bars: pd.DataFrame, pw: PartitionWindow, _: Any) -> Verdict:
    """Sorted (monotonic), one bar per calendar day (unique), inside the window."""
    days = _days(bars.index)
    earlier = np.zeros(len(days), dtype=bool)
    earlier[1:] = days[1:] < days[:-1]
    repeated = pd.Index(days).duplicated(keep="first")
    outside = (days < np.datetime64(pw.start)) | (days > np.datetime64(pw.end))
    meta = {
        "bars": len(days),
        "out_of_order": int(earlier.sum()),
        "repeated_dates": int(repeated.sum()),
        "outside_window": int(outside.sum()),
    }
    problems = [
        (earlier, "dates sorted (monotonic)", "out of order, earlier than the bar before"),
        (repeated, "one bar per day (unique dates)", "repeat an earlier bar's date"),
        (outside, f"dates within the window {pw.start}..{pw.end}", "lie outside the window"),
    ]
    found = [
        (rule, f"{int(m.sum())} bar(s) {what}: {_rows(m, days)}") for m, rule, what in problems if m.any()
    ]
    if found:
        return Verdict(False, "; ".join(text for _, text in found), meta, rule="; ".join(r for r, _ in found))
    span = f"{days[0]}..{days[-1]}" if len(days) else "no bars"
    return Verdict(True, f"{len(days)} bars, {span}, strictly increasing dates", meta)


OHLC_COLUMNS = ("open", "high", "low", "close", "volume")


def ohlc_consistent(bars: pd.DataFrame, pw: PartitionWindow, _: Any) -> Verdict:
    """The rules `sources.base.validate_bars` enforces on a source's rows, on what is written."""
    missing = [c for c in OHLC_COLUMNS if c not in bars.columns]
    if missing:
        return Verdict(
            False,
            f"missing column(s) {missing}",
            {"bars": len(bars)},
            rule="columns " + ",".join(OHLC_COLUMNS),
        )
    o, h, lo, c, v = (
        pd.to_numeric(bars[col], errors="coerce").to_numpy(dtype="float64") for col in OHLC_COLUMNS
    )
    finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
    with np.errstate(invalid="ignore"):
        rules = {
            "open, high, low, close, volume present and finite": ~finite,
            "low > 0": finite & (lo <= 0),
            "high >= max(open, close)": finite & (h < np.maximum(o, c)),
            "low <= min(open, close)": finite & (lo > np.minimum(o, c)),
            "volume >= 0": finite & (v < 0),
        }
    meta: dict[str, Any] = {
        "bars": len(bars),
        "bad_rows": int(np.logical_or.reduce(list(rules.values())).sum()),
    }
    days = _days(bars.index)
    found = [
        (rule, f"{rule} broken by {int(m.sum())} bar(s): {_rows(m, days)}")
        for rule, m in rules.items()
        if m.any()
    ]
    if found:
        return Verdict(False, "; ".join(text for _, text in found), meta, rule="; ".join(r for r, _ in found))
    return Verdict(True, f"{len(bars)} bars, every one OHLC-consistent with volume >= 0", meta)


def gap_report(longest_gap: Callable[[pd.DataFrame], tuple[int, str]], limit: int) -> Rule:
    """The longest run of weekdays without bars, against `limit` (`SENSEQUANT_MAX_GAP_DAYS`): a longer
    gap is kept (a suspension is real history) but reported, since indicators and labels span it."""

    def rule(bars: pd.DataFrame, pw: PartitionWindow, _: Any) -> Verdict:
        gap, where = longest_gap(bars)
        meta = {"longest_gap_weekdays": gap, "longest_gap": where or "none", "limit_weekdays": limit}
        if gap > limit:
            summary = f"{gap} weekdays without bars ({where}); indicators and labels span the gap"
            return Verdict(
                False, summary, meta, WARN, rule=f"gaps of at most SENSEQUANT_MAX_GAP_DAYS={limit} weekdays"
            )
        return Verdict(
            True, f"longest gap {gap} weekday(s){f' ({where})' if where else ''}, limit {limit}", meta
        )

    return rule


def bar_checks(longest_gap: Callable[[pd.DataFrame], tuple[int, str]], max_gap_days: int) -> CheckSuite:
    """`market_bars`' check (the gap detector and its limit are `bars.py`'s own)."""
    return CheckSuite(
        "market_bars",
        (
            PartitionCheck(
                "bars_valid",
                "Dates sorted (monotonic), one bar per day (unique), inside the window; prices finite "
                "and positive with low <= open, close <= high; volume >= 0 (blocking: features and "
                "labels of such bars are garbage). More than SENSEQUANT_MAX_GAP_DAYS "
                f"({max_gap_days}) weekdays without bars is a warning (kept: a suspension is real "
                "history, but indicators and labels span it).",
                True,
                (dates_strictly_increasing, ohlc_consistent, gap_report(longest_gap, max_gap_days)),
            ),
        ),
    )


# --- teacher_labels ------------------------------------------------------------------------------


def label_classes(labels: pd.DataFrame, pw: PartitionWindow, min_class_rows: Any) -> Verdict:
    """Both classes present (ERROR, blocking); each with at least `min_class_rows` rows (WARN)."""
    label = pd.to_numeric(labels["label"], errors="coerce")
    positives, negatives = int((label == 1).sum()), int((label == 0).sum())
    other = len(label) - positives - negatives
    meta = {
        "rows": len(label),
        "positives": positives,
        "negatives": negatives,
        "min_class_rows": int(min_class_rows),
    }
    if other:
        bad = ~label.isin([0, 1]).to_numpy()
        return Verdict(
            False, f"{other} label(s) neither 0 nor 1: {_rows(bad)}", meta, rule="labels are 0 or 1"
        )
    if not positives or not negatives:
        return Verdict(False, f"only one class among {len(label)} rows", meta, rule="both classes present")
    minority = min(positives, negatives)
    if minority < min_class_rows:
        summary = (
            f"{minority} row(s) of the rarer class (of {len(label)}): fewer than a LightGBM leaf's "
            f"minimum (min_child_samples={min_class_rows}), so the teacher can barely learn it"
        )
        return Verdict(
            False, summary, meta, WARN, rule=f"at least min_child_samples={min_class_rows} rows per class"
        )
    return Verdict(True, f"{positives} positive and {negatives} negative rows", meta)


def oof_proba_in_range(labels: pd.DataFrame, pw: PartitionWindow, _: Any) -> Verdict:
    """Every row's out-of-fold `teacher_proba` (the student's soft label) finite, within [0, 1]."""
    if "teacher_proba" not in labels.columns:
        return Verdict(False, "no teacher_proba column", {"rows": len(labels)}, rule="teacher_proba present")
    p = pd.to_numeric(labels["teacher_proba"], errors="coerce").to_numpy(dtype="float64")
    finite = np.isfinite(p)
    with np.errstate(invalid="ignore"):
        outside = finite & ((p < 0) | (p > 1))
    meta: dict[str, Any] = {
        "rows": len(p),
        "non_finite": int((~finite).sum()),
        "outside_0_1": int(outside.sum()),
    }
    if finite.any():
        meta.update(min=float(p[finite].min()), max=float(p[finite].max()))
    found = [
        f"{int(m.sum())} {what}: {_rows(m)}"
        for m, what in ((~finite, "missing or non-finite"), (outside, "outside [0, 1]"))
        if m.any()
    ]
    if found:
        return Verdict(
            False, "teacher_proba " + "; ".join(found), meta, rule="teacher_proba finite, within [0, 1]"
        )
    return Verdict(
        True,
        f"{len(p)} out-of-fold probabilities in [{meta.get('min', 0):.3f}, {meta.get('max', 1):.3f}]",
        meta,
    )


TEACHER_CHECKS = CheckSuite(
    "teacher_labels",
    (
        PartitionCheck(
            "soft_labels_valid",
            "Both label classes present; every row's out-of-fold teacher_proba, the student's soft "
            "label, finite and within [0, 1] (blocking: the student would learn from garbage). A class "
            "with fewer rows than the teacher's min_child_samples is a warning.",
            True,
            (label_classes, oof_proba_in_range),
        ),
    ),
)


# --- student_evaluation --------------------------------------------------------------------------


def _wall_times(values: Any) -> pd.DatetimeIndex:
    """Timestamps as wall times in the bars' zone (as built: tz-aware; as read back: ISO text)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(pd.Series(values)))
    return stamps.tz_localize(None) if stamps.tz is not None else stamps


def predictions_cover_window(artifact: Any, pw: PartitionWindow, window_rows: pd.DataFrame) -> Verdict:
    """One prediction per labelled row of the window (`window_rows`: this window's rows of
    teacher_labels), at the same times, none outside the window, each a probability."""
    pred = artifact.predictions
    got, expected = _wall_times(pred["ts"]), _wall_times(window_rows["ts"])
    end = pd.Timestamp(pw.end) + pd.Timedelta(days=1)
    outside = np.asarray((got < pd.Timestamp(pw.start)) | (got >= end), dtype=bool)
    missing, extra = expected.difference(got), got.difference(expected)
    proba = pd.to_numeric(pred["student_proba"], errors="coerce").to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        bad_proba = ~(np.isfinite(proba) & (proba >= 0) & (proba <= 1))
    meta: dict[str, Any] = {
        "predictions": len(got),
        "window_rows": len(expected),
        "first_prediction": str(got.min().date()) if len(got) else "none",
        "last_prediction": str(got.max().date()) if len(got) else "none",
        "missing_rows": len(missing),
        "extra_rows": len(extra),
        "outside_window": int(outside.sum()),
        "bad_probabilities": int(bad_proba.sum()),
    }
    found = []
    if len(missing):
        days = ", ".join(str(t.date()) for t in missing[:SHOWN])
        found.append(
            (
                "every labelled row predicted",
                f"{len(missing)} labelled row(s) of the window unpredicted: {days}",
            )
        )
    if len(extra):
        days = ", ".join(str(t.date()) for t in extra[:SHOWN])
        found.append(
            ("no prediction without a labelled row", f"{len(extra)} prediction(s) at no labelled row: {days}")
        )
    if outside.any():
        found.append(
            (
                f"within the window {pw.start}..{pw.end}",
                f"{int(outside.sum())} prediction(s) outside the window: {_rows(outside)}",
            )
        )
    if len(got) != len(expected) and not (len(missing) or len(extra)):
        found.append(
            ("one prediction per row", f"{len(got)} predictions for {len(expected)} rows (repeated times)")
        )
    if bad_proba.any():
        found.append(
            (
                "student_proba finite, within [0, 1]",
                f"{int(bad_proba.sum())} student_proba not a probability: {_rows(bad_proba)}",
            )
        )
    if found:
        return Verdict(False, "; ".join(t for _, t in found), meta, rule="; ".join(r for r, _ in found))
    return Verdict(
        True,
        f"{len(got)} predictions, {meta['first_prediction']}..{meta['last_prediction']}: "
        "every labelled row of the window",
        meta,
    )


EVALUATION_CHECKS = CheckSuite(
    "student_evaluation",
    (
        PartitionCheck(
            "predictions_cover_window",
            "The evaluation predicts every labelled row of its window, and nothing else (blocking: "
            "metrics of part of a window, or of rows outside it, are not the window's).",
            True,
            (predictions_cover_window,),
        ),
    ),
)
