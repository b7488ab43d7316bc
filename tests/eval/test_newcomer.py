"""What a newcomer tripped over (issue 8, section 6): each fails at once with a message to act on."""

from __future__ import annotations

import time

import pytest

from dllm_rl.models.load import check_model_name, load_model
from dllm_rl.rewards.registry import RewardSignatureError, resolve_rewards


@pytest.mark.parametrize("name", ["some_typo_dir", "/nonexistent", "./runs/x", "a/b/c", "~/nope"])
def test_load_model_on_a_missing_directory_fails_at_once(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_model(name)
    assert time.perf_counter() - start < 2.0  # no hub retries


def test_offline_hub_id_not_in_the_cache_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a hub id in the local cache while offline"):
        check_model_name("nobody-here/no-such-model")


def test_a_file_and_an_existing_directory(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        check_model_name(tmp_path / "f.txt")
    check_model_name(tmp_path)  # a directory passes (config.json is read next)
    check_model_name("GSAI-ML/LLaDA-8B-Instruct")  # a well-formed hub id passes while online


def test_reward_targets_are_checked_at_resolve_time():
    with pytest.raises(RewardSignatureError, match=r"'os:system'.*system\(command\)"):
        resolve_rewards(["os:system"])
    with pytest.raises(ValueError, match="no \\*\\*kwargs for the columns"):
        resolve_rewards([lambda prompts, completions: [0.0] * len(completions)])

    def mine(prompts, completions, **columns):
        return [1.0] * len(completions)

    assert [s.name for s in resolve_rewards([mine, "math", "code"])] == ["mine", "math", "code"]
