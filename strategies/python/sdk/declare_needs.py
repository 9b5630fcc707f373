"""Declares what a strategy component needs from the dpone sandbox.

    python3 declare_needs.py strategy.wasm memory_mb=128 [fuel=40000000000]

Rewrites the component with a `dpone:needs` custom section (replacing an earlier one):
the defaults of its `limits.memory_mb` and `limits.fuel` when the manifest sets neither.
A Python runtime needs more than dpone's 64 MiB default, so every Python strategy declares
its memory this way after `componentize-py` built it. Standard library only.
"""

import sys

SECTION = b"dpone:needs"
KEYS = ("memory_mb", "fuel")


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_leb(data: bytes, at: int):
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def without_needs(data: bytes) -> bytes:
    """The component with its top-level `dpone:needs` sections removed."""
    out, at = bytearray(data[:8]), 8
    while at < len(data):
        start = at
        section_id = data[at]
        size, body = read_leb(data, at + 1)
        at = body + size
        if section_id == 0:
            name_len, name_at = read_leb(data, body)
            if data[name_at : name_at + name_len] == SECTION:
                continue
        out += data[start:at]
    return bytes(out)


def main(argv) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, pairs = argv[1], argv[2:]
    lines = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in KEYS or not value.isdigit() or int(value) <= 0:
            print(f"{pair!r}: expected memory_mb=N or fuel=N with N > 0", file=sys.stderr)
            return 2
        lines.append(f"{key} = {int(value)}\n")
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\0asm":
        print(f"{path} is not a WebAssembly file", file=sys.stderr)
        return 2
    payload = leb(len(SECTION)) + SECTION + "".join(lines).encode()
    data = without_needs(data) + b"\0" + leb(len(payload)) + payload
    with open(path, "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
