"""One configuration per decision: the briefing judges one configuration, production follows it.

A symbol is trained under the default configuration, then part of it is re-trained with another
student C, through the real Dagster graph. The briefing must judge the windows of one configuration
only (the default unless `BriefingConfig.config_id` says otherwise), and `production_models` must
never install a student of a configuration the briefing did not judge.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from dagster import Config, DagsterInstance, materialize
from pydantic.fields import FieldInfo

from sensequant_assets import cli, registry
from sensequant_assets.assets.student import (
    StudentConfig,
    config_hash,
    default_config_id,
    model_configuration,
)
from sensequant_assets.assets.teacher import RUN_ONLY_FIELDS, TeacherConfig, teacher_configuration
from sensequant_assets.resources import PipelineSettings
from sensequant_tests.pipeline_helpers import ALL_ASSETS, failure_messages, resources, run

SYMBOL = "TCS"
MARKET = {
    "signal_symbols": SYMBOL,
    "signal_ic": 0.6246,
}  # strong smoke-test signal: the tests are about configurations
W0, W1, W2, W3 = "2022-01-01", "2022-07-01", "2023-01-01", "2023-07-01"
OTHER_C = 10.0
HORIZON = PipelineSettings().forecast_horizon
# Gates that any evaluated record passes, so the tests are about which configuration is judged and
# promoted, not about whether a few windows of synthetic data clear the real thresholds.
LAX = {"min_windows": 1, "min_rows": 1, "fdr": 0.999}
DIRS = {W0: "2022-06-30", W1: "2022-12-31", W2: "2023-06-30", W3: "2023-12-31"}


def _other_config_id() -> str:
    """The id of the non-default configuration, computed from code (no model needed)."""
    teacher = teacher_configuration(TeacherConfig(), HORIZON)
    return config_hash(model_configuration(teacher, StudentConfig(C=OTHER_C)))


def _student_meta(artifacts: Path, window: str) -> dict[str, Any]:
    return json.loads(
        (artifacts / f"{SYMBOL}_{window}_to_{DIRS[window]}" / "student" / "metadata.json").read_text()
    )


def _evaluation_meta(artifacts: Path, window: str) -> dict[str, Any]:
    path = artifacts / f"{SYMBOL}_{window}_to_{DIRS[window]}" / "evaluation" / "metrics.json"
    return json.loads(path.read_text())


def _brief(artifacts: Path, instance: DagsterInstance, **briefing: Any) -> dict[str, Any]:
    """Run the briefing and production; return what each said."""
    result = materialize(
        ALL_ASSETS,
        selection=["promotion_briefing", "production_models"],
        resources=resources(artifacts, **MARKET),
        instance=instance,
        run_config={"ops": {"promotion_briefing": {"config": {**LAX, **briefing}}}},
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    [brief_mat] = result.asset_materializations_for_node("promotion_briefing")
    [prod_mat] = result.asset_materializations_for_node("production_models")
    artifact = result.output_for_node("promotion_briefing")
    current = registry.current(artifacts, SYMBOL)
    return {
        "entry": next(b for b in artifact.symbols if b["symbol"] == SYMBOL),
        "markdown": artifact.markdown,
        "metadata": {k: v.value for k, v in brief_mat.metadata.items()},
        "actions": prod_mat.metadata["actions"].value,
        "current": current,
        "stored": json.loads((artifacts / "briefings" / "promotion_briefing.json").read_text()),
    }


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Default configuration on four windows, then the other C on the last two; briefings at each step.

    After step 2: students W0, W1 default, W2, W3 other; evaluations W1, W2 default (students W0,
    W1), W3 other (student W2). Step 3 re-trains the W0 and W1 students under the other C without
    re-evaluating, so the default configuration's record stands but none of its students remain.
    """
    artifacts = tmp_path_factory.mktemp("models")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", [SYMBOL])
    other = {"ops": {"student_model": {"config": {"C": OTHER_C}}}}
    out: dict[str, Any] = {"artifacts": artifacts, "instance": instance}
    for window in (W0, W1, W2, W3):
        result = run(artifacts, f"{SYMBOL}|{window}", instance=instance, **MARKET)
        assert result.success, failure_messages(result)
    out["default_run_student"] = _student_meta(artifacts, W0)
    out["default_run_evaluation"] = _evaluation_meta(artifacts, W1)

    for window in (W2, W3):
        result = run(
            artifacts,
            f"{SYMBOL}|{window}",
            selection=["student_model", "student_evaluation"],
            run_config=other,
            instance=instance,
            **MARKET,
        )
        assert result.success, failure_messages(result)
    out["evaluations"] = {w: _evaluation_meta(artifacts, w)["config_id"] for w in (W1, W2, W3)}
    out["students"] = {w: _student_meta(artifacts, w)["config_id"] for w in (W0, W1, W2, W3)}
    out["default"] = _brief(artifacts, instance)
    out["other"] = _brief(artifacts, instance, config_id=_other_config_id())
    out["unknown"] = _brief(artifacts, instance, config_id="000000000000")

    for window in (W0, W1):
        result = run(
            artifacts,
            f"{SYMBOL}|{window}",
            selection=["student_model"],
            run_config=other,
            instance=instance,
            **MARKET,
        )
        assert result.success, failure_messages(result)
    out["students_after"] = {w: _student_meta(artifacts, w)["config_id"] for w in (W0, W1, W2, W3)}
    out["stale"] = _brief(artifacts, instance)
    return out


def test_default_id_from_code_equals_what_a_default_run_records(story) -> None:
    default = default_config_id(HORIZON)
    assert story["default_run_student"]["config_id"] == default
    assert story["default_run_evaluation"]["config_id"] == default
    # The recorded configuration is the one the id is the hash of.
    assert config_hash(story["default_run_student"]["configuration"]) == default
    assert story["evaluations"] == {W1: default, W2: default, W3: _other_config_id()}
    assert story["students"] == {W0: default, W1: default, W2: _other_config_id(), W3: _other_config_id()}
    assert _other_config_id() != default


def test_briefing_judges_only_the_default_configuration(story) -> None:
    default = default_config_id(HORIZON)
    brief = story["default"]
    entry = brief["entry"]
    assert entry["config_id"] == default
    assert (entry["windows"], entry["windows_left_out"]) == (2, 1)
    assert entry["decision"] == "PROMOTE", entry["reasons"]
    assert brief["metadata"]["config_id"] == default
    assert brief["metadata"]["config_is_default"] is True
    assert brief["metadata"]["windows_left_out"] == {SYMBOL: 1}
    assert f"Configuration judged: `{default}` (the code's default configuration)" in brief["markdown"]
    assert f"left out: {SYMBOL} 1." in brief["markdown"]
    assert brief["markdown"].startswith("# Promotion briefing")
    stored = next(b for b in brief["stored"]["symbols"] if b["symbol"] == SYMBOL)
    assert (stored["config_id"], stored["windows_left_out"]) == (default, 1)


def test_config_id_selects_the_other_configuration(story) -> None:
    brief = story["other"]
    entry = brief["entry"]
    assert entry["config_id"] == _other_config_id()
    assert (entry["windows"], entry["windows_left_out"]) == (1, 2)
    assert brief["metadata"]["config_is_default"] is False
    assert "selected with BriefingConfig.config_id" in brief["markdown"]


def test_trials_count_every_configuration_whichever_is_judged(story) -> None:
    assert story["default"]["entry"]["n_trials"] == 2
    assert story["other"]["entry"]["n_trials"] == 2
    assert story["unknown"]["entry"]["n_trials"] == 2


def test_production_takes_the_newest_student_of_the_judged_configuration(story) -> None:
    default = story["default"]
    # The newest students (W3, W2) are of the other configuration: passed over, and the table says so.
    assert default["current"].partition_key == f"{SYMBOL}|{W1}"
    assert default["current"].config_id == default_config_id(HORIZON)
    assert f"{SYMBOL}|{W1} now in production" in default["actions"]
    assert f"passed over newer {SYMBOL}|{W3} (configuration {_other_config_id()})" in default["actions"]
    assert f"passed over newer {SYMBOL}|{W2}" in default["actions"]
    promotion = json.loads(
        (story["artifacts"] / "production" / SYMBOL / "current" / "promotion.json").read_text()
    )
    assert promotion["config_id"] == story["other"]["current"].config_id  # latest promotion: the other
    # Judging the other configuration promotes its newest student.
    other = story["other"]
    assert other["current"].partition_key == f"{SYMBOL}|{W3}"
    assert other["current"].config_id == _other_config_id()
    history = registry.history(story["artifacts"], SYMBOL)
    assert [(h["to"], h["config_id"]) for h in history] == [
        (f"{SYMBOL}|{W1}", default_config_id(HORIZON)),
        (f"{SYMBOL}|{W3}", _other_config_id()),
    ]


def test_a_configuration_with_no_evaluation_is_insufficient_data_and_promotes_nothing(story) -> None:
    unknown = story["unknown"]
    entry = unknown["entry"]
    assert entry["decision"] == "INSUFFICIENT_DATA"
    assert entry["reasons"] == [
        "no window evaluated under configuration 000000000000 (3 window(s) of other configurations left out)"
    ]
    assert (entry["windows"], entry["windows_left_out"]) == (0, 3)
    assert "not promoted" in unknown["actions"]
    assert unknown["current"] == story["other"]["current"]


def test_no_student_of_the_judged_configuration_left_means_nothing_is_promoted(story) -> None:
    assert set(story["students_after"].values()) == {_other_config_id()}
    stale = story["stale"]
    default = default_config_id(HORIZON)
    # The default configuration's evaluations still stand, so the briefing still judges and promotes it...
    assert stale["entry"]["decision"] == "PROMOTE"
    assert (stale["entry"]["windows"], stale["entry"]["config_id"]) == (2, default)
    # ...but no student of it remains, so production keeps what it had and the table says why.
    assert f"not promoted: no materialised student of configuration {default}" in stale["actions"]
    assert stale["current"] == story["unknown"]["current"]
    assert stale["current"].config_id == _other_config_id()


def test_cli_promote_follows_the_judged_configuration_too(
    story, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sensequant promote` reads the stored (stale) briefing: it must refuse every remaining student."""
    artifacts, default = story["artifacts"], default_config_id(HORIZON)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # restored afterwards, as is the next one
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(artifacts))
    monkeypatch.setattr(cli, "_instance", lambda: story["instance"])
    before = registry.current(artifacts, SYMBOL)

    assert cli.main(["promote", "--symbol", SYMBOL, "--artifacts-dir", str(artifacts)]) == 1
    assert f"no materialised student_model of {SYMBOL} of the judged configuration {default}" in (
        capsys.readouterr().err
    )
    argv = ["promote", "--symbol", SYMBOL, "--artifacts-dir", str(artifacts), "--partition", f"{SYMBOL}|{W3}"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert (
        f"its student is configuration {_other_config_id()}, the briefing judged configuration {default}"
        in err
    )
    assert registry.current(artifacts, SYMBOL) == before


def _other_value(name: str, info: FieldInfo, value: Any) -> Any:
    """A different value of the field's type, to check that the field moves the configuration id."""
    if name == "lookback_windows":  # bounded: 0..MAX_LOOKBACK_WINDOWS
        return 0 if value else 1
    if typing.get_origin(info.annotation) is typing.Literal:
        others = [v for v in typing.get_args(info.annotation) if v != value]
        assert others, f"{name}: a Literal with one choice cannot change the model"
        return others[0]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    pytest.fail(f"{name}: add a way to vary a {type(value).__name__} field to this test")


@pytest.mark.parametrize(
    ("config_cls", "side"),
    [(TeacherConfig, "teacher"), (StudentConfig, "student")],
)
def test_every_shaping_field_and_the_horizon_move_the_id(config_cls: type[Config], side: str) -> None:
    """Every field of the configs is in the id (new fields included), except the run-only ones;
    a label setting counts under the label kind that uses it."""
    default = default_config_id(HORIZON)
    assert default_config_id(HORIZON + 1) != default
    kind_of = {"label_threshold": "fixed", "label_vol_k": "vol_scaled", "label_vol_window": "vol_scaled"}
    for name, info in config_cls.model_fields.items():
        base = {"label": kind_of[name]} if side == "teacher" and name in kind_of else {}
        if base:
            default = config_hash(
                model_configuration(teacher_configuration(TeacherConfig(**base), HORIZON), StudentConfig())
            )
        else:
            default = default_config_id(HORIZON)
        changed = config_cls(**base, **{name: _other_value(name, info, getattr(config_cls(), name))})
        teacher = changed if side == "teacher" else TeacherConfig()
        student = changed if side == "student" else StudentConfig()
        moved = config_hash(model_configuration(teacher_configuration(teacher, HORIZON), student))
        if side == "teacher" and name in RUN_ONLY_FIELDS:
            assert moved == default, f"{name} only changes how a window trains, not the model"
        else:
            assert moved != default, f"{side} field {name} does not change the configuration id"


def test_label_settings_the_kind_ignores_do_not_make_a_new_configuration() -> None:
    def config_id(**teacher: object) -> str:
        return config_hash(
            model_configuration(teacher_configuration(TeacherConfig(**teacher), HORIZON), StudentConfig())
        )

    assert config_id() == default_config_id(HORIZON)
    assert config_id(label_threshold=0.03, label_vol_k=1.0) == config_id()  # sign ignores both
    assert config_id(label="fixed", label_threshold=0.03) != config_id(label="fixed")
    assert config_id(label="vol_scaled", label_vol_k=1.0) != config_id(label="vol_scaled")
    assert config_id(label="vol_scaled", label_threshold=0.03) == config_id(label="vol_scaled")


def test_an_unchanged_symbol_is_reused_and_gives_the_same_briefing(story) -> None:
    """The second briefing over the same evaluations reads none of them and decides identically."""
    artifacts, instance = story["artifacts"], story["instance"]
    first = _brief(artifacts, instance)
    again = _brief(artifacts, instance)
    assert again["metadata"]["symbols_recomputed"] == 0
    assert again["entry"] == first["entry"]
    # Another judged configuration is another input: recomputed, then reused in turn.
    other = _brief(artifacts, instance, config_id=_other_config_id())
    assert other["metadata"]["symbols_recomputed"] == 1
    assert other["entry"] != first["entry"]
    assert _brief(artifacts, instance)["entry"] == first["entry"]


def test_briefing_config_defaults_are_the_promotion_gates_and_are_described() -> None:
    """The launchpad's defaults are the code's gates, and every gate has a description it shows."""
    from sensequant_assets.assets.briefing import BriefingConfig
    from sensequant_assets.ml.briefing import PromotionGates

    assert BriefingConfig().gates() == PromotionGates()
    fields = BriefingConfig.to_config_schema().as_field().config_type.fields
    for name in PromotionGates.__dataclass_fields__:
        assert fields[name].description, name
    assert "calibrated null" in fields["null_shift"].description.lower()
    assert "calibrated null" in fields["null_scale"].description.lower()
