"""Declares what a strategy component needs from the dpone sandbox.

    python3 declare_needs.py strategy.wasm memory_mb=128 [fuel=40000000000]

Rewrites the component with a `dpone:needs` custom section (replacing an earlier one):
the defaults of its `limits.memory_mb` and `limits.fuel` when the manifest sets neither.
A Python runtime needs more than dpone's 64 MiB default, so every Python strategy declares
its memory this way after `componentize-py` built it. Standard library only.
"""

import os
import sys

SECTION = b"dpone:needs"
# The most each key may declare (the host refuses more: the manifest must set it).
KEYS = {"memory_mb": 1024, "fuel": 200_000_000_000}


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_leb(data: bytes, at: int):
    """An unsigned LEB128 u32 at `at` and the offset after it."""
    value = 0
    for i in range(5):
        if at + i >= len(data):
            break
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, at + i + 1
    raise ValueError(f"malformed section header at byte {at}")


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
        good = value.isascii() and value.isdigit() and key in KEYS
        if not good or not 1 <= int(value) <= KEYS[key]:
            limits = ", ".join(f"{k}=1..{v}" for k, v in KEYS.items())
            print(f"{pair!r}: expected {limits}", file=sys.stderr)
            return 2
        lines.append(f"{key} = {int(value)}\n")
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\0asm":
        print(f"{path} is not a WebAssembly file", file=sys.stderr)
        return 2
    payload = leb(len(SECTION)) + SECTION + "".join(lines).encode()
    try:
        data = without_needs(data) + b"\0" + leb(len(payload)) + payload
    except (ValueError, IndexError) as err:
        print(f"{path}: {err}", file=sys.stderr)
        return 2
    # Written aside and renamed, so a crash never leaves half a component.
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
