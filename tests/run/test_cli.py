"""The config system: recipe + overrides -> validated dataclasses, with errors a user can act on."""

from __future__ import annotations

import dataclasses

import pytest

from dllm_rl.config import LR_SCHEDULERS
from dllm_rl.run.cli import (
    ConfigError,
    build_config,
    help_text,
    load_recipe,
    merge,
    parse_overrides,
    recipe_names,
    to_dict,
)
from dllm_rl.trainers.grpo_config import GRPOConfig


def test_overrides_are_nested_and_run_keys_move_under_run():
    recipe, overrides, want_help = parse_overrides(
        ["recipe=cj_grpo_tiny", "max_steps=3", "output_dir=runs/try", "grpo.beta=0.04"]
    )
    assert (recipe, want_help) == ("cj_grpo_tiny", False)
    config = build_config(GRPOConfig, overrides)
    assert config.run.max_steps == 3 and config.run.output_dir == "runs/try"
    assert config.grpo.beta == 0.04 and isinstance(config.grpo.beta, float)


def test_values_are_typed_by_the_schema():
    _, overrides, _ = parse_overrides(
        ["output_dir=123", "rollout.eos_rejection.ids=[5, 7]", "run.dry_run=true", "seed=4"]
    )
    config = build_config(GRPOConfig, overrides)
    assert config.run.output_dir == "123"  # a string field keeps the text, not the int
    assert config.rollout.eos_rejection.ids == (5, 7)
    assert config.run.dry_run is True and config.run.seed == 4


@pytest.mark.parametrize(
    "arg, close",
    [
        ("traning.lr=1e-5", "training.lr"),
        ("training.lrr=1e-5", "training.lr"),
        ("grpo.num_generation=4", "grpo.num_generations"),
        ("max_step=3", "run.max_steps"),
        ("rollout.eos_rejection.gama_min=0.1", "rollout.eos_rejection.gamma_min"),
    ],
)
def test_unknown_keys_name_the_close_match(arg, close):
    with pytest.raises(ConfigError, match="unknown config key") as error:
        build_config(GRPOConfig, parse_overrides([arg])[1])
    assert f"Did you mean {close}" in str(error.value)


@pytest.mark.parametrize(
    "arg, words",
    [
        ("max_steps=abc", ["run.max_steps", "expected int"]),
        ("grpo.beta=high", ["grpo.beta", "expected float"]),
        ("rollout.schedule=asc", ["rollout.schedule", "'uniform', 'ascending'"]),
        ("grpo.loss_type=mean", ["grpo.loss_type", "'step_mean'"]),
        ("rollout.temperature=0", ["training needs T > 0"]),
        ("grpo.num_generations=0", ["grpo.num_generations must be >= 1"]),
        ("training.lr_scheduler=cosin", ["training.lr_scheduler", "cosine"]),
    ],
)
def test_bad_values_say_what_was_expected(arg, words):
    with pytest.raises(ConfigError) as error:
        build_config(GRPOConfig, parse_overrides([arg])[1])
    for word in words:
        assert word in str(error.value)


def test_ascending_schedule_with_wrong_steps_fails_at_config_time():
    overrides = parse_overrides(["rollout.schedule=ascending", "rollout.steps=32"])[1]
    with pytest.raises(ConfigError, match=r"floor\(log2 gen_length\) = 8"):
        build_config(GRPOConfig, overrides)


def test_batch_arithmetic_is_in_the_message():
    config = build_config(
        GRPOConfig,
        {"grpo": {"prompts_per_step": 6, "num_generations": 4, "per_device_batch_size": 5}},
    )
    with pytest.raises(ValueError, match="6 / 2 x 4 = 12 completions"):
        config.check_batch(2)
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        config.check_batch(4)
    grpo = {"per_device_batch_size": 4, "generation_batch_size": 8}
    plan = build_config(GRPOConfig, {"grpo": grpo}).check_batch(2)
    assert (plan.local_prompts, plan.local_completions, plan.micro_batches) == (4, 16, 4)


def test_arguments_must_be_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["recipe=cj_grpo_tiny", "max_steps"])
    with pytest.raises(ConfigError, match="twice"):
        parse_overrides(["seed=1", "run.seed=2"])


def test_recipes_are_found_by_name_and_path(tmp_path):
    assert "cj_grpo_tiny" in recipe_names()
    name, data = load_recipe("cj_grpo_tiny")
    assert name == "cj_grpo_tiny" and data["algorithm"] == "grpo"
    path = tmp_path / "mine.yaml"
    path.write_text("algorithm: grpo\nrun: {max_steps: 2}\n")
    assert load_recipe(str(path)) == ("mine", {"algorithm": "grpo", "run": {"max_steps": 2}})
    with pytest.raises(ConfigError, match="Did you mean 'cj_grpo_tiny'"):
        load_recipe("cj_grpo_tiyn")


def test_merge_is_deep_and_overrides_win():
    base = {"grpo": {"beta": 0.0, "epsilon": 0.2}, "rewards": ["a"]}
    assert merge(base, {"grpo": {"beta": 0.1}, "rewards": ["b"]}) == {
        "grpo": {"beta": 0.1, "epsilon": 0.2},
        "rewards": ["b"],
    }


def test_help_lists_every_leaf_with_its_help():
    text = help_text(GRPOConfig, "grpo")
    config = GRPOConfig()
    for section in ("run", "grpo", "rollout", "training"):
        for f in dataclasses.fields(getattr(config, section)):
            nested = dataclasses.is_dataclass(getattr(getattr(config, section), f.name))
            assert (f"{section}.{f.name}:" if nested else f"  {section}.{f.name} (") in text
    assert "completions per micro-batch forward" in text


def test_config_round_trips_through_plain_data():
    config = build_config(GRPOConfig, parse_overrides(["grpo.beta=0.1", "seed=3"])[1])
    assert build_config(GRPOConfig, to_dict(config)) == config


def test_scheduler_names_are_transformers_names():
    from transformers.trainer_utils import SchedulerType

    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}


def test_every_scheduler_builds_and_an_argument_it_needs_is_asked_for_up_front():
    """cosine_with_min_lr and warmup_stable_decay raised inside transformers at the first step
    of a run; now the config names the argument, and with it every schedule builds."""
    import torch

    from dllm_rl.config import SCHEDULER_ARGUMENTS, OptimConfig
    from dllm_rl.run.build import make_scheduler

    for name in LR_SCHEDULERS:
        needs = SCHEDULER_ARGUMENTS.get(name, ())
        if needs:
            with pytest.raises(ValueError, match=needs[0]):
                OptimConfig(lr_scheduler=name)
        kwargs = {needs[-1]: 0.1 if needs[-1] != "num_decay_steps" else 2} if needs else {}
        config = OptimConfig(lr_scheduler=name, warmup_steps=1, lr_scheduler_kwargs=kwargs)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make_scheduler(optimizer, config, 10)
        optimizer.step()
        scheduler.step()


def test_free_form_sections_get_typed_command_line_values():
    config = build_config(
        GRPOConfig, parse_overrides(["data.options.size=64", "data.options.digits=3"])[1]
    )
    assert config.data.options == {"size": 64, "digits": 3}
    assert type(config.data.options["size"]) is int


def test_an_empty_mapping_clears_the_recipe_value():
    assert merge({"data": {"options": {"size": 5}}}, {"data": {"options": {}}}) == {
        "data": {"options": {}}
    }


def test_help_with_a_recipe_shows_the_recipe_values(capsys):
    from dllm_rl import train

    assert train.main(["recipe=cj_grpo_tiny", "max_steps=7", "--help"]) == 0
    out = capsys.readouterr().out
    assert "run.max_steps (int, default 100, recipe 7)" in out  # the override wins
    assert "training.lr (float, default 1e-05, recipe 0.003)" in out  # the recipe's value
    assert "run.seed (int, default 0)  " in out  # equal to the default: shown once
