"""The HTML trajectory viewer: hostile text stays text, and in a real headless browser the step
buttons change which tokens are shown (skipped, with the reason, when no browser is installed)."""

from __future__ import annotations

import html
import json
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from dllm_rl.viz.viewer import (
    SampleView,
    main,
    sample_from_row,
    samples_from_trajectory,
    viewer_html,
    write_viewer,
)

HOSTILE = "</script><img src=x onerror=\"document.title='pwned'\"><!-- &amp;"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_browser(tmp_path: Path, url: str, *extra: str, timeout: float = 60) -> str:
    exe = _browser()
    if exe is None:
        pytest.skip(
            "no Chromium/Chrome on PATH (Debian: apt-get install -y chromium); the viewer's "
            "browser test needs one"
        )
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    profile.mkdir()
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *extra,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out.stdout


def _row(i: int, length: int, steps: int, rng: random.Random) -> dict:
    """An eval samples.jsonl row: tokens with hostile text, a random commit order."""
    order = list(range(length))
    rng.shuffle(order)
    unmask = [0] * length
    for rank, pos in enumerate(order):
        unmask[pos] = min(steps - 1, rank * steps // length)
    tokens = [f"w{j}" for j in range(length)]
    tokens[1], tokens[2] = HOSTILE, "<|endoftext|>"
    return {
        "index": i,
        "prompt": f"{i}+1= {HOSTILE}",
        "completion": HOSTILE,
        "reward": 1.0,
        "rewards": {"exact_answer": 1.0},
        "correct": True,
        "num_steps": steps,
        "completion_ids": list(range(length)),
        "unmask_step": unmask,
        "tokens": tokens,
        "step_logprobs": [-rng.random() for _ in range(length)],
        "columns": {"answer": HOSTILE},
    }


def test_hostile_text_cannot_leave_the_json():
    page = viewer_html([sample_from_row(_row(0, 8, 3, random.Random(0)))], title=HOSTILE)
    assert "<img" not in page and page.count("</script>") == 2  # our two scripts only
    data = page.split('id="data">', 1)[1].split("</script>", 1)[0]
    parsed = json.loads(data)
    assert HOSTILE in parsed["vocab"] and parsed["samples"][0]["prompt"].endswith(HOSTILE)
    assert html.escape(HOSTILE) in page.split("<title>", 1)[1]
    for forbidden in ("http://", "https://", 'src="', "@import", "url("):
        assert forbidden not in page.replace(HOSTILE, "")


def test_training_rows_and_the_python_api(tmp_path):
    from dllm_rl.models.tiny import build_tiny_llada
    from dllm_rl.rollout import SamplerConfig, generate_text

    tiny = build_tiny_llada(0)
    row = {
        "step": 3,
        "prompt": "1+2=",
        "completion": "x",
        "reward": 0.0,
        "completion_ids": [5, 6, 10**6],
        "unmask_step": [1, 0, 1],
    }
    view = sample_from_row(row, tiny.tokenizer)
    assert view.num_steps == 2 and view.tokens[2] == "⟨1000000⟩"  # undecodable id
    assert view.title.startswith("step 3")
    traj = generate_text(tiny, ["12+34=", "7*6="], SamplerConfig(gen_length=8, steps=4))
    views = samples_from_trajectory(traj, tiny.tokenizer)
    assert [v.prompt for v in views] == ["12+34=", "7*6="] and views[0].num_steps == 4
    path = write_viewer(views, tmp_path / "api.html")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="2 tokens but 3"):
        SampleView(tokens=["a", "b"], unmask_step=[0, 1, 2], num_steps=3)


def test_browser_steps_change_the_shown_tokens(tmp_path):
    rows = [_row(i, 16, 5, random.Random(i)) for i in range(3)]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "t.html"
    assert main([str(samples), "--out", str(out)], log=lambda s: None) == 0
    dom = _run_browser(tmp_path, out.as_uri() + "#selftest", "--dump-dom")
    assert "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    assert "<img" not in dom  # the hostile token stayed text
    seen = json.loads(html.unescape(re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S)[1]))
    row = rows[0]
    assert [s["step"] for s in seen] == [0, 1, 2, 3, 4, 5, 4]
    for snap in seen:
        t = snap["step"]
        want = [tok if u < t else None for tok, u in zip(row["tokens"], row["unmask_step"])]
        assert snap["shown"] == want  # the step control decides which tokens are shown
        assert snap["now"] == sum(u == t - 1 for u in row["unmask_step"])
    assert seen[0]["shown"] == [None] * 16 and None not in seen[5]["shown"]
    assert HOSTILE in seen[5]["shown"]
    shot = tmp_path / "shot.png"
    _run_browser(
        tmp_path,
        out.as_uri() + "#sample=1&step=2",
        f"--screenshot={shot}",
        "--window-size=1100,800",
    )
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"


def test_100_samples_at_L512_stay_small_and_fast(tmp_path):
    rng = random.Random(0)
    views = [sample_from_row(_row(i, 512, 256, rng)) for i in range(100)]
    out = write_viewer(views, tmp_path / "big.html")
    size = out.stat().st_size
    assert size < 3 * 2**20, f"{size / 2**20:.2f} MiB"
    dom = _run_browser(tmp_path, out.as_uri() + "#step=128", "--dump-dom")
    render_ms = float(re.search(r'data-render-ms="([0-9.]+)"', dom)[1])
    assert render_ms < 3000
    assert 'data-samples="100"' in dom and 'data-step="128"' in dom


def test_trajectory_rows_from_a_sampler_round_trip():
    """unmask_step from a Trajectory is used as-is: step s shows exactly state_before(s)."""
    from dllm_rl.rollout import Trajectory, uniform_schedule

    traj = Trajectory(
        prompt_ids=torch.tensor([[1, 2]]),
        prompt_mask=torch.tensor([[1, 1]]),
        completion_ids=torch.tensor([[3, 4, 5, 6]]),
        unmask_step=torch.tensor([[1, 0, 1, 0]], dtype=torch.int16),
        schedule=uniform_schedule(4, 4, 2),
        mask_token_id=9,
        pad_token_id=9,
    )
    (view,) = samples_from_trajectory(traj, None, prompts=["p"])
    assert view.tokens == ["⟨3⟩", "⟨4⟩", "⟨5⟩", "⟨6⟩"] and view.unmask_step == [1, 0, 1, 0]
