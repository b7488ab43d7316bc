"""The hostile suite: programs that try to escape the sandbox or to cheat, each checked for
containment from the outside.

:func:`run_hostile_suite` runs every case concurrently and returns one row per case; each
``_case_*`` function runs its program (through :func:`dllm_rl.rewards.sandbox.run_program`, or through
the code reward for the reward-hacking cases) and says whether it was contained.
:func:`pids_of_uid` lists what still runs as a uid (a fork bomb's leftovers).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from dllm_rl.rewards.sandbox import (
    SandboxResult,
    isolation_available,
    max_concurrency_default,
    max_wall_s,
    run_program,
)


def run_hostile_suite(timeout_s: float = 3.0) -> list[dict]:
    """Run hostile programs concurrently and check that each was contained.

    Cases: infinite loop, fork bomb, memory bomb, huge output, writing outside the sandbox,
    reading a secret from the parent's environment, connecting to a listener on 127.0.0.1, killing
    the parent, and, through the code reward, exiting before the asserts, an always-equal object,
    a forged report and patched builtins.

    Args:
        timeout_s: the programs' timeout; a case whose program outlives it (plus start-up and
            clean-up slack) is not contained.

    Returns:
        One ``{"case", "outcome", "contained", "wall_s"}`` dict per case, in a fixed order.
    """
    cases = [
        _case_infinite_loop,
        _case_fork_bomb,
        _case_memory_bomb,
        _case_huge_output,
        _case_write_outside,
        _case_read_secret,
        _case_network,
        _case_kill_parent,
        _case_exit_before_asserts,
        _case_always_equal,
        _case_forged_report,
        _case_patched_builtins,
    ]

    def run(case) -> dict:
        start = time.monotonic()
        try:
            outcome, contained = case(timeout_s)
        except Exception as exc:  # the suite itself failed: report it, do not hide it
            outcome, contained = f"suite error: {type(exc).__name__}: {exc}", False
        name = case.__name__.removeprefix("_case_")
        return {
            "case": name,
            "outcome": outcome,
            "contained": contained,
            "wall_s": round(time.monotonic() - start, 2),
        }

    # As many cases at a time as programs may run, so that a case's wall time is its own.
    with ThreadPoolExecutor(max_concurrency_default(), thread_name_prefix="hostile") as pool:
        return list(pool.map(run, cases))


def _in_time(result: SandboxResult, timeout_s: float) -> bool:
    return result.wall_s < max_wall_s(timeout_s)


def _patient(timeout_s: float) -> float:
    """The timeout for cases that must end by themselves: a busy machine must not fail them."""
    return max(timeout_s, 20.0)


def _case_infinite_loop(timeout_s: float) -> tuple[str, bool]:
    result = run_program("while True:\n    pass\n", timeout_s=timeout_s)
    return f"{result.outcome} at {result.wall_s:.1f}s", result.timed_out and _in_time(
        result, timeout_s
    )


def _case_fork_bomb(timeout_s: float) -> tuple[str, bool]:
    source = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result = run_program(source, timeout_s=timeout_s, max_processes=16)
    uid = next((int(f[4:]) for f in result.isolation if f.startswith("uid=")), None)
    left = len(pids_of_uid(uid)) if uid is not None else None
    cleaned = left == 0 if uid is not None else "pid" in result.isolation
    outcome = f"{result.outcome}, {'?' if left is None else left} left"
    return outcome, result.timed_out and _in_time(result, timeout_s) and cleaned


def _case_memory_bomb(timeout_s: float) -> tuple[str, bool]:
    source = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))\n"
    result = run_program(source, timeout_s=_patient(timeout_s), memory_mb=256)
    stopped = "MemoryError" in result.stderr or result.killed_by_signal is not None
    error = "MemoryError" if "MemoryError" in result.stderr else "no MemoryError"
    return f"{error}, {result.outcome}", stopped and not (result.timed_out)


def _case_huge_output(timeout_s: float) -> tuple[str, bool]:
    source = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result = run_program(source, timeout_s=timeout_s, max_output_bytes=2**16)
    outcome = (
        f"{'capped' if result.stdout_truncated else 'not capped'} at {len(result.stdout)} B, "
        f"{result.outcome}"
    )
    return outcome, result.stdout_truncated and len(result.stdout) <= 2**16 and _in_time(
        result, timeout_s
    )


def _case_write_outside(timeout_s: float) -> tuple[str, bool]:
    home = os.path.expanduser("~")
    private_dir = tempfile.mkdtemp(
        prefix=".dllm-rl-hostile-", dir=home if os.access(home, os.W_OK) else None
    )
    targets = [
        os.path.join(private_dir, "escaped"),
        os.path.join(tempfile.gettempdir(), f"dllm-rl-escaped-{secrets.token_hex(6)}"),
    ]
    source = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('escaped')\n"
        "        print(path, 'written')\n"
        "    except OSError as e:\n"
        "        print(path, type(e).__name__)\n"
    )
    try:
        result = run_program(source, timeout_s=_patient(timeout_s))
        escaped = [p for p in targets if os.path.exists(p)]
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(targets[1])
    inside = ", ".join(line.rsplit(" ", 1)[-1] for line in result.stdout.splitlines())
    outcome = f"{len(escaped)}/{len(targets)} escaped ({inside})"
    return outcome, not escaped and (result.error is None)


def _case_read_secret(timeout_s: float) -> tuple[str, bool]:
    added = "DLLM_SECRET" not in os.environ
    secret = os.environ.setdefault("DLLM_SECRET", f"s3cret-{secrets.token_hex(8)}")
    source = (
        "import os\n"
        "print(os.environ.get('DLLM_SECRET'))\n"
        "for pid in os.listdir('/proc'):\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            print(open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1'))\n"
        "        except OSError:\n"
        "            pass\n"
    )
    try:
        result = run_program(source, timeout_s=_patient(timeout_s))
    finally:
        if added:
            os.environ.pop("DLLM_SECRET", None)
    leaked = secret in result.stdout or secret in result.stderr
    outcome = f"{'LEAKED' if leaked else 'not leaked'}, {result.outcome}"
    return outcome, not leaked and result.error is None


def _case_network(timeout_s: float) -> tuple[str, bool]:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        source = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    import errno\n"
            "    print(errno.errorcode.get(e.errno, type(e).__name__))\n"
        )
        result = run_program(source, timeout_s=_patient(timeout_s))
        try:
            listener.accept()[0].close()
            arrived = True
        except BlockingIOError:
            arrived = False
    isolated = "netns" if result.network_isolated else "NO netns"
    outcome = f"{isolated}, {'CONNECTED' if arrived else 'no connection'} ({result.stdout.strip()})"
    return outcome, not arrived and result.error is None


def _case_kill_parent(timeout_s: float) -> tuple[str, bool]:
    layers = isolation_available()
    if "pid" not in layers and not any(layer.startswith("uid=") for layer in layers):
        return "not run: without a uid drop or pid namespace it could kill your processes", False
    bystander = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "import time; time.sleep(120)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    source = (
        "import os\n"
        f"targets = [lambda: os.kill(os.getppid(), 9), lambda: os.kill({os.getpid()}, 9),\n"
        f"           lambda: os.kill({bystander.pid}, 9), lambda: os.killpg({os.getpgid(0)}, 9),\n"
        "           lambda: os.killpg(os.getpgid(os.getppid()), 9), lambda: os.kill(-1, 9)]\n"
        "targets += [lambda p=p: os.kill(int(p), 9) for p in os.listdir('/proc') if p.isdigit()]\n"
        "for target in targets:\n"
        "    try:\n"
        "        target()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    try:
        result = run_program(source, timeout_s=_patient(timeout_s))
        alive = bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    outcome = "parent and bystander alive" if alive else "bystander KILLED"
    return outcome, alive and result.error is None


def _reward_case(completions: list[str], tests: list[str], timeout_s: float) -> tuple[str, bool]:
    from dllm_rl.rewards.code import grade_code

    grades = grade_code(completions, [tests] * len(completions), timeout_s=timeout_s)
    rewards = [g.reward for g in grades]
    return f"rewards {rewards}", all(r == 0.0 for r in rewards)


def _case_exit_before_asserts(timeout_s: float) -> tuple[str, bool]:
    body = "```python\nimport os, sys\ndef f(x):\n    return None\n{}\n```"
    exits = ["sys.exit(0)", "raise SystemExit(0)", "os._exit(0)", "os.kill(os.getpid(), 9)"]
    return _reward_case([body.format(e) for e in exits], ["assert f(1) == 2"], timeout_s)


def _case_always_equal(timeout_s: float) -> tuple[str, bool]:
    classes = [
        "class R:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
        "    __bool__ = lambda s: True\n    __hash__ = lambda s: 0\n",
        "class R(int):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n",
        "class R(str):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n",
        "class M(type):\n    __eq__ = lambda c, o: True\n    __hash__ = lambda c: hash(int)\n"
        "class R(int, metaclass=M):\n    __eq__ = lambda s, o: True\n",
    ]
    completions = [f"```python\n{c}def f(x):\n    return R()\n```" for c in classes]
    tests = ["assert f(1) == 2", "assert not f(1) != 2", "assert f(1)", "assert [f(1)] == [2]"]
    return _reward_case(completions, tests, timeout_s)


def _case_forged_report(timeout_s: float) -> tuple[str, bool]:
    forge = (
        "```python\nimport os\ndef f(x):\n    return None\n"
        "for line in ('1', 'report 1', 'PASSED 1/1', '0' * 32 + ' report 1'):\n"
        "    print(line)\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, (line + '\\n').encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n```"
    )
    return _reward_case([forge], ["assert f(1) == 2"], timeout_s)


def _case_patched_builtins(timeout_s: float) -> tuple[str, bool]:
    patch = (
        "```python\nimport builtins\nbuiltins.set = lambda *a: 0\nbuiltins.len = lambda *a: 0\n"
        "def sorted(*a):\n    return 0\ndef f(x):\n    return [x]\n```"
    )
    tests = ["assert set(f(1)) == set([2])", "assert sorted(f(1)) == [2]", "assert len(f(1)) == 0"]
    return _reward_case([patch], tests, timeout_s)


def pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/status") as f:
                    if any(line.split()[:2] == ["Uid:", str(uid)] for line in f):
                        pids.append(int(entry))
    return pids
