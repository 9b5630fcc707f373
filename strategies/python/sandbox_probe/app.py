"""`sandbox_probe_py`: a hostile Python component for the host's sandbox tests. Never use it
in a pipeline.

The Python twin of `sandbox_probe` and `sandbox_escape`: its runtime imports the WASI
clocks, random, filesystem and sockets, so it also shows what the virtual WASI gives a
component. Its `run` attempts what option `attack` names, against option `target` where one
is needed:
- `loop`: spins forever (fuel must stop it);
- `alloc`: allocates and touches 1 GiB in 1 MiB chunks (the memory cap must stop it);
- `file`: reads the file at `target` and lists `/` and `.`;
- `socket`: opens a TCP connection to `target` (a numeric `ip:port`) and resolves `localhost`;
- `env`: reads the environment variable `target` and counts all variables;
- `clock`: reads the wall and monotonic clocks;
- `entropy`: reads random bytes, `random.random()`, a uuid4 and the clocks.

A successful attack returns `ok` with a message saying what leaked (`LEAKED ...`); a blocked
one returns `unsupported("blocked: <error>")`. `clock` and `entropy` return what they read
(`clock: wall=<us> monotonic=<ns>`, `entropy: ...`), for the tests to compare with the run's
logical time and run id. It touches no source, sink or state.
"""

# A host name goes through the idna codec, which componentize-py bundles only when imported.
import encodings.idna  # noqa: F401
import os
import random
import socket
import time
import uuid

from dpone_strategy import Options, Strategy, export, fail, invalid_config, optional, required, types
from wit_world import CapabilityNeeds, OptionKind, RunSummary, StrategyInfo

ATTACK = "attack"
TARGET = "target"


def blocked(err: BaseException):
    return fail(types.DponeError_Unsupported(f"blocked: {type(err).__name__}: {err}"))


def spin():
    turns = 0
    while True:
        turns += 1


def alloc_gib():
    chunks = [bytearray(b"\x01" * (1 << 20)) for _ in range(1024)]
    return f"allocated {sum(len(c) for c in chunks) >> 20} MiB"


def read_files(path: str):
    leaks, errors = [], []
    for what, attempt in (
        (f"file {path}", lambda: open(path).read(64)),
        ("dir /", lambda: ",".join(os.listdir("/"))),
        ("dir .", lambda: ",".join(os.listdir("."))),
    ):
        try:
            leaks.append(f"LEAKED {what}: {attempt()}")
        except OSError as err:
            errors.append(f"{what}: {type(err).__name__}: {err}")
    if leaks:
        return "; ".join(leaks)
    raise fail(types.DponeError_Unsupported("blocked: " + "; ".join(errors)))


def connect(address: str):
    host, port = address.rsplit(":", 1)
    errors = []
    try:
        # A numeric address straight to connect: no name lookup on the way.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.connect((host, int(port)))
        return f"LEAKED socket connected to {address}"
    except OSError as err:
        errors.append(f"connect: {type(err).__name__}: {err}")
    try:
        return f"LEAKED name lookup: {socket.getaddrinfo('localhost', 80)}"
    except OSError as err:
        errors.append(f"lookup: {type(err).__name__}: {err}")
    raise fail(types.DponeError_Unsupported("blocked: " + "; ".join(errors)))


def read_env(name: str):
    count = len(os.environ)
    if name in os.environ:
        return f"LEAKED {name}={os.environ[name]} ({count} variables)"
    raise fail(types.DponeError_Unsupported(f"blocked: no variables visible ({count})"))


def read_clock():
    return f"clock: wall={time.time_ns() // 1000} monotonic={time.monotonic_ns()}"


def entropy():
    return (
        f"entropy: urandom={os.urandom(16).hex()} random={random.random()!r} "
        f"uuid4={uuid.uuid4()} {read_clock()}"
    )


class SandboxProbe(Strategy):
    def describe(self) -> StrategyInfo:
        return StrategyInfo(
            name="sandbox_probe_py",
            version="0.2.0",
            description="Test-only hostile Python component that attempts to escape the sandbox.",
            options=[
                required(ATTACK, OptionKind.TEXT, "One of loop, alloc, file, socket, env, clock, entropy."),
                optional(TARGET, OptionKind.TEXT, "File path, host:port or variable the attack uses."),
            ],
            needs=CapabilityNeeds(False, False, False),
            chunked=False,
        )

    def run(self, ctx) -> RunSummary:
        options = Options(ctx.options)
        attack = options.required_text(ATTACK)
        attacks = {
            "loop": spin,
            "alloc": alloc_gib,
            "file": lambda: read_files(options.required_text(TARGET)),
            "socket": lambda: connect(options.required_text(TARGET)),
            "env": lambda: read_env(options.required_text(TARGET)),
            "clock": read_clock,
            "entropy": entropy,
        }
        if attack not in attacks:
            raise invalid_config(ATTACK, f"unknown attack {attack!r}")
        return RunSummary(0, 0, 0, attacks[attack]())


WitWorld = export(SandboxProbe)
