"""Progress bars only on terminals: a log gets no carriage-return redraws."""

from __future__ import annotations

import io
import subprocess
import sys

from dllm_rl.progress import is_terminal, progress_bar, quiet_library_bars


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_is_silent_in_a_log_and_drawn_on_a_terminal():
    log, tty = io.StringIO(), FakeTerminal()
    for stream, shown in ((log, False), (tty, True)):
        with progress_bar(total=3, file=stream, desc="x") as bar:
            for _ in range(3):
                bar.update(1)
        assert bool(stream.getvalue()) == shown
    with progress_bar(total=3, file=FakeTerminal(), enabled=False) as bar:
        assert bar.disable  # e.g. not the main process


def test_library_bars(monkeypatch):
    import datasets

    assert not quiet_library_bars(FakeTerminal())
    try:
        assert quiet_library_bars(io.StringIO()) and not datasets.is_progress_bar_enabled()
    finally:
        datasets.enable_progress_bars()
    assert not is_terminal(io.StringIO())


def test_eval_writes_no_bar_redraws_into_a_log(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "dllm_rl.eval",
        "recipe=eval_tiny",
        "limit=4",
        "batch_size=2",
        f"output_dir={tmp_path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "it/s" not in out.stderr
    assert "accuracy" in out.stdout and (tmp_path / "results.json").is_file()
