"""The headline command on a machine without the model fails in seconds with one paragraph and
exit code 2; an 8B-class model on a CPU is refused with its memory unless asked for; a start that
fails before its first step leaves no run folder behind."""

from __future__ import annotations

import json

import pytest

from dllm_rl import train
from dllm_rl.run.preflight import estimate_parameters

LLADA_8B = {
    "model_type": "llada",
    "d_model": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "mlp_hidden_size": 12288,
    "vocab_size": 126464,
    "embedding_size": 126464,
}


def test_parameters_of_llada_8b_from_its_config():
    # 32 x (4 x 4096^2 + 3 x 4096 x 12288) + 2 x 126464 x 4096
    assert estimate_parameters(LLADA_8B) == 32 * (67_108_864 + 150_994_944) + 1_035_993_088
    assert estimate_parameters({"model_type": "x"}) is None


def test_the_headline_command_offline_fails_in_one_paragraph(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    assert train.main(["recipe=cj_grpo_gsm8k", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one paragraph, no traceback
    for needed in (
        "GSAI-ML/LLaDA-8B-Instruct",
        "model.name_or_path=",
        "dry_run=true",
        "cj_grpo_tiny",
    ):
        assert needed in err
    assert not out.exists()


def test_an_8b_model_on_the_cpu_is_refused_with_its_memory(tmp_path, capsys):
    folder = tmp_path / "llada-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLADA_8B))
    out = tmp_path / "run"
    args = ["recipe=cj_grpo_gsm8k", f"model.name_or_path={folder}", "run.device=cpu"]
    assert train.main([*args, "model.dtype=float32", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "~8.0B parameters" in err and "~30 GiB for the weights" in err  # 8.0e9 x 4 B
    assert "run.allow_cpu_large=true" in err and not out.exists()


def test_a_start_that_fails_before_its_first_step_leaves_no_folder(tmp_path, monkeypatch):
    from dllm_rl.trainers import grpo

    def broken(self, step, indices):
        raise RuntimeError("a bug in step 1")

    monkeypatch.setattr(grpo.GRPOTrainer, "step", broken)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a bug in step 1"):  # our bug: a traceback
        train.main(["recipe=cj_grpo_tiny", "run.device=cpu", f"output_dir={out}"])
    assert not out.exists()


@pytest.mark.parametrize(
    "reward, message",
    [
        # the held-out evaluation before step 1 is the first to call it: 32 prompts x 4
        ("one_short", "returned 127 values for 128 completions"),
        ("text_valued", "'good' at position 0"),
    ],
)
def test_a_broken_reward_is_one_line_exit_2_and_no_folder(tmp_path, capsys, reward, message):
    out = tmp_path / "run"
    args = ["recipe=cj_grpo_tiny", "run.device=cpu", f"output_dir={out}"]
    assert train.main([*args, f"rewards=[tests.trainers.fixtures:{reward}]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("error: reward")
    assert not any("Traceback" in line for line in err)
    assert not out.exists()
