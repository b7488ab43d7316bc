"""Tests judged outside the candidate's interpreter: a servant, a judge, and the channel between.

The code reward runs two sandboxed programs per completion, joined by two pipes only
(:func:`rewards.sandbox.run_linked`):

- the **servant** runs the candidate's code in its own interpreter (behind the setup's imports,
  and nothing else of the tests: no expected value ever enters its process), then serves
  requests: call this function, get this attribute, list this iterator. It is untrusted: the
  candidate can patch or replace it, and nothing it says is believed beyond its plain values. It
  has no report channel: only the judge reports;
- the **judge** runs the dataset's trusted code (the prompt's helpers, ``test_setup`` and the
  tests) in a separate sandboxed interpreter, as a different uid where the caller is root. Names
  the tests use that the trusted code does not define (the entry point, the candidate's classes)
  are proxies that forward calls to the servant. The comparisons, ``math.isclose``, the count
  of passing tests and the report all happen here, where the candidate cannot reach.

Values cross the channel through a safe value codec: JSON with tagged nodes for the plain types
``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``bytearray``, ``list``,
``tuple``, ``dict``, ``set``, ``frozenset``, ``range``, ``OrderedDict``, ``defaultdict`` (as a
dict), ``Counter``, ``deque``, ``Fraction`` and ``Decimal``, nested; never pickle. What the judge
decodes is always an exact builtin (or standard-library) value, so an object that compares equal
to everything cannot exist on the judge's side. Anything else the candidate returns (an instance of
its own class, a generator) stays in the servant and reaches the judge as an opaque handle: the
judge may call it, read and set attributes, index it, iterate it (the servant sends the items;
``len`` and ``in`` count and compare those items in the judge) and print it, but equality and
hashing are identity and its truth value is refused. Callables the
tests pass as arguments (``key=lambda x: ...``) stay in the judge: the servant calls back. Lists,
dicts, sets and bytearrays passed as arguments and changed in place by the candidate are copied
back into the judge's objects after the call, so in-place mutation tests work.

The judge has a wall-clock budget: a call the servant does not answer in time, a servant that
dies or sends something malformed, fails the current and every later test that needs it; the
judge still reports. Frames are ``<4-byte length><JSON>``, at most 32 MiB each.
"""

from __future__ import annotations

import functools
import inspect

# ------------------------------------------------------------------------------------------------
# Shared by both sides (their source is shipped into the sandboxes).


class _LinkClosed(Exception):
    """The other side is gone, silent past the deadline, or sent something malformed."""


class _Link:
    """Framed JSON messages over two pipe descriptors, with a deadline."""

    def __init__(self, read_fd, write_fd, deadline=None, max_bytes=32 * 2**20):
        import os

        self.read_fd, self.write_fd = read_fd, write_fd
        self.deadline, self.max_bytes = deadline, max_bytes
        self.buffer = bytearray()
        self.closed = None
        os.set_blocking(write_fd, False)

    def _wait(self, fd, writing):
        import select
        import time

        timeout = None if self.deadline is None else self.deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            self.close("no answer before the deadline")
        ready = select.select([] if writing else [fd], [fd] if writing else [], [], timeout)
        if not ready[0] and not ready[1]:
            self.close("no answer before the deadline")

    def close(self, reason):
        self.closed = self.closed or reason
        raise _LinkClosed(self.closed)

    def send(self, message):
        import json
        import os

        if self.closed:
            raise _LinkClosed(self.closed)
        data = json.dumps(message, separators=(",", ":")).encode()
        if len(data) > self.max_bytes:
            raise ValueError("a value too large to send")
        view = memoryview(len(data).to_bytes(4, "big") + data)
        while len(view):
            self._wait(self.write_fd, True)
            try:
                view = view[os.write(self.write_fd, view) :]
            except BlockingIOError:
                continue
            except OSError:
                self.close("the other side closed the channel")

    def receive(self):
        import json
        import os

        if self.closed:
            raise _LinkClosed(self.closed)
        while True:
            if len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "big")
                if size > self.max_bytes:
                    self.close("a message larger than the cap")
                if len(self.buffer) >= 4 + size:
                    data = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    try:
                        message = json.loads(data)
                    except (ValueError, RecursionError):
                        self.close("a malformed message")
                    if type(message) is not dict:
                        self.close("a malformed message")
                    return message
            self._wait(self.read_fd, False)
            try:
                chunk = os.read(self.read_fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self.close("the other side closed the channel")
            self.buffer += chunk


def _codec(handle_out, handle_in):
    """``(encode, decode)`` of the value codec. ``handle_out(value)`` turns a value that is not
    plain into a node (or raises ``TypeError``); ``handle_in(node)`` turns a handle or callback
    node back into an object (or raises ``ValueError``)."""
    import collections
    import sys

    scalars = (type(None), bool, int, str)
    pairs = {dict: "D", collections.OrderedDict: "O", collections.defaultdict: "D"}
    pairs[collections.Counter] = "K"
    items = {list: "L", tuple: "T", set: "S", frozenset: "F", collections.deque: "Q"}

    def encode(value, depth=0):
        kind = type(value)
        if kind is int and not -(2**63) <= value < 2**63:  # past JSON's digit limit: hex
            return ["I", format(value, "x")]
        if kind in scalars:
            return value
        if depth > 100:
            raise ValueError("a value nested too deeply")
        if kind is float:
            if value != value or value in (float("inf"), float("-inf")):
                return ["X", repr(value)]
            return value
        if kind in items:
            return [items[kind], [encode(v, depth + 1) for v in value]]
        if kind in pairs:
            return [
                pairs[kind],
                [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()],
            ]
        if kind is bytes or kind is bytearray:
            return ["B" if kind is bytes else "A", value.decode("latin-1")]
        if kind is complex:
            return ["C", encode(value.real), encode(value.imag)]
        if kind is range:
            return ["R", value.start, value.stop, value.step]
        fractions, decimal = sys.modules.get("fractions"), sys.modules.get("decimal")
        if fractions is not None and kind is fractions.Fraction:
            return ["FR", value.numerator, value.denominator]
        if decimal is not None and kind is decimal.Decimal:
            return ["DE", str(value)]
        return handle_out(value)

    def check(value, *kinds):
        if type(value) not in kinds:
            raise ValueError("a malformed value")
        return value

    def decode(node, depth=0):
        kind = type(node)
        if kind in scalars or kind is float:
            return node
        if kind is not list or not node or depth > 100:
            raise ValueError("a malformed value")
        tag, rest = node[0], node[1:]
        if tag in ("L", "T", "S", "F", "Q"):
            values = [decode(v, depth + 1) for v in check(rest[0], list)]
            make = {"L": list, "T": tuple, "S": set, "F": frozenset, "Q": collections.deque}
            return make[tag](values)
        if tag in ("D", "O", "K"):
            make = {"D": dict, "O": collections.OrderedDict, "K": collections.Counter}
            out = make[tag]()
            for pair in check(rest[0], list):
                key, value = check(pair, list)
                out[decode(key, depth + 1)] = decode(value, depth + 1)
            return out
        if tag in ("B", "A"):
            data = check(rest[0], str).encode("latin-1")
            return data if tag == "B" else bytearray(data)
        if tag == "X":
            return float(check(rest[0], str))
        if tag == "I":
            return int(check(rest[0], str), 16)
        if tag == "C":
            return complex(check(decode(rest[0]), int, float), check(decode(rest[1]), int, float))
        if tag == "R":
            return range(*[check(v, int) for v in rest])
        if tag == "FR":
            import fractions

            return fractions.Fraction(check(rest[0], int), check(rest[1], int))
        if tag == "DE":
            import decimal

            return decimal.Decimal(check(rest[0], str))
        return handle_in(node)

    return encode, decode


# ------------------------------------------------------------------------------------------------
# The servant: runs in the candidate's sandbox. Nothing here is trusted by the judge.


def _servant_main(data):
    import builtins
    import os
    import sys
    import types

    read_fd, write_fd = globals().pop("__sandbox_link__")
    link = _Link(read_fd, write_fd)
    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    candidate_error = ""
    if data["imports"]:  # the setup's imports (MBPP's gold code uses them): nothing else of it
        try:
            exec(compile(data["imports"], "test_imports.py", "exec"), namespace)
        except BaseException:
            pass
    try:  # a SystemExit here (sys.exit before the tests) is caught like any error
        exec(compile(data["code"], "solution.py", "exec"), namespace)
    except BaseException as exc:
        candidate_error = type(exc).__name__
    del data
    objects, ids = {}, {}
    pending = {"next": 0}

    def handle_out(value):
        key = id(value)
        if key not in ids:
            ids[key] = len(objects)
            objects[ids[key]] = value
        kind = type(value)
        module_name = value.__name__ if isinstance(value, types.ModuleType) else None
        return ["H", ids[key], getattr(kind, "__name__", "?"), callable(value), module_name]

    def handle_in(node):
        if node[0] == "H" and node[1] in objects:
            return objects[node[1]]
        if node[0] == "CB":
            return callback(node[1])
        raise ValueError("a malformed value")

    encode, decode = _codec(handle_out, handle_in)

    def callback(number):
        def call_back(*args, **kwargs):
            pending["next"] += 1
            ask = pending["next"]
            link.send(
                {
                    "cb": number,
                    "id": ask,
                    "args": [encode(a) for a in args],
                    "kwargs": [[k, encode(v)] for k, v in kwargs.items()],
                }
            )
            return wait(ask)

        return call_back

    def wait(ask):
        while True:
            message = link.receive()
            if message.get("re") == ask:
                if "raise" in message:
                    raise RuntimeError(f"{message['raise']}: {message.get('msg', '')}")
                return decode(message["ok"])
            serve(message)

    def serve(message):
        op = message.get("op")
        try:
            target = objects[message["target"]] if "target" in message else None
            args = [decode(a) for a in message.get("args", [])]
            kwargs = {k: decode(v) for k, v in message.get("kwargs", [])}
            if op == "call":
                result = target(*args, **kwargs)
            elif op == "getattr":
                result = getattr(target, args[0])
            elif op == "setattr":
                result = setattr(target, args[0], args[1])
            elif op == "getitem":
                result = target[args[0]]
            elif op == "setitem":
                target[args[0]] = args[1]
                result = None
            elif op == "list":
                result = list(target)
            elif op in ("repr", "str"):
                result = (repr if op == "repr" else str)(target)
            else:
                raise ValueError(f"unknown request {op!r}")
            answer = {"re": message["id"], "ok": encode(result)}
            changed = []
            for i, (node, value) in enumerate(zip(message.get("args", []), args)):
                if type(value) in (list, dict, set, bytearray) and encode(value) != node:
                    changed.append([i, encode(value)])
            if changed:
                answer["mut"] = changed
        except BaseException as exc:
            answer = {"re": message.get("id"), "raise": type(exc).__name__, "msg": str(exc)[:300]}
        link.send(answer)

    try:
        wanted = link.receive().get("want", [])  # the names the tests need, nothing else
    except _LinkClosed:
        os._exit(0)
    names = []
    for key in wanted:
        if type(key) is str and key in namespace:
            try:
                names.append([key, encode(namespace[key])])
            except (TypeError, ValueError, RecursionError):
                pass
    link.send({"names": names, "error": candidate_error})
    while True:
        try:
            message = link.receive()
        except _LinkClosed:
            os._exit(0)
        serve(message)


# ------------------------------------------------------------------------------------------------
# The judge: runs the trusted test code in a sandbox of its own and reports the verdict.


class _Remote:
    """An object that lives in the servant. Equality is identity, hashing by identity, ordering
    undefined; it has no truth value. ``len``, iteration and ``in`` use the items the servant
    lists (plain values or handles), counted and compared in the judge: the candidate's
    ``__len__``, ``__contains__`` or ``__eq__`` decide nothing. The argument of ``in`` (an
    expected value) never crosses to the servant."""

    __slots__ = ("_number", "_kind", "__weakref__")
    _call = None  # the judge's request function, set at start

    def __init__(self, number, kind):
        object.__setattr__(self, "_number", number)
        object.__setattr__(self, "_kind", kind)

    def _ask(self, op, *args, **kwargs):
        return type(self)._call(self._number, op, args, kwargs)

    def __call__(self, *args, **kwargs):
        return self._ask("call", *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __setattr__(self, name, value):
        self._ask("setattr", name, value)

    def __getitem__(self, key):
        return self._ask("getitem", key)

    def __setitem__(self, key, value):
        self._ask("setitem", key, value)

    def _items(self):
        value = self._ask("list")
        if type(value) is not list:
            raise TypeError("a candidate's object did not list its items")
        return value

    def __len__(self):  # counted here, from the items: never the candidate's __len__
        return len(self._items())

    def __iter__(self):
        return iter(self._items())

    def __contains__(self, item):  # compared here, item by item: never the candidate's
        return any(value is item or value == item for value in self._items())

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def __hash__(self):
        return id(self)

    def __repr__(self):
        value = self._ask("repr")
        return value if type(value) is str else f"<{self._kind} of the candidate>"

    def __str__(self):
        value = self._ask("str")
        return value if type(value) is str else f"<{self._kind} of the candidate>"

    def __bool__(self):
        raise TypeError("the truth value of a candidate's object is not trusted")


class _CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one (its type name is the text)."""


def _judge_main(data):
    import builtins
    import signal
    import sys
    import time

    read_fd, write_fd = globals().pop("__sandbox_link__")
    report = globals().pop("__sandbox_report__")
    deadline = time.monotonic() + data["budget_s"]
    link = _Link(read_fd, write_fd, deadline)
    remotes, callbacks = {}, {}
    state = {"next": 0, "out_of_time": False}

    def on_alarm(*_):
        state["out_of_time"] = True
        raise TimeoutError("the tests ran past their time budget")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, data["budget_s"]))

    def handle_out(value):
        if type(value) is _Remote:
            return ["H", value._number]
        if callable(value):
            callbacks[len(callbacks)] = value
            return ["CB", len(callbacks) - 1]
        raise TypeError(f"cannot pass a {type(value).__name__} to the candidate")

    def handle_in(node):
        if node[0] != "H" or len(node) != 5 or type(node[1]) is not int:
            raise ValueError("a malformed value")
        if node[1] not in remotes:
            remotes[node[1]] = _Remote(node[1], str(node[2])[:80])
        return remotes[node[1]]

    encode, decode = _codec(handle_out, handle_in)
    # A candidate's exception arrives as the builtin type of the same name (a test may expect
    # ValueError), except those that steer control flow: a StopIteration raised in the judge
    # would silently end an enclosing map() or generator (all(map(f, xs)) would pass).
    control_flow = (StopIteration, StopAsyncIteration)
    exceptions = {
        name: value
        for name, value in vars(builtins).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and not issubclass(value, control_flow)
    }

    def request(number, op, args, kwargs):
        state["next"] += 1
        ask = state["next"]
        message = {
            "op": op,
            "target": number,
            "id": ask,
            "args": [encode(a) for a in args],
            "kwargs": [[k, encode(v)] for k, v in kwargs.items()],
        }
        link.send(message)
        while True:
            answer = link.receive()
            if "cb" in answer:  # the candidate calls a function of the tests back
                serve_callback(answer)
                continue
            if answer.get("re") != ask:
                link.close("an answer to another request")
            break
        if "raise" in answer:
            name = str(answer["raise"])
            kind = exceptions.get(name, _CandidateError)
            try:  # the same builtin exception type (a test may expect ValueError), never more
                error = kind(name if kind is _CandidateError else str(answer.get("msg", ""))[:300])
            except Exception:
                error = _CandidateError(name)
            raise error
        for i, node in answer.get("mut", []):  # in-place changes to the arguments
            if type(i) is int and 0 <= i < len(args):
                original, changed = args[i], decode(node)
                if type(changed) is type(original) and type(original) in (list, bytearray):
                    original[:] = changed
                elif type(changed) is type(original) and type(original) in (dict, set):
                    original.clear()
                    original.update(changed)
        return decode(answer["ok"])

    def serve_callback(message):
        try:
            function = callbacks[message["cb"]]
            args = [decode(a) for a in message.get("args", [])]
            kwargs = {str(k): decode(v) for k, v in message.get("kwargs", [])}
            answer = {"re": message.get("id"), "ok": encode(function(*args, **kwargs))}
        except _LinkClosed:
            raise
        except Exception as exc:
            answer = {"re": message.get("id"), "raise": type(exc).__name__, "msg": str(exc)[:300]}
        link.send(answer)

    _Remote._call = staticmethod(request)
    namespace = {"__builtins__": builtins, "__name__": "__tests__"}
    if data["prefix"]:  # the prompt's own helpers (HumanEval/32's poly): trusted, not the copy
        try:
            exec(compile(data["prefix"], "prompt.py", "exec"), namespace)
        except BaseException:
            pass
    wanted = {n for n in data["free_names"] if n not in namespace and not hasattr(builtins, n)}
    entry = data["entry_point"]
    if entry:
        wanted.add(entry)
        namespace.pop(entry, None)  # the prompt's stub: the candidate's function replaces it
    candidate_error = ""
    try:
        link.send({"want": sorted(wanted)})
        manifest = link.receive()
        candidate_error = str(manifest.get("error", ""))[:80].replace("\n", " ")
        for pair in manifest.get("names", []):
            name, node = pair
            if type(name) is not str or name not in wanted:
                continue
            if type(node) is list and node[:1] == ["H"] and len(node) == 5 and node[4]:
                # A module the candidate imported under the name the tests use: the judge's own
                # copy, never a proxy, and only a standard module of exactly that name (the
                # tests' own word), never one the servant names (unittest.__main__, antigravity).
                if node[4] == name and name in sys.stdlib_module_names:
                    try:
                        namespace[name] = __import__(name)
                    except Exception:
                        pass
                continue
            namespace[name] = decode(node)
    except Exception:
        pass  # no manifest (the candidate hung, died, or lied): every test needing it fails
    setup_error = ""
    if data["setup"]:
        try:
            exec(compile(data["setup"], "test_setup.py", "exec"), namespace)
        except BaseException as exc:
            setup_error = type(exc).__name__
    passed = []
    try:
        for test in data["tests"]:
            ok = "0"
            if not setup_error and not state["out_of_time"]:
                try:
                    exec(compile(test, "test.py", "exec"), namespace)
                    ok = "1"
                except BaseException:
                    pass
            passed.append(ok)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except TimeoutError:  # the budget ran out between two tests
        signal.setitimer(signal.ITIMER_REAL, 0)
    passed += ["0"] * (len(data["tests"]) - len(passed))
    report("".join(passed) + "\n" + candidate_error + "\n" + setup_error)


def free_names(sources) -> list[str]:
    """Names the sources read but never bind (assignment, import, def, class): what the tests
    need from the candidate. Computed by the caller, so that the judge starts without ``ast``."""
    import ast
    import warnings

    loaded, bound = set(), set()
    for source in sources:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.alias):
                bound.add((node.asname or node.name).split(".")[0])
    return sorted(loaded - bound)


_SHARED = (_LinkClosed, _Link, _codec)


@functools.lru_cache(maxsize=1)
def servant_source() -> str:
    """The servant's functions (call ``_servant_main(data)`` after them)."""
    return "\n\n".join(inspect.getsource(f) for f in (*_SHARED, _servant_main))


@functools.lru_cache(maxsize=1)
def judge_source() -> str:
    """The judge's functions (call ``_judge_main(data)`` after them)."""
    parts = (*_SHARED, _Remote, _CandidateError, _judge_main)
    return "\n\n".join(inspect.getsource(f) for f in parts)
