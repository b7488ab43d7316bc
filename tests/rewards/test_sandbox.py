"""The code sandbox: ordinary programs, infrastructure failures, and a hostile suite.

The hostile programs run concurrently in one module fixture (each with a 2 s timeout), and each
test below checks one of them from the outside: files that must not appear, a listener that must
not be reached, a bystander process that must survive, a secret that must not leak.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dllm_rl.rewards import sandbox
from dllm_rl.rewards.sandbox import (
    SandboxResult,
    max_wall_s,
    network_isolation_available,
    run_program,
    run_programs,
)
from tests.attacks.hostile import pids_of_uid, run_hostile_suite

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux"),
    pytest.mark.timeout(180),
]

HOSTILE_TIMEOUT_S = 2.0  # for the programs that must be stopped
BUDGET_S = max_wall_s(HOSTILE_TIMEOUT_S)  # timeout + start-up grace + forced kill
PATIENT_S = 20.0  # for the programs that end by themselves (a busy machine must not fail them)
SECRET = "dllm-secret-4f1c9a"


def _signals_contained() -> bool:
    """The program can signal only its own processes: it has its own uid or pid namespace."""
    layers = sandbox.isolation_available()
    return "pid" in layers or any(layer.startswith("uid=") for layer in layers)


def _uid(result: SandboxResult) -> int | None:
    return next((int(f[4:]) for f in result.isolation if f.startswith("uid=")), None)


# ------------------------------------------------------------------------------------------------
# Ordinary programs.


def test_program_output_exit_code_and_report() -> None:
    result = run_program(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
        "__sandbox_report__('line 1\\nline 2 \\\\ done')\nsys.exit(3)\n",
        timeout_s=10,
    )
    assert result.error is None, result.error
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert result.exit_code == 3 and result.killed_by_signal is None and not result.timed_out
    assert result.report == "line 1\nline 2 \\ done"
    assert result.outcome == "exit 3"


def test_environment_stdin_and_working_directory() -> None:
    probe = (
        "import os, sys\n"
        "print(sorted(os.environ))\n"
        "print(os.listdir('.'))\n"
        "open('left-behind', 'w').write('x')\n"
        "try:\n    input()\nexcept EOFError:\n    print('stdin closed')\n"
        "print(sys.flags.isolated, sys.flags.no_site)\n"
    )
    first, second = run_programs([probe, probe], timeout_s=10)
    for result in (first, second):
        assert result.error is None, result.error
        env, listing, stdin, flags = result.stdout.splitlines()
        assert set(eval(env)) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PWD"}
        assert listing == "[]"  # a fresh directory: the other run's file is not there
        assert stdin == "stdin closed"
        assert flags == "1 1"


def test_killed_by_signal() -> None:
    result = run_program("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", timeout_s=10)
    if "pid" in result.isolation:
        # As init of its pid namespace the program ignores its own signals; it still ends.
        assert result.exit_code == 0
    else:
        assert result.killed_by_signal == 11 and result.exit_code is None


@pytest.mark.parametrize("fork_server", ["1", "0"])
def test_infrastructure_failure_is_an_error_not_a_result(
    monkeypatch: pytest.MonkeyPatch, fork_server: str
) -> None:
    from dllm_rl.rewards.sandbox import zygote as sandbox_zygote

    monkeypatch.setenv("DLLM_RL_SANDBOX_FORKSERVER", fork_server)
    monkeypatch.setattr(sandbox_zygote, "_SERVERS", {})  # a fork server starts afresh
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    result = run_program("print(1)", timeout_s=5)
    assert result.error is not None and result.report is None


def test_a_dead_fork_server_is_replaced() -> None:
    from dllm_rl.rewards.sandbox import zygote as sandbox_zygote

    if not sandbox_zygote.enabled():
        pytest.skip("no fork server here")
    assert run_program("print(1)").stdout == "1\n"
    first = sandbox_zygote.server(False)
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while first.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run_program("print(2)").stdout == "2\n"
    assert sandbox_zygote.server(False).pid != first.pid


def test_a_program_reads_nothing_of_another_through_the_fork_server() -> None:
    # The server never holds a source: a program that scans its whole memory finds no trace
    # of the previous program's text (searched by a pattern, so the needle is not in memory).
    secret = "zq" + "7" * 30 + "qz"
    run_program(f"x = {secret!r}\nprint(len(x))")
    scan = (
        "import ctypes, re\n"
        "needle, found, scanned = re.compile(rb'zq7{30}qz'), False, 0\n"
        "with open('/proc/self/maps') as maps:\n"
        "    spans = [line.split() for line in maps]\n"
        "for fields in spans:\n"
        "    if not fields[1].startswith('r') or fields[-1].startswith('[v'):\n"
        "        continue\n"
        "    lo, hi = (int(v, 16) for v in fields[0].split('-'))\n"
        "    found = found or needle.search(ctypes.string_at(lo, hi - lo)) is not None\n"
        "    scanned += hi - lo\n"
        "print(found, scanned > 2**20)\n"
    )
    result = run_program(scan, memory_mb=1024)
    assert result.stdout == "False True\n", result.stderr[-500:]


def test_no_temporary_directory_is_an_error_not_a_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    result = run_program("print(1)", timeout_s=5)
    assert result.error is not None and "No space left" in result.error
    assert result.report is None


def test_concurrency_cap() -> None:
    start = time.monotonic()
    results = run_programs(["import time\ntime.sleep(0.6)"] * 4, max_concurrency=2, timeout_s=10)
    assert all(r.exit_code == 0 for r in results)
    assert time.monotonic() - start >= 1.2  # two rounds of two


def test_network_isolation_is_reported_consistently() -> None:
    result = run_program("", timeout_s=10)
    assert isinstance(network_isolation_available(), bool)
    assert result.network_isolated == network_isolation_available() == ("net" in result.isolation)


# ------------------------------------------------------------------------------------------------
# Hostile programs, run together once.


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    """Start every hostile program at once; collect results and the outside world's state."""
    owned = tmp_path_factory.mktemp("owned")  # a directory this test owns
    escape_targets = [
        str(owned / "escaped"),
        os.path.join(tempfile.gettempdir(), f"dllm-rl-test-escape-{os.getpid()}"),
    ]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    old_secret = os.environ.get("DLLM_SECRET")
    os.environ["DLLM_SECRET"] = SECRET
    programs = {
        "infinite_loop": ("while True:\n    pass\n", {"timeout_s": HOSTILE_TIMEOUT_S}),
        "fork_bomb": (
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
            "        pass\n",
            {"max_processes": 16, "timeout_s": HOSTILE_TIMEOUT_S},
        ),
        "memory_bomb": (
            "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))\n",
            {"memory_mb": 256},
        ),
        "huge_output": (
            "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
            {"max_output_bytes": 4096, "timeout_s": HOSTILE_TIMEOUT_S},
        ),
        "write_outside": (
            f"for path in {escape_targets!r}:\n"
            "    try:\n        open(path, 'w').write('escaped')\n        print('written')\n"
            "    except OSError as e:\n        print(type(e).__name__)\n",
            {},
        ),
        "read_secret": (
            "import os\nprint(os.environ.get('DLLM_SECRET'))\n"
            "for pid in os.listdir('/proc'):\n    try:\n"
            "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "    except OSError:\n        pass\n",
            {},
        ),
        "network": (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n"
            "    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)\n",
            {},
        ),
    }
    if _signals_contained():  # never fire kill(-1) where it would reach this user's processes
        programs["kill_parent"] = (
            "import os\n"
            f"for attempt in (lambda: os.kill(os.getppid(), 9), lambda: os.kill({os.getpid()}, 9),\n"
            f"                lambda: os.kill({bystander.pid}, 9), lambda: os.killpg({os.getpgid(0)}, 9),\n"
            "                lambda: os.killpg(os.getpgid(os.getppid()), 9),\n"
            "                lambda: os.kill(-1, 9)):\n"
            "    try:\n        attempt()\n    except OSError as e:\n        print(type(e).__name__)\n"
            "print('still here')\n",
            {},
        )

    def run(item):
        name, (source, limits) = item
        return name, run_program(source, **{"timeout_s": PATIENT_S, **limits})

    try:
        with ThreadPoolExecutor(len(programs)) as pool:
            results = dict(pool.map(run, programs.items()))
        try:
            listener.accept()[0].close()
            connection_arrived = True
        except BlockingIOError:
            connection_arrived = False
        yield {
            "results": results,
            "escaped": [p for p in escape_targets if os.path.exists(p)],
            "connection_arrived": connection_arrived,
            "bystander_alive": bystander.poll() is None,
        }
    finally:
        listener.close()
        bystander.kill()
        bystander.wait()
        for path in escape_targets:
            if os.path.exists(path):
                os.unlink(path)
        if old_secret is None:
            os.environ.pop("DLLM_SECRET", None)
        else:
            os.environ["DLLM_SECRET"] = old_secret


def test_infinite_loop_is_killed_at_the_timeout(hostile) -> None:
    result = hostile["results"]["infinite_loop"]
    assert result.timed_out and result.error is None
    assert HOSTILE_TIMEOUT_S <= result.wall_s < BUDGET_S


def test_fork_bomb_is_contained_and_cleaned_up(hostile) -> None:
    result = hostile["results"]["fork_bomb"]
    assert result.timed_out and result.wall_s < BUDGET_S
    uid = _uid(result)
    if uid is not None:
        assert pids_of_uid(uid) == []  # nothing left running as its uid
    else:
        assert "pid" in result.isolation, "without a uid or pid namespace cleanup is not provable"


def test_memory_bomb_hits_the_address_space_limit(hostile) -> None:
    result = hostile["results"]["memory_bomb"]
    assert "MemoryError" in result.stderr and not result.timed_out
    assert result.exit_code == 1


def test_huge_output_is_capped(hostile) -> None:
    result = hostile["results"]["huge_output"]
    assert result.stdout_truncated and len(result.stdout) == 4096
    assert result.wall_s < BUDGET_S


def test_cannot_write_outside_its_directory(hostile) -> None:
    result = hostile["results"]["write_outside"]
    assert result.error is None
    assert hostile["escaped"] == [], result.stdout


def test_cannot_read_the_parents_secret(hostile) -> None:
    result = hostile["results"]["read_secret"]
    assert result.error is None
    assert SECRET not in result.stdout and SECRET not in result.stderr
    assert result.stdout.splitlines()[0] == "None"


def test_no_network_or_says_so(hostile) -> None:
    result = hostile["results"]["network"]
    assert result.error is None
    if result.network_isolated:
        assert not hostile["connection_arrived"]
        assert result.stdout.strip() != "connected"
    else:  # the host does not allow it: the result must say so
        assert not network_isolation_available()


def test_cannot_kill_the_parent_or_its_neighbours(hostile) -> None:
    if not _signals_contained():
        pytest.skip("no uid drop and no pid namespace here: the program could signal our processes")
    result = hostile["results"]["kill_parent"]
    os.kill(os.getpid(), 0)  # this process is alive (it would not run otherwise)
    assert hostile["bystander_alive"]
    assert result.error is None and result.report is None


def test_run_hostile_suite_contains_every_case() -> None:
    rows = run_hostile_suite(timeout_s=1.5)
    assert [sorted(row) for row in rows] == [["case", "contained", "outcome", "wall_s"]] * len(rows)
    assert len(rows) >= 12
    failed = [row for row in rows if not row["contained"]]
    assert not failed, failed
    assert all(row["wall_s"] < 60 for row in rows)
