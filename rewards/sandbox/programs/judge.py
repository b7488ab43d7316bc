# The judge: runs the dataset's trusted test code in a sandbox of its own, after link.py; the
# caller appends `_judge_main(data)` (dllm_rl.rewards.code.build_judge). Standard library only.
#
# Tests judged outside the candidate's interpreter: a servant, a judge, and the channel between.
#
# The code reward runs two sandboxed programs per completion, joined by two pipes only
# (`dllm_rl.rewards.sandbox.run_linked`):
#
# - the **servant** runs the candidate's code in its own interpreter (behind the setup's imports,
#   and nothing else of the tests: no expected value ever enters its process), then serves
#   requests: call this function, get this attribute, list this iterator. It is untrusted: the
#   candidate can patch or replace it, and nothing it says is believed beyond its plain values. It
#   has no report channel: only the judge reports;
# - the **judge** runs the dataset's trusted code (the prompt's helpers, ``test_setup`` and the
#   tests) in a separate sandboxed interpreter, as a different uid where the caller is root. Names
#   the tests use that the trusted code does not define (the entry point, the candidate's classes)
#   are proxies that forward calls to the servant. The comparisons, ``math.isclose``, the count
#   of passing tests and the report all happen here, where the candidate cannot reach.
#
# Values cross the channel through a safe value codec: JSON with tagged nodes for the plain types
# ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``bytearray``, ``list``,
# ``tuple``, ``dict``, ``set``, ``frozenset``, ``range``, ``OrderedDict``, ``defaultdict`` (as a
# dict), ``Counter``, ``deque``, ``Fraction`` and ``Decimal``, nested; never pickle. What the judge
# decodes is always an exact builtin (or standard-library) value, so an object that compares equal
# to everything cannot exist on the judge's side. Anything else the candidate returns (an instance of
# its own class, a generator) stays in the servant and reaches the judge as an opaque handle: the
# judge may call it, read and set attributes, index it, iterate it (the servant sends the items;
# ``len`` and ``in`` count and compare those items in the judge) and print it, but equality and
# hashing are identity and its truth value is refused. Callables the
# tests pass as arguments (``key=lambda x: ...``) stay in the judge: the servant calls back. Lists,
# dicts, sets and bytearrays passed as arguments and changed in place by the candidate are copied
# back into the judge's objects after the call, so in-place mutation tests work.
#
# The judge has a wall-clock budget: a call the servant does not answer in time, a servant that
# dies or sends something malformed, fails the current and every later test that needs it; the
# judge still reports. Frames are ``<4-byte length><JSON>``, at most 32 MiB each.


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
