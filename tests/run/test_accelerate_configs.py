"""Every shipped accelerate config parses through accelerate itself (its config classes and the
checks ``accelerate launch`` runs), sets up the launch it promises and selects the engine it names;
the launch modes without tests behind them are refused with a message before anything loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dllm_rl.trainers.common import check_launch

CONFIGS = Path(__file__).resolve().parents[2] / "scripts" / "accelerate"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
EXPECTED = {
    "single_gpu.yaml": ("NO", 1, 1),
    "multi_gpu.yaml": ("MULTI_GPU", 8, 1),
    "multi_node.yaml": ("MULTI_GPU", 16, 2),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 8, 1),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 8, 1),
    "deepspeed_zero3_offload.yaml": ("DEEPSPEED", 8, 1),
    "fsdp2.yaml": ("FSDP", 8, 1),
}
ENGINE = {
    "single_gpu.yaml": ("plain", False),
    "multi_gpu.yaml": ("ddp", False),
    "multi_node.yaml": ("ddp", False),
    "deepspeed_zero2.yaml": ("zero2", False),
    "deepspeed_zero3.yaml": ("zero3", False),
    "deepspeed_zero3_offload.yaml": ("zero3", True),
    "fsdp2.yaml": ("fsdp2", False),
}


def validated(path: Path, *extra: str):
    """What ``accelerate launch --config_file path ... dllm_rl/train.py`` resolves."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    argv = ["--config_file", str(path), *extra, "dllm_rl/train.py", "recipe=cj_grpo_tiny"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    return args, defaults


def test_the_issue_configs_ship():
    assert {p.name for p in SHIPPED} == set(EXPECTED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_config_parses_with_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    kind, processes, machines = EXPECTED[path.name]
    assert config.distributed_type.value == kind
    assert (config.num_processes, config.num_machines) == (processes, machines)
    first = path.read_text().splitlines()[0]
    assert "accelerate" in first or "node 0" in path.read_text()  # opens with its command
    args, _ = validated(path)
    assert args.use_deepspeed == (kind == "DEEPSPEED")
    assert args.multi_gpu == (kind == "MULTI_GPU")
    if kind == "DEEPSPEED":
        stage = int(path.name.split("zero")[1][0])
        assert config.deepspeed_config["zero_stage"] == stage
        offload = "offload" in path.name
        assert (config.deepspeed_config["offload_param_device"] == "cpu") == offload
    else:
        assert config.mixed_precision == "no"  # the dtype is model.dtype; no autocast


def test_multi_node_config_launches_its_share_on_each_machine():
    from accelerate.utils.launch import prepare_multi_gpu_env

    for rank in (0, 1):
        args, _ = validated(
            CONFIGS / "multi_node.yaml",
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "10.0.0.1",
        )
        prepare_multi_gpu_env(args)  # what accelerate hands torchrun
        assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", rank, "8")


def launch_env(path: Path, *extra: str) -> dict[str, str]:
    """The environment ``accelerate launch --config_file path`` gives the trainer."""
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults = validated(path, *extra)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        env = {}
    env.setdefault("WORLD_SIZE", str(args.num_processes))
    return dict(env)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_config_selects_its_engine(path):
    spec = check_launch(launch_env(path))
    assert (spec.name, spec.offload) == ENGINE[path.name]
    assert spec.world_size == EXPECTED[path.name][1]


@pytest.mark.parametrize(
    "env, match",
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, "stage 1"),
        (
            {
                "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2",
                "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu",
            },
            "stage 2 with offload",
        ),
        (
            {
                "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
            },
            "zero3_init_flag",
        ),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP version 1"),
        (
            {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"},
            "fsdp_offload_params",
        ),
    ],
)
def test_untested_launch_modes_are_refused_by_name(env, match):
    with pytest.raises(ValueError, match=match) as error:
        check_launch(env)
    assert "scripts/accelerate/" in str(error.value)  # what to use instead


def test_a_deepspeed_config_file_is_read_for_its_stage(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 3}}')
    env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(path)}
    assert check_launch(env).name == "zero3"
    path.write_text('{"zero_optimization": {"stage": 1}}')
    with pytest.raises(ValueError, match="stage 1"):
        check_launch(env)


def test_plain_launches():
    assert check_launch({}).name == "plain"
    assert check_launch({"WORLD_SIZE": "2"}).name == "ddp"
    assert check_launch({"ACCELERATE_USE_DEEPSPEED": "false"}).name == "plain"
    assert "ACCELERATE_USE_DEEPSPEED" not in os.environ  # the test run itself is plain


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_trainer_refuses_an_untested_launch_before_loading(
    tmp_path, monkeypatch, capsys, dry_run
):
    import dllm_rl.models.tiny as tiny
    from dllm_rl import train

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(tiny, "build_tiny_llada", no_loading)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    argv = ["recipe=cj_grpo_tiny", "max_steps=1", f"output_dir={tmp_path}", f"dry_run={dry_run}"]
    assert train.main(argv) == 2
    assert "FSDP version 1 is not supported" in capsys.readouterr().err
    assert not (tmp_path / "config.yaml").exists()
