"""pytest plugin (`-p cpu_split`, bench/ on PYTHONPATH): at the end of the run, where the test
JVM's CPU went, read from /proc, written as JSON to $CPU_SPLIT_OUT.

Threads are grouped by name: `jit_c2`/`jit_c1` (the JIT's compiler threads), `gc` (the
collector's threads and the VM thread that runs its pauses), `driver` (py4j's and the main
thread: planning, Delta's log, the commits), `tasks` (executor task threads, with every thread
that has already ended: idle task threads end after a minute, and their CPU stays in the
process's total) and `other`. `compiled`: methods the JIT compiled
(`jstat -compiler`). Used by bench/bench_jvm_options.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter

TICK = os.sysconf("SC_CLK_TCK")
KINDS = (
    ("C2 Compiler", "jit_c2"),
    ("C1 Compiler", "jit_c1"),
    ("GC Thread|G1 |GC |ParGC|VM Thread", "gc"),
    ("Executor task", "tasks"),
    ("^Thread-|^py4j|^main$", "driver"),
)


def _cpu_seconds(stat_path: str) -> tuple[str, float]:
    """(thread or process name, user + system CPU seconds) from a /proc stat file."""
    with open(stat_path) as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2 :].split()
    return text[text.index("(") + 1 : text.rindex(")")], (int(fields[11]) + int(fields[12])) / TICK


def _child_jvms() -> list[int]:
    """This process's children that are JVMs (the Spark driver PySpark started)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and text[text.index("(") + 1 : text.rindex(")")] == "java":
            found.append(int(entry))
    return found


def _kind(name: str) -> str:
    return next((kind for pattern, kind in KINDS if re.search(pattern, name)), "other")


def pytest_sessionfinish(session) -> None:
    out = os.environ.get("CPU_SPLIT_OUT")
    jvms = _child_jvms()
    if not out or not jvms:
        return
    pid = jvms[0]
    cpu: Counter = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, seconds = _cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
        cpu[_kind(name)] += seconds
    _, total = _cpu_seconds(f"/proc/{pid}/stat")
    cpu["tasks"] += total - sum(cpu.values())  # threads that have ended
    jstat = subprocess.run(["jstat", "-compiler", str(pid)], capture_output=True, text=True)
    lines = jstat.stdout.split("\n")
    compiled = int(lines[1].split()[0]) if len(lines) > 1 and lines[1].strip() else None
    with open(out, "w") as fh:
        json.dump({"jvm_cpu": total, "cpu": dict(cpu), "compiled": compiled}, fh)
