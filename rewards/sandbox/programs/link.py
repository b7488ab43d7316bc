# The channel between the code reward's two sandboxed programs: framed JSON over two pipes, with a
# deadline, and the safe value codec (see judge.py). Prepended to servant.py and to judge.py by
# dllm_rl.rewards.sandbox.sources. Standard library only, imported inside each function.


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
