"""Config loading: YAML + overrides, validated before any work, with one-line errors naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolrl.config import load_config, save_config
from toolrl.config.loader import all_keys
from toolrl.errors import ConfigError


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["tool.max_calls=2", "tool.format=retool", "sandbox.backend=e2b", "reward.exec_error_penalty=-0.5"])
    assert cfg.tool.max_calls == 2 and cfg.tool.format == "retool"
    assert cfg.sandbox.backend == "e2b" and cfg.reward.exec_error_penalty == -0.5
    assert cfg.model.path is None and cfg.rollout.backend == "auto"


def test_yaml_file_then_overrides_win(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("tool:\n  max_calls: 3\n  timeout_s: 2.5\ndata:\n  dir: /data\n")
    cfg = load_config(f, ["tool.max_calls=1"])
    assert cfg.tool.max_calls == 1 and cfg.tool.timeout_s == 2.5 and cfg.data.dir == "/data"


def test_unknown_override_names_closest_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["tool.max_call=2"])
    assert "unknown config key 'tool.max_call'" in e.value.message
    assert "tool.max_calls" in (e.value.hint or "")


def test_unknown_yaml_key_names_closest_key(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("sandbox:\n  pool_sise: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "sandbox.pool_sise" in e.value.message and "sandbox.pool_size" in (e.value.hint or "")


def test_wrong_type_says_what_is_expected() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["tool.max_calls=many"])
    assert "tool.max_calls" in e.value.message and "int" in e.value.message


def test_bad_choice_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["tool.format=xml"])
    assert "torl" in e.value.message and "retool" in e.value.message


@pytest.mark.parametrize("override", ["tool.max_calls=-2", "rollout.top_p=0", "tool.timeout_s=0", "eval.n=0"])
def test_out_of_range_values_rejected(override: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_override_without_equals_is_rejected() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["tool.max_calls"])
    assert "key=value" in e.value.message


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["tool.max_calls=2", "run.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_every_key_has_help() -> None:
    missing = [k for k, f in all_keys().items() if not f.metadata.get("help")]
    assert missing == []


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    for f in sorted(root.glob("*.yaml")):
        load_config(f)


def test_configuration_reference_is_up_to_date() -> None:
    from toolrl.config.reference import markdown_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "configuration-keys.md"
    assert doc.read_text() == markdown_reference(), "regenerate with `make docs-config`"
