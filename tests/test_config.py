"""Configs: sorted JSON, from_dict round trips, unknown and missing keys, validation naming the argument."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from hf_landscape import CausalLMObjectiveConfig, ConfigError, RandomDirectionConfig

LOGGER = "hf_landscape.config"

CONFIGS = [
    RandomDirectionConfig(),
    RandomDirectionConfig(
        normalization="layer", include_1d=True, include=[r"\.attn\."], exclude=["wte", "wpe"], orthogonalize=True
    ),
    CausalLMObjectiveConfig(),
    CausalLMObjectiveConfig(
        max_length=32, batch_size=3, padding_side="left", text_column="body", add_special_tokens=False
    ),
]
CONFIG_IDS = ["direction-default", "direction-custom", "objective-default", "objective-custom"]


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_to_json_string_is_sorted_json(config):
    text = config.to_json_string()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert text == json.dumps(data, sort_keys=True, indent=2)
    assert set(data) == {f.name for f in dataclasses.fields(config)}


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_from_dict_round_trip(config):
    again = type(config).from_dict(json.loads(config.to_json_string()))
    assert again == config
    assert again.to_json_string() == config.to_json_string()


def test_random_direction_config_defaults():
    assert RandomDirectionConfig().to_dict() == {
        "normalization": "filter",
        "include_1d": False,
        "include": None,
        "exclude": None,
        "orthogonalize": False,
    }


def test_objective_config_defaults():
    assert CausalLMObjectiveConfig().to_dict() == {
        "max_length": 128,
        "batch_size": 8,
        "padding_side": "right",
        "text_column": "text",
        "add_special_tokens": True,
        "sort_by_length": True,
    }


def test_patterns_are_stored_as_lists():
    config = RandomDirectionConfig(include=("a", "b"), exclude="wte")
    assert config.include == ["a", "b"]
    assert config.exclude == ["wte"]
    assert json.loads(config.to_json_string())["include"] == ["a", "b"]


@pytest.mark.parametrize("cls", [RandomDirectionConfig, CausalLMObjectiveConfig])
def test_unknown_keys_warn_and_are_dropped(cls, caplog):
    data = cls().to_dict()
    data["from_the_future"] = 1
    data["another"] = "x"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = cls.from_dict(data)
    assert config == cls()
    assert not hasattr(config, "from_the_future")
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert cls.__name__ in messages[0] and "another" in messages[0] and "from_the_future" in messages[0]


@pytest.mark.parametrize("cls", [RandomDirectionConfig, CausalLMObjectiveConfig])
def test_known_keys_do_not_warn(cls, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cls.from_dict(cls().to_dict())
    assert not [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(
    ("cls", "key"), [(RandomDirectionConfig, "normalization"), (CausalLMObjectiveConfig, "batch_size")]
)
def test_missing_keys_raise(cls, key):
    data = cls().to_dict()
    del data[key]
    with pytest.raises(ConfigError, match=key):
        cls.from_dict(data)


def test_from_dict_needs_a_dict():
    with pytest.raises(ConfigError, match="needs a dict"):
        RandomDirectionConfig.from_dict(["normalization", "filter"])


def test_from_dict_validates_values():
    data = CausalLMObjectiveConfig().to_dict()
    data["padding_side"] = "middle"
    with pytest.raises(ConfigError, match="padding_side"):
        CausalLMObjectiveConfig.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"normalization": "unit"}, "normalization"),
        ({"normalization": None}, "normalization"),
        ({"include_1d": "yes"}, "include_1d"),
        ({"include_1d": 1}, "include_1d"),
        ({"orthogonalize": None}, "orthogonalize"),
        ({"include": [3]}, "include"),
        ({"include": 3}, "include"),
        ({"exclude": ["("]}, "exclude"),
    ],
)
def test_random_direction_config_bad_values_name_the_argument(kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}`") as info:
        RandomDirectionConfig(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"max_length": 1}, "max_length"),
        ({"max_length": 32.0}, "max_length"),
        ({"max_length": True}, "max_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "8"}, "batch_size"),
        ({"padding_side": "middle"}, "padding_side"),
        ({"text_column": ""}, "text_column"),
        ({"text_column": None}, "text_column"),
    ],
)
def test_objective_config_bad_values_name_the_argument(kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}`") as info:
        CausalLMObjectiveConfig(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("argument", ["add_special_tokens", "sort_by_length"])
def test_objective_config_bool_fields_are_validated(argument):
    with pytest.raises(ConfigError, match=f"`{argument}`"):
        CausalLMObjectiveConfig(**{argument: "no"})


def test_bad_value_message_shows_the_value_and_choices():
    with pytest.raises(ConfigError) as info:
        RandomDirectionConfig(normalization="unit")
    message = str(info.value)
    assert "'unit'" in message and "filter" in message and "layer" in message
