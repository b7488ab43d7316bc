# The servant: runs in the candidate's sandbox, after link.py; the caller appends
# `_servant_main(data)`. It runs the candidate's code and serves the judge's requests. Nothing here
# is trusted by the judge (see judge.py). Standard library only, imported inside each function.


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
