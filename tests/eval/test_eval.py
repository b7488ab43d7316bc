"""The evaluation CLI: shard arithmetic, recipe validation, model resolution, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dllm_rl import eval as ev
from dllm_rl.config import ModelConfig
from dllm_rl.run.cli import ConfigError
from dllm_rl.trainers.common import shard_bounds

RECIPES = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("eval_*.yaml"))


# ----------------------------------------------------------------------------- shards
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("n", [0, 1, 5, 10, 11, 64])
def test_shards_cover_every_row_once(n, world):
    bounds = [shard_bounds(n, world, r) for r in range(world)]
    rows = [i for lo, hi in bounds for i in range(lo, hi)]
    assert rows == list(range(n))  # contiguous, in rank order, no duplicate, none dropped
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shards_by_hand():
    """n = 10 over 4: 10 = 4 * 2 + 2, so ranks 0 and 1 take 3 rows, ranks 2 and 3 take 2."""
    assert [shard_bounds(10, 4, r) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    with pytest.raises(ValueError, match="rank 4 outside a world of 4"):
        shard_bounds(10, 4, 4)


# ----------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_eval_recipe_validates_and_dry_runs(path):
    text = path.read_text()
    assert text.startswith(f"# python -m dllm_rl.eval recipe={path.stem}\n")
    name, recipe, _ = ev.resolve([f"recipe={path}"])
    assert recipe.evaluation and name == path.stem
    lines = ev.check(recipe)  # data files, reward names, sampler: no weights
    assert any(line.startswith("sampler: ") for line in lines)


def test_protocols():
    _, d1, _ = ev.resolve(["recipe=eval_d1_gsm8k"])
    s = d1.sampler
    assert (s.gen_length, s.plan.num_steps, s.temperature) == (256, 128, 0.0)
    assert set(s.plan.counts) == {2} and len(s.plan.block_bounds) == 256 // 32
    _, d1_512, _ = ev.resolve(
        ["recipe=eval_d1_gsm8k", "sampler.gen_length=512", "sampler.steps=256"]
    )
    assert d1_512.sampler.plan.num_steps == 256
    _, cj, _ = ev.resolve(["recipe=eval_cj_gsm8k"])
    s = cj.sampler
    assert s.schedule == "ascending" and s.plan.num_steps == 8  # floor(log2 256)
    assert s.eos_rejection.enabled and s.eos_rejection.gamma_schedule == "power"


def test_overrides_and_errors():
    _, r, _ = ev.resolve(["recipe=eval_tiny", "limit=5", "seed=3", "output_dir=/x", "batch_size=2"])
    assert (r.data.limit, r.seed, r.output_dir, r.batch_size) == (5, 3, "/x", 2)
    _, r, _ = ev.resolve(["recipe=eval_tiny", "sampler.logits_eos_inf=true"])
    assert r.sampler.logits_eos_inf
    with pytest.raises(ConfigError, match="Did you mean sampler.gen_length"):
        ev.resolve(["recipe=eval_tiny", "sampler.gen_lenght=4"])
    with pytest.raises(ConfigError, match="training recipe"):
        ev.resolve(["recipe=cj_grpo_tiny"])
    with pytest.raises(ConfigError, match="to evaluate a trained LoRA adapter"):
        ev.resolve(["recipe=eval_tiny", "model.lora.enabled=true"])
    with pytest.raises(ConfigError, match="batch_size"):
        ev.resolve(["recipe=eval_tiny", "batch_size=0"])


def test_dry_run_fails_on_a_bad_reward_and_split(capsys):
    assert ev.main(["recipe=eval_tiny", "dry_run=true", "rewards=[exact_answr]"]) == 2
    assert "Did you mean 'exact_answer'" in capsys.readouterr().err
    assert ev.main(["recipe=eval_tiny", "dry_run=true", "data.split=dev"]) == 2
    assert "no split 'dev'" in capsys.readouterr().err
    assert ev.main(["recipe=eval_tiny", "dry_run=true", "model.name_or_path=./no_such_run"]) == 2
    assert "no such directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- models
def _fake_run(root: Path, lora: bool) -> tuple[Path, torch.nn.Module]:
    """A run directory with one checkpoint (full model or LoRA adapter with nonzero B)."""
    import dataclasses

    import yaml

    from dllm_rl.run.build import apply_lora, load_policy
    from dllm_rl.run.checkpoint import _write_latest, save_model
    from dllm_rl.run.cli import build_config

    cfg = build_config(ModelConfig, {"lora": {"enabled": lora, "r": 2, "alpha": 4}})
    plain = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, enabled=False))
    policy = load_policy(plain, torch.device("cpu"))
    model = policy.model
    if lora:
        model = apply_lora(model, cfg, policy.family)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    model.eval()
    ckpt = root / "checkpoints" / "step-000002"
    save_model(model, ckpt / "model", policy.tokenizer)
    (ckpt / "trainer_state.json").write_text('{"step": 2}')
    _write_latest(root / "checkpoints", "step-000002")
    (root / "config.yaml").write_text(yaml.safe_dump({"model": dataclasses.asdict(cfg)}))
    return ckpt, model


@pytest.mark.parametrize("lora", [False, True])
def test_run_directory_and_checkpoint_load_the_saved_weights(tmp_path, lora):
    ckpt, trained = _fake_run(tmp_path, lora)
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = trained(input_ids=ids).logits
    for name in (str(tmp_path), str(ckpt)):
        source = ev.resolve_model(ModelConfig(name_or_path=name))
        assert source.path == str(ckpt / "model")
        assert (source.base is not None) == lora
        policy, _ = ev.load_eval_model(ModelConfig(name_or_path=name), torch.device("cpu"))
        with torch.no_grad():
            got = policy.model(input_ids=ids).logits
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    if lora:  # the adapter changed the model: the test would see a base-only load
        base, _ = ev.load_eval_model(ModelConfig(), torch.device("cpu"))
        with torch.no_grad():
            assert not torch.allclose(base.model(input_ids=ids).logits, want, atol=1e-3)
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint yet"):
        ev.resolve_model(ModelConfig(name_or_path=str(tmp_path / "empty")))


# ----------------------------------------------------------------------------- end to end
def _run(tmp_path: Path, *extra: str):
    args = ["recipe=eval_tiny", "limit=11", "batch_size=4", f"output_dir={tmp_path}", *extra]
    name, recipe, _ = ev.resolve(args)
    return ev.evaluate(recipe, name)


def test_eval_tiny_writes_results_and_samples(tmp_path):
    results = _run(tmp_path / "one")
    saved = json.loads((tmp_path / "one" / "results.json").read_text())
    assert saved["samples"] == results.samples == 11
    for key in (
        "accuracy",
        "rewards",
        "sampler",
        "wall_s",
        "tokens_per_s",
        "samples_per_s",
        "grading_share",
        "model",
    ):
        assert key in saved
    assert saved["sampler"]["nfe"] == 3 and saved["sampler"]["counts"] == [1, 2, 5]
    rows = [json.loads(x) for x in (tmp_path / "one" / "samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(11))
    row = rows[0]
    assert len(row["completion_ids"]) == len(row["unmask_step"]) == len(row["tokens"]) == 8
    assert len(row["step_logprobs"]) == 8 and row["num_steps"] == 3
    assert row["columns"]["answer"] and set(row["rewards"]) == {"exact_answer"}
    assert saved["accuracy"] == sum(r["correct"] for r in rows) / 11


def test_two_processes_gather_every_prompt_once(tmp_path, monkeypatch):
    """11 prompts over 2 ranks (6 + 5) in batches of 4: the gathered file equals one process's."""
    single = _run(tmp_path / "single")
    stash: dict[str, list] = {}

    class FakeAccelerator:
        def __init__(self, rank):
            self.process_index, self.num_processes = rank, 2
            self.is_main_process, self.device = rank == 0, torch.device("cpu")

    def gather(accelerator, items):
        key = "rows" if not items or isinstance(items[0], dict) else "stats"
        if accelerator.process_index == 1:
            stash[key] = items
            return items
        return items + stash[key]

    monkeypatch.setattr(ev, "_gather", gather)
    for rank in (1, 0):
        monkeypatch.setattr(
            "dllm_rl.run.build.make_accelerator", lambda d, r=rank: FakeAccelerator(r)
        )
        out = _run(tmp_path / "multi")
    assert out.samples == single.samples == 11
    assert len(stash["rows"]) == 5
    read = lambda d: (tmp_path / d / "samples.jsonl").read_text().splitlines()  # noqa: E731
    a = [json.loads(x) for x in read("single")]
    b = [json.loads(x) for x in read("multi")]
    assert [r["index"] for r in b] == list(range(11))
    assert [r["completion_ids"] for r in a] == [r["completion_ids"] for r in b]
