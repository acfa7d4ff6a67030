"""``python -m gdsl``: command-line tools.

``python -m gdsl kernels`` lists the generated kernels in the cache directory (``gdsl.cache_dir()``,
``$GDSL_CACHE_DIR``), ``kernels show KEY`` prints one (a key or a unique prefix of it or of its
IR fingerprint), ``kernels clear`` deletes them. Why: the cache grows with every program and
back end; users should be able to see what is there, read a kernel, and reclaim the space.

Kernel files are ``{backend}_{pattern}_{fingerprint}_{contenthash}.py`` (gdsl.kernels.generated);
numba keeps its compiled code for each next to it, in ``__pycache__/<key>.*``, which counts
towards the kernel's size and is removed with it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Sequence, TextIO

from .kernels.cache import cache_dir

KERNEL_FILE = re.compile(r"^(?P<backend>[a-z0-9]+)_(?P<pattern>[a-z_]+)_(?P<fingerprint>[0-9a-f]{16})"
                         r"_(?P<hash>[0-9a-f]{12})\.py$")
_ROWS = re.compile(r"^# \w+ over (?P<rows>in-CSR|out-CSR) rows")


@dataclass(frozen=True)
class CachedKernel:
    """One generated kernel in the cache: its source file and numba's compiled files for it."""

    key: str                 # the file name without .py
    backend: str
    pattern: str
    fingerprint: str         # the kernel IR's fingerprint (also in the generated function's name)
    path: str
    extra: tuple[str, ...]   # numba's __pycache__ files for this module

    @property
    def files(self) -> tuple[str, ...]:
        return (self.path, *self.extra)

    @property
    def size(self) -> int:
        return sum(_stat(p, "st_size") for p in self.files)

    @property
    def last_used(self) -> float:
        """The latest access or modification time of its files (access times are only as good as
        the file system's atime policy)."""
        return max(max(_stat(p, "st_atime"), _stat(p, "st_mtime")) for p in self.files)

    @property
    def rows(self) -> str:
        """``in-CSR`` (forward reductions into destinations), ``out-CSR`` (into sources, as
        backward kernels), from the file's header; ``?`` when it does not say."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                for _, line in zip(range(8), fh):
                    found = _ROWS.match(line)
                    if found:
                        return found.group("rows")
        except OSError:
            pass
        return "?"


def _stat(path: str, field: str) -> float:
    try:
        return getattr(os.stat(path), field)
    except OSError:
        return 0


def cached_kernels(directory: str | None = None) -> list[CachedKernel]:
    """The kernels in ``directory`` (default: the cache directory), most recently used first."""
    directory = directory or cache_dir()
    pycache = os.path.join(directory, "__pycache__")
    compiled: dict[str, list[str]] = {}
    if os.path.isdir(pycache):
        for name in os.listdir(pycache):
            compiled.setdefault(name.split(".", 1)[0], []).append(os.path.join(pycache, name))
    out = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        found = KERNEL_FILE.match(name)
        if found is None:
            continue
        key = name[:-3]
        out.append(CachedKernel(key, found.group("backend"), found.group("pattern"), found.group("fingerprint"),
                                os.path.join(directory, name), tuple(sorted(compiled.get(key, ())))))
    out.sort(key=lambda k: (-k.last_used, k.key))
    return out


def find_kernel(kernels: list[CachedKernel], key: str) -> CachedKernel:
    """The kernel whose key (or IR fingerprint) is ``key`` or starts with it; LookupError if none
    or several match."""
    exact = [k for k in kernels if key in (k.key, k.fingerprint)]
    matches = exact or [k for k in kernels if k.key.startswith(key) or k.fingerprint.startswith(key)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no cached kernel matches {key!r}")
    shown = "\n  ".join(k.key for k in matches[:10])
    raise LookupError(f"{len(matches)} cached kernels match {key!r}; give more of the key:\n  {shown}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def format_table(kernels: list[CachedKernel], directory: str) -> str:
    """The ``kernels`` listing: one row per kernel and a total."""
    if not kernels:
        return f"no cached kernels in {directory}"
    rows = [("KEY", "BACKEND", "PATTERN", "ROWS", "SIZE", "LAST USED")]
    rows += [(k.key, k.backend, k.pattern, k.rows, _human(k.size), _when(k.last_used)) for k in kernels]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i != 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             .rstrip() for r in rows]
    total = sum(k.size for k in kernels)
    lines.append(f"{len(kernels)} kernel(s), {_human(total)} in {directory}")
    return "\n".join(lines)


def show(kernel: CachedKernel) -> str:
    """One kernel: where it is, what it takes on disk, and its source (whose header is the IR)."""
    lines = [f"key:       {kernel.key}", f"backend:   {kernel.backend}", f"pattern:   {kernel.pattern}",
             f"rows:      {kernel.rows}", f"IR fingerprint: {kernel.fingerprint}",
             f"file:      {kernel.path}", f"size:      {_human(kernel.size)} ({len(kernel.files)} file(s))",
             f"last used: {_when(kernel.last_used)}", ""]
    with open(kernel.path, encoding="utf-8") as fh:
        lines.append(fh.read().rstrip())
    return "\n".join(lines)


def clear(directory: str | None = None) -> tuple[int, int]:
    """Delete every cached kernel and numba's compiled files for it (nothing else in the
    directory); returns (kernels removed, bytes freed)."""
    directory = directory or cache_dir()
    count = freed = 0
    for kernel in cached_kernels(directory):
        size = kernel.size
        for path in kernel.files:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        count, freed = count + 1, freed + size
    pycache = os.path.join(directory, "__pycache__")
    if os.path.isdir(pycache) and not os.listdir(pycache):
        os.rmdir(pycache)
    return count, freed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gdsl", description="gdsl command-line tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    kernels = commands.add_parser(
        "kernels", help="list, show or clear the generated kernels in the cache",
        description="The generated kernels in the cache directory ($GDSL_CACHE_DIR, default ~/.cache/gdsl). "
                    "Without an action: list them (key, back end, pattern, CSR rows, size on disk including "
                    "numba's compiled code, last used).")
    kernels.add_argument("--dir", help="the cache directory (default: gdsl.cache_dir())")
    actions = kernels.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="list the cached kernels (the default)")
    show_parser = actions.add_parser("show", help="print one kernel: its file, size and source (IR in the header)")
    show_parser.add_argument("key", help="a kernel key, or a unique prefix of a key or of an IR fingerprint")
    actions.add_parser("clear", help="delete every cached kernel (and numba's compiled code for it)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "kernels":
        parser.print_help(out)
        return 0 if args.command is None else 2
    directory = os.path.abspath(os.path.expanduser(args.dir)) if args.dir else cache_dir()
    if args.action in (None, "list"):
        print(format_table(cached_kernels(directory), directory), file=out)
        return 0
    if args.action == "show":
        try:
            kernel = find_kernel(cached_kernels(directory), args.key)
        except LookupError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 1
        print(show(kernel), file=out)
        return 0
    count, freed = clear(directory)
    print(f"removed {count} kernel(s), {_human(freed)}, from {directory}", file=out)
    return 0
