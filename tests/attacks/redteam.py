"""The red-team suite: the attacks of the adversarial reviews of the code grader (issues 10 and
17; findings 8-10 are the second review's), each run for real and checked from the outside.

:func:`run_redteam_suite` returns one row per case: ``case``, ``finding`` (the review's number),
``expected``, ``observed``, ``contained`` (``True``/``False``; ``None`` when the layer that would
contain it does not exist on this machine and the sandbox does not claim it) and ``wall_s``.
Degraded modes are forced (``namespaces=False``, ``drop_uid=False``), so that they are tested on a
machine that has every layer. :mod:`tests.attacks.hostile` holds the older, generic cases.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dllm_rl.rewards.sandbox import max_concurrency_default, run_program
from dllm_rl.rewards.sandbox.isolation import WORKDIR_PREFIX, sweep_stale

DEGRADED = {
    "no-namespaces": {"namespaces": False},
    "no-namespaces-no-uid": {"namespaces": False, "drop_uid": False},
}
_REPO = Path(__file__).resolve().parents[2]


def run_redteam_suite(timeout_s: float = 2.0) -> list[dict]:
    """Run every red-team case (concurrently, as many as programs may run) and check each.

    Args:
        timeout_s: the programs' timeout where a case needs one to be stopped.

    Returns:
        One ``{"case", "finding", "expected", "observed", "contained", "wall_s"}`` dict per case,
        in a fixed order.
    """
    cases = [
        ("fake_math_module", 1, _case_fake_math_module),
        ("patched_math_isclose", 1, _case_patched_math_isclose),
        ("frame_rewrites_tests", 1, _case_frame_rewrites_tests),
        ("gc_forged_report", 1, _case_gc_forged_report),
        ("always_equal_and_arithmetic", 1, _case_always_equal),
        ("exit_before_tests", 1, _case_exit_before_tests),
        ("unix_socket_outside_tmp", 2, _case_unix_socket),
        ("hidden_files", 2, _case_hidden_files),
        ("quadratic_extraction_1mb", 3, _case_quadratic_extraction),
        ("result_pipe_overflow", 4, _case_result_pipe_overflow),
        ("result_pipe_overflow_reward", 4, _case_result_pipe_overflow_reward),
        ("root_opened_fds", 5, _case_root_opened_fds),
        ("trainer_sigkill", 6, _case_trainer_sigkill),
        ("probe_and_replay_check", 8, _case_probe_and_replay),
        ("always_true_contains", 9, _case_always_true_contains),
        ("stop_iteration_ends_map", 9, _case_stop_iteration),
        ("servant_named_modules", 9, _case_servant_named_modules),
        ("candidate_len_and_eq", 9, _case_candidate_len_and_eq),
        ("report_channel_flood", 10, _case_report_channel_flood),
    ]
    for mode in DEGRADED:
        cases += [
            (f"setsid_daemon[{mode}]", 7, _degraded(_case_setsid_daemon, mode)),
            (f"dev_shm_write[{mode}]", 7, _degraded(_case_dev_shm_write, mode)),
            (f"signal_outside[{mode}]", 7, _degraded(_case_signal_outside, mode)),
            (f"unix_socket[{mode}]", 7, _degraded(_case_unix_socket, mode)),
        ]
    for mode in ("full", *DEGRADED):
        cases.append((f"memory_of_all_processes[{mode}]", 7, _degraded(_case_memory_total, mode)))

    def run(item) -> dict:
        name, finding, case = item
        start = time.monotonic()
        try:
            expected, observed, contained = case(timeout_s)
        except Exception as exc:  # the suite itself failed: report it, do not hide it
            expected, observed, contained = "-", f"suite error: {type(exc).__name__}: {exc}", False
        return {
            "case": name,
            "finding": finding,
            "expected": expected,
            "observed": observed,
            "contained": contained,
            "wall_s": round(time.monotonic() - start, 2),
        }

    with ThreadPoolExecutor(max_concurrency_default(), thread_name_prefix="redteam") as pool:
        return list(pool.map(run, cases))


def _degraded(case, mode: str):
    limits = DEGRADED.get(mode, {})
    return lambda timeout_s: case(timeout_s, **limits)


def _rewards(completions: list[str], tests: list[str], setup: str | None = None) -> list:
    from dllm_rl.rewards.code import grade_code

    grades = grade_code(
        completions, [tests] * len(completions), setup, timeout_s=5.0, max_concurrency=1
    )
    return [g.reward for g in grades]


def _all_zero(completions: list[str], tests: list[str], setup: str | None = None):
    rewards = _rewards([f"```python\n{c}\n```" for c in completions], tests, setup)
    return "rewards 0.0", f"rewards {rewards}", all(r == 0.0 for r in rewards)


# ------------------------------------------------------------------------------------------------
# Finding 1: one-line reward hacks.


def _case_fake_math_module(timeout_s: float):
    code = (
        "import sys, types\nfake = types.ModuleType('math')\n"
        "fake.isclose = lambda *a, **k: True\nsys.modules['math'] = fake\n"
        "def f(x):\n    return 0.0\n"
    )
    tests = ["assert math.isclose(f(1), 2.5)", "assert math.isclose(f(2), 3.5, rel_tol=1e-9)"]
    return _all_zero([code], tests, setup="import math")


def _case_patched_math_isclose(timeout_s: float):
    code = "import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0.0\n"
    tests = ["import math\nassert math.isclose(f(1), 2.5)", "assert math.isclose(f(1), 2.5)"]
    return _all_zero([code], tests)


_FRAME_WALK = (
    "import sys\n"
    "def rewrite():\n"
    "    frame = sys._getframe(1)\n"
    "    while frame is not None:\n"
    "        for scope in (frame.f_locals, frame.f_globals):\n"
    "            for value in list(scope.values()):\n"
    "                if isinstance(value, list) and value and all(isinstance(t, str) for t in value):\n"
    "                    value[:] = ['pass'] * len(value)\n"
    "                if isinstance(value, dict) and isinstance(value.get('tests'), list):\n"
    "                    value['tests'][:] = ['pass'] * len(value['tests'])\n"
    "        frame = frame.f_back\n"
    "rewrite()\n"
    "def f(x):\n    rewrite()\n    return 0\n"
)


def _case_frame_rewrites_tests(timeout_s: float):
    return _all_zero([_FRAME_WALK], ["assert f(1) == 2", "assert f(2) == 3"])


_FORGE = (
    "import gc, os, re, sys\n"
    "def f(x):\n    return None\n"
    "tokens = set()\n"
    "for obj in gc.get_objects():\n"
    "    name = getattr(obj, '__name__', '')\n"
    "    if callable(obj) and name in ('report', 'send', 'send_record', '__sandbox_report__'):\n"
    "        for text in ('11\\n\\n', '11'):\n"
    "            try:\n                obj(text)\n            except Exception:\n                pass\n"
    "    if isinstance(obj, dict):\n"
    "        for v in list(obj.values()):\n"
    "            if isinstance(v, str) and re.fullmatch('[0-9a-f]{32}', v):\n"
    "                tokens.add(v)\n"
    "frame = sys._getframe()\n"
    "while frame is not None:\n"
    "    for v in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
    "        if isinstance(v, str) and re.fullmatch('[0-9a-f]{32}', v):\n"
    "            tokens.add(v)\n"
    "    frame = frame.f_back\n"
    "for token in tokens:\n"
    "    for fd in range(3, 64):\n"
    "        for kind in ('report', 'exit'):\n"
    "            try:\n"
    "                os.write(fd, f'{token} {kind} 11\\\\n\\\\n\\n'.encode())\n"
    "            except OSError:\n"
    "                pass\n"
    "os._exit(0)\n"
)


def _case_gc_forged_report(timeout_s: float):
    return _all_zero([_FORGE], ["assert f(1) == 2", "assert f(2) == 3"])


def _case_always_equal(timeout_s: float):
    classes = [
        "class R:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
        "    __bool__ = lambda s: True\n    __hash__ = lambda s: 0\n"
        "    __sub__ = __rsub__ = lambda s, o: 0\n    __abs__ = lambda s: 0\n"
        "    __lt__ = lambda s, o: True\n    __len__ = lambda s: 3\n",
        "class R(float):\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: 0.0\n",
        "class R(str):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n",
    ]
    completions = [f"{c}def f(x):\n    return R()\n" for c in classes]
    tests = [
        "assert f(1) == 2",
        "assert not f(1) != 2",
        "assert f(1)",
        "assert [f(1)] == [2]",
        "assert abs(f(1) - 2) < 1e-6",
        "assert f(1) == 2 or f(1) < 2",
    ]
    return _all_zero(completions, tests)


def _case_exit_before_tests(timeout_s: float):
    body = "import os, sys, signal\ndef f(x):\n    return None\n{}\n"
    exits = ["sys.exit(0)", "os._exit(0)", "os.kill(os.getpid(), 9)", "os.kill(os.getppid(), 9)"]
    return _all_zero([body.format(e) for e in exits], ["assert f(1) == 2"])


# ------------------------------------------------------------------------------------------------
# Finding 2: Unix sockets outside /tmp, and files the program should not see.


def _socket_dir() -> str:
    """A directory outside /tmp that any uid may traverse (where a real host has its sockets)."""
    for base in ("/run", "/var/lib", "/srv", os.getcwd()):
        with contextlib.suppress(OSError):
            path = tempfile.mkdtemp(prefix="dllm-rl-redteam-", dir=base)
            os.chmod(path, 0o755)
            return path
    raise OSError("no directory outside /tmp to put a socket in")


def _case_unix_socket(timeout_s: float, **limits):
    directory = _socket_dir()
    path = os.path.join(directory, "inference.sock")
    abstract = f"\0dllm-rl-redteam-{secrets.token_hex(6)}"
    listeners = []
    try:
        for address in (path, abstract):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            listener.listen(4)
            listener.setblocking(False)
            listeners.append(listener)
        os.chmod(path, 0o777)
        source = (
            "import socket\n"
            f"for address in ({path!r}, {abstract!r}):\n"
            "    try:\n"
            "        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "        s.connect(address)\n"
            "        s.sendall(b'hi')\n"
            "        print('connected')\n"
            "    except OSError as e:\n"
            "        print(type(e).__name__, e.errno)\n"
        )
        result = run_program(source, timeout_s=20.0, **limits)
        arrived = 0
        for listener in listeners:
            with contextlib.suppress(BlockingIOError):
                listener.accept()[0].close()
                arrived += 1
    finally:
        for listener in listeners:
            listener.close()
        shutil.rmtree(directory, ignore_errors=True)
    observed = f"{arrived} connection(s); {result.stdout.split()}; {_layers(result)}"
    if arrived and not {"minimal-root", "seccomp-no-unix-sockets"} & set(result.isolation):
        return "no connection", observed + ", no layer for it here", None
    return "no connection", observed, arrived == 0 and result.error is None


def _layers(result) -> str:
    keep = ("minimal-root", "seccomp-no-unix-sockets", "landlock-writes", "landlock-scoped")
    return ",".join(layer for layer in result.isolation if layer in keep) or "no layer"


def _case_hidden_files(timeout_s: float):
    home = os.path.expanduser("~")
    secret = tempfile.NamedTemporaryFile(  # world-readable, in a folder anyone may traverse
        "w", prefix=".dllm-rl-redteam-", dir=home if os.access(home, os.W_OK) else None
    )
    os.chmod(secret.name, 0o644)
    targets = ["/etc/passwd", str(Path(__file__).resolve()), secret.name]
    source = (
        "import os\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        os.listdir(path) if os.path.isdir(path) else open(path).read(1)\n"
        "        print('read')\n"
        "    except OSError as e:\n"
        "        print(type(e).__name__)\n"
    )
    with secret:
        result = run_program(source, timeout_s=20.0)
    read = result.stdout.split().count("read")
    observed = f"{read}/{len(targets)} readable ({' '.join(result.stdout.split())})"
    if "minimal-root" not in result.isolation:
        return "hidden", observed + ", no minimal root here", None
    return "hidden", observed, read == 0 and result.error is None


# ------------------------------------------------------------------------------------------------
# Finding 3: extraction on degenerate text, in the trainer.


def _case_quadratic_extraction(timeout_s: float):
    from dllm_rl.rewards.code import code_format_score, extract_code, grade_code

    texts = ["`" * 2**20, "```python" + "`" * 2**20, "```\n" + "``" * 2**19, "``` " * 2**18]
    start = time.perf_counter()
    for text in texts:
        extract_code(text)
        code_format_score(text)
    grades = grade_code(texts, [["assert True"]] * len(texts))
    seconds = time.perf_counter() - start
    observed = f"{seconds:.3f} s for 4 x 1 MB, rewards {[g.reward for g in grades]}"
    return "< 1 s, 0.0", observed, seconds < 1.0 and all(g.reward == 0.0 for g in grades)


# ------------------------------------------------------------------------------------------------
# Finding 4: flooding every descriptor.

_FLOOD = (
    "import os\n"
    "chunk = b'x' * 2**20\n"
    "for fd in range(3, 64):\n"
    "    for _ in range(6):\n"
    "        try:\n"
    "            os.write(fd, chunk)\n"
    "        except OSError:\n"
    "            break\n"
)


def _case_result_pipe_overflow(timeout_s: float):
    result = run_program(_FLOOD + "raise SystemExit(1)\n", timeout_s=20.0)
    observed = f"{result.outcome}, report_overflow={result.report_overflow}"
    return "exit 1, no error", observed, result.error is None and result.exit_code == 1


def _case_result_pipe_overflow_reward(timeout_s: float):
    return _all_zero([_FLOOD + "def f(x):\n    return 0\n"], ["assert f(1) == 2"])


# ------------------------------------------------------------------------------------------------
# Finding 5: descriptors opened with privileges.


def _case_root_opened_fds(timeout_s: float):
    source = (
        "import os, stat\n"
        "dirs, names = [], []\n"
        "for fd in range(3, 1024):\n"
        "    try:\n"
        "        mode = os.fstat(fd).st_mode\n"
        "    except OSError:\n"
        "        continue\n"
        "    names.append(fd)\n"
        "    if stat.S_ISDIR(mode):\n"
        "        dirs.append(len(os.listdir(fd)))\n"
        "print(len(names), len(dirs))\n"
    )
    result = run_program(source, timeout_s=20.0)
    opened, directories = (result.stdout.split() + ["?", "?"])[:2]
    observed = f"{opened} descriptor(s) past stdio, {directories} directory"
    return "only the report pipe, no directory", observed, directories == "0" and opened == "1"


# ------------------------------------------------------------------------------------------------
# Finding 6: a trainer killed with SIGKILL mid-batch.

_TRAINER = """
import sys
from dllm_rl.rewards.math import MathGrader
from dllm_rl.rewards.sandbox import run_programs
grader = MathGrader(num_workers=1)
grader.grade(['<answer>1</answer>'], ['1'])
print('ready', flush=True)
run_programs(['import time\\ntime.sleep(60)'] * 2, timeout_s=60, max_concurrency=2)
"""


def _descendants(pid: int) -> dict[int, bytes]:
    """Every process below ``pid``, with its start time (to tell a reused pid)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(entry))
                starts[int(entry)] = fields[19]
    found, stack = {}, [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found[child] = starts[child]
            stack.append(child)
    return found


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _alive(processes: dict[int, bytes]) -> list[int]:
    alive = []
    for pid, started in processes.items():
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[19] == started and fields[0] != b"Z":
                alive.append(pid)
    return alive


def _case_trainer_sigkill(timeout_s: float):
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    trainer = subprocess.Popen(
        [sys.executable, "-c", _TRAINER],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=_REPO,
    )
    try:
        trainer.stdout.readline()  # the maths worker is up
        deadline = time.monotonic() + 30
        tree: dict[int, bytes] = {}
        while time.monotonic() < deadline:  # wait for both sandboxes' programs
            tree = _descendants(trainer.pid)
            if len(tree) >= 5:  # maths worker, 2 supervisors, 2 programs
                break
            time.sleep(0.05)
        folders = [
            n
            for n in os.listdir(tempfile.gettempdir())
            if n.startswith(f"{WORKDIR_PREFIX}{trainer.pid}.")
        ]
    finally:
        trainer.kill()
        trainer.wait()
    killed_at = time.monotonic()
    while _alive(tree) and time.monotonic() < killed_at + 10.0:  # a loaded machine is slow
        time.sleep(0.05)
    gone_s = time.monotonic() - killed_at
    left = _alive(tree)
    names = sorted({_name(pid) for pid in left})
    sweep_stale(force=True)
    folders_left = [n for n in folders if os.path.exists(os.path.join(tempfile.gettempdir(), n))]
    observed = (
        f"{len(tree)} processes below the trainer, {len(left)} alive {gone_s:.1f} s after "
        f"SIGKILL{' ' + str(names) if names else ''}; {len(folders)} folder(s), "
        f"{len(folders_left)} after the "
        "start-up sweep"
    )
    contained = len(tree) >= 5 and not left and bool(folders) and not folders_left
    return "none left", observed, contained


# ------------------------------------------------------------------------------------------------
# Finding 7: degraded modes, forced.


def _case_setsid_daemon(timeout_s: float, **limits):
    source = (
        "import os, time\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode() + b'\\n')\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(os.read(r, 64).decode().strip(), flush=True)\n"
        "while True:\n"
        "    pass\n"
    )
    result = run_program(source, timeout_s=timeout_s, **limits)
    daemon = result.stdout.strip()
    if "pid" in result.isolation:
        return "daemon killed", "pid namespace: killed with its init", result.timed_out
    alive = daemon.isdigit() and _alive({int(daemon): _start(int(daemon))})
    observed = f"{result.outcome}, daemon {daemon or '?'} {'ALIVE' if alive else 'gone'}"
    if alive:
        with contextlib.suppress(OSError):
            os.kill(int(daemon), signal.SIGKILL)
    return "daemon killed", observed, bool(daemon.isdigit() and not alive and result.timed_out)


def _start(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19]
    except (OSError, IndexError):
        return b""


def _case_dev_shm_write(timeout_s: float, **limits):
    name = f"dllm-rl-redteam-{secrets.token_hex(6)}"
    targets = [f"/dev/shm/{name}", f"/tmp/{name}", f"/var/tmp/{name}"]
    source = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            for _ in range(3):\n"
        "                f.write(b'x' * 15 * 2**20)\n"
        "        print('written')\n"
        "    except OSError as e:\n"
        "        print(type(e).__name__)\n"
    )
    result = run_program(source, timeout_s=20.0, **limits)
    escaped = [p for p in targets if os.path.exists(p)]
    for path in escaped:
        os.unlink(path)
    observed = f"{len(escaped)} host file(s) ({' '.join(result.stdout.split())}; {_layers(result)})"
    if escaped and not {"private-tmp", "landlock-writes"} & set(result.isolation):
        return "no host file", observed + ", no layer for it here", None
    return "no host file", observed, not escaped and result.error is None


def _case_signal_outside(timeout_s: float, **limits):
    probe = run_program("", timeout_s=20.0, **limits)
    if not {"pid", "landlock-scoped"} & set(probe.isolation) and not any(
        layer.startswith("uid=") for layer in probe.isolation
    ):
        return "bystander alive", "not run: nothing here stops its signals", None
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        source = (
            "import os\n"
            f"for target in (os.getppid(), {os.getpid()}, {bystander.pid}):\n"
            "    try:\n"
            "        os.kill(target, 9)\n"
            "        print('sent')\n"
            "    except OSError as e:\n"
            "        print(type(e).__name__)\n"
        )
        result = run_program(source, timeout_s=20.0, **limits)
        alive = bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    observed = f"bystander {'alive' if alive else 'KILLED'} ({' '.join(result.stdout.split())})"
    return "bystander alive", observed, alive and result.error is None


def _case_memory_total(timeout_s: float, **limits):
    source = (
        "import os, time\n"
        "r, w = os.pipe()\n"
        "kids = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = bytearray(600 * 2**20)\n"
        "        block[::4096] = b'x' * len(block[::4096])\n"
        "        os.write(w, f'{os.getpid()} '.encode())\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "os.close(w)\n"
        "os.set_blocking(r, False)\n"
        "held, dead, text = set(), set(), b''\n"
        "deadline = time.monotonic() + 15\n"
        "while time.monotonic() < deadline and len(held | dead) < len(kids):\n"
        "    try:\n"
        "        text += os.read(r, 64)\n"
        "    except BlockingIOError:\n"
        "        pass\n"
        "    held = {int(p) for p in text.split()}\n"
        "    dead |= {p for p in kids if p not in dead and os.waitpid(p, os.WNOHANG)[0]}\n"
        "    time.sleep(0.01)\n"
        "print(len(held - dead), flush=True)\n"  # holding 600 MB at the same time
        "for pid in kids:\n"
        "    try:\n"
        "        os.kill(pid, 9)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_program(source, timeout_s=30.0, memory_mb=1024, **limits)
    held = int(result.stdout.split()[0]) if result.stdout.split() else -1
    cgroup = [layer for layer in result.isolation if layer.startswith("cgroup")]
    observed = f"{held} x 600 MB held at once; {','.join(cgroup) or 'no cgroup here'}"
    if not cgroup:
        return "at most 1 GB in all", observed, None
    return "at most 1 GB in all", observed, 0 <= held <= 1 and result.error is None


# ------------------------------------------------------------------------------------------------
# Finding 8 (second review): the tests reached the candidate's process. HumanEval's setup (the
# check() function with every expected value) ran in the servant; a generic completion that
# implements nothing found check() (in its globals, in the servant's frames, or by hooking
# compile() before the setup was compiled), called it with probe objects that record what they
# are compared with, and replayed the answers: 1.0 on 154 of 164 problems.

PROBE_AND_REPLAY = """
import builtins, gc, sys, types
_seen, _table, _compile = [], {}, builtins.compile

def _hook(source, *args, **kwargs):
    if isinstance(source, str):
        _seen.append(source)
    return _compile(source, *args, **kwargs)

builtins.compile = _hook

class _Probe:
    def __init__(self, key):
        self.key = key
    def _learn(self, other):
        _table.setdefault(self.key, other)
        return True
    __eq__ = _learn
    __ne__ = lambda self, other: False
    __hash__ = object.__hash__
    __bool__ = lambda self: True
    def __sub__(self, other):
        _table.setdefault(self.key, other)
        return 0
    __rsub__ = __sub__

def _texts():
    yield from _seen
    frame = sys._getframe()
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            for value in list(scope.values()):
                if isinstance(value, str):
                    yield value
                elif isinstance(value, dict):
                    yield from (v for v in list(value.values()) if isinstance(v, str))
        frame = frame.f_back
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            yield from (v for v in list(obj.values()) if isinstance(v, str))

def _checks():
    for scope in (globals(), *(o for o in gc.get_objects() if isinstance(o, dict))):
        check = scope.get("check")
        if callable(check) and check is not _checks:
            yield check
    for text in _texts():
        if "def check(" in text:
            scope = {}
            try:
                exec(_compile(text, "found", "exec"), scope)
            except BaseException:
                continue
            if callable(scope.get("check")):
                yield scope["check"]

def _replay(*args, **kwargs):
    if not _table:
        for check in _checks():
            try:
                check(lambda *a, **k: _Probe(repr(a)))
            except BaseException:
                pass
            if _table:
                break
    return _table.get(repr(args))

for _name, _value in list(globals().items()):  # every function the prompt defined
    if isinstance(_value, types.FunctionType) and not _name.startswith("_"):
        globals()[_name] = _replay
"""
"""A completion that implements nothing: it finds HumanEval's ``check`` (its globals, the
servant's frames and ``gc``, or ``compile`` hooked before the setup is compiled), learns the
expected values with probe objects and replays them (see :func:`_case_probe_and_replay`)."""

_HUMANEVAL_LIKE = (
    'def candidate_under_test(a, b):\n    """The sum of a and b."""\n',
    "METADATA = {}\n\n"
    "def check(candidate):\n"
    "    assert candidate(1, 2) == 3\n"
    "    assert candidate(20, 22) == 42\n"
    "    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-6\n",
)


def _case_probe_and_replay(timeout_s: float):
    from dllm_rl.rewards.code import grade_code

    prefix, setup = _HUMANEVAL_LIKE
    (grade,) = grade_code(
        [f"```python\n{PROBE_AND_REPLAY}\n```"],
        [["check(candidate_under_test)"]],
        setup,
        prefix,
        "candidate_under_test",
        timeout_s=5.0,
    )
    gold = grade_code(
        ["    return a + b\n"],
        [["check(candidate_under_test)"]],
        setup,
        prefix,
        "candidate_under_test",
    )[0]
    observed = f"replay reward {grade.reward}, gold reward {gold.reward}"
    return "replay 0.0, gold 1.0", observed, grade.reward == 0.0 and gold.reward == 1.0


# ------------------------------------------------------------------------------------------------
# Finding 9 (second review): the judge took verdicts from the candidate.


def _case_always_true_contains(timeout_s: float):
    code = (
        "class Everything:\n"
        "    __contains__ = lambda self, item: True\n"
        "    __iter__ = lambda self: iter(())\n"
        "def f(x):\n    return Everything()\n"
    )
    return _all_zero([code], ["assert 3 in f(1)", "assert 'abc' in f(2)"])


def _case_stop_iteration(timeout_s: float):
    code = "def f(x):\n    raise StopIteration\n"
    tests = ["assert all(map(f, [1, 2, 3]))", "assert list(map(f, [1])) == []"]
    return _all_zero([code], tests)


def _case_servant_named_modules(timeout_s: float):
    # The servant says names the tests use are modules: the judge imported what the servant
    # named (``this`` prints on import; ``unittest.__main__`` ran unittest.main() and ended the
    # judge with no report). Now only a standard module of the tests' own name is imported.
    from dllm_rl.rewards.code import grade_code

    code = (
        "import types\n"
        "def f(x):\n    return 0\n"
        "checker = types.ModuleType('unittest.__main__')\n"
        "helper = types.ModuleType('this')\n"
    )
    tests = ["assert f(1) == 1", "assert helper is not None", "assert checker is not None"]
    (grade,) = grade_code([f"```python\n{code}\n```"], [tests], timeout_s=5.0)
    printed = "Beautiful is better" in (grade.sandbox.stdout if grade.sandbox else "")
    observed = f"reward {grade.reward}, {grade.outcome}, judge printed the import: {printed}"
    return (
        "0.0, graded, nothing imported",
        observed,
        (grade.reward == 0.0 and grade.outcome == "graded" and not printed),
    )


def _case_candidate_len_and_eq(timeout_s: float):
    code = (
        "class Liar:\n"
        "    __len__ = lambda self: 3\n"
        "    __eq__ = lambda self, other: True\n"
        "    __hash__ = lambda self: hash(3)\n"
        "    __iter__ = lambda self: iter(())\n"
        "def f(x):\n    return Liar()\n"
    )
    tests = [
        "assert len(f(1)) == 3",
        "assert f(1) in [3]",
        "assert f(1) in {3}",
        "assert {f(1): 1} == {3: 1}",
        "assert sorted(f(1)) == [1, 2, 3]",
    ]
    return _all_zero([code], tests)


# ------------------------------------------------------------------------------------------------
# Finding 10 (second review): the servant reached the sandbox's report function and filled an
# unused report channel; the trainer then decoded 4 MiB one character at a time (0.47 s of its
# CPU per completion instead of 0.005 s).

_REPORT_FLOOD = (
    "import gc\n"
    "def f(x):\n    return 0\n"
    "text = '\\\\' * 1_900_000\n"
    "for obj in gc.get_objects():\n"
    "    if callable(obj) and getattr(obj, '__name__', '') in ('report', 'send'):\n"
    "        try:\n            obj(text)\n        except Exception:\n            pass\n"
    "for scope in (globals(),):\n"
    "    report = scope.get('__sandbox_report__')\n"
    "    if report is not None:\n"
    "        report(text)\n"
)


def _case_report_channel_flood(timeout_s: float):
    from dllm_rl.rewards.code import grade_code

    completions = [f"```python\n{_REPORT_FLOOD}\n```"] * 4
    start = time.process_time()
    grades = grade_code(completions, [["assert f(1) == 2"]] * 4, timeout_s=5.0)
    cpu_s = (time.process_time() - start) / len(completions)
    rewards = [g.reward for g in grades]
    observed = f"{cpu_s:.3f} s of trainer CPU per completion, rewards {rewards}"
    return "< 0.1 s per completion, 0.0", observed, cpu_s < 0.1 and rewards == [0.0] * 4
