"""Reading py-spy's collapsed stacks (``--format raw``): where the poller spends its CPU. Pure.

Views of the same samples, each a list of ``(label, samples, share)`` sorted by samples:

* :func:`by_package` — the leaf frame's package (``aiohttp``, ``botocore``, ``asyncio`` …):
  which library burns the CPU;
* :func:`by_own_function` — the innermost frame in our own code (``adapter/…``) of each sample,
  callees included: which of *our* functions is responsible for that CPU;
* :func:`top_self` — the leaf function itself;
* :func:`by_thread` — the event loop thread against the worker threads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "Stack",
    "by_own_function",
    "by_package",
    "by_thread",
    "parse_collapsed",
    "summary",
    "top_self",
]

Stack = tuple[tuple[str, ...], int]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r".*/site-packages/")
_STDLIB = re.compile(r".*/lib/python3\.\d+/")


def parse_collapsed(text: str) -> list[Stack]:
    """``frame;frame;…;frame count`` lines → stacks, outermost frame first."""
    stacks: list[Stack] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        stacks.append((tuple(frames.split(";")), int(count)))
    return stacks


def _split(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["func"], match["path"]


def _short_path(path: str) -> str:
    """Path from the import root: py-spy already shortens most; full paths are cut here."""
    if "/adapter/" in path:
        return "adapter/" + path.rsplit("/adapter/", 1)[1]
    site = _SITE.sub("", path)
    if site != path:
        return site
    return _STDLIB.sub("", path)


# Frames that only start the event loop: samples under them and no deeper own frame are the
# loop's own work (I/O callbacks, protocol parsing), not something one of our functions did.
_ENTRY_POINTS = ("adapter/cli.py", "adapter/__main__.py")


def _own(path: str) -> bool:
    short = _short_path(path)
    return short.startswith("adapter/") and short not in _ENTRY_POINTS


def _package(path: str) -> str:
    short = _short_path(path)
    if not short:
        return "(native)"
    parts = short.split("/")
    if parts[0] == "adapter" and len(parts) > 2:
        return "adapter/" + parts[1]
    return parts[0].removesuffix(".py") if len(parts) == 1 else parts[0]


def _thread_kind(frames: tuple[str, ...]) -> str:
    text = ";".join(frames)
    if "concurrent/futures/thread.py" in text:
        return "worker threads (asyncio.to_thread: boto3)"
    if "run_forever" in text or "_run_once" in text:
        return "event loop thread"
    return "other"


def _ranked(counter: Counter[str], total: int, limit: int) -> list[tuple[str, int, float]]:
    return [(label, n, n / total if total else 0.0) for label, n in counter.most_common(limit)]


def _total(stacks: Sequence[Stack]) -> int:
    return sum(count for _, count in stacks)


def by_package(stacks: Sequence[Stack], limit: int = 12) -> list[tuple[str, int, float]]:
    counter: Counter[str] = Counter()
    for frames, count in stacks:
        counter[_package(_split(frames[-1])[1])] += count
    return _ranked(counter, _total(stacks), limit)


def top_self(stacks: Sequence[Stack], limit: int = 15) -> list[tuple[str, int, float]]:
    counter: Counter[str] = Counter()
    for frames, count in stacks:
        func, path = _split(frames[-1])
        counter[f"{func} ({_short_path(path)})"] += count
    return _ranked(counter, _total(stacks), limit)


def by_own_function(stacks: Sequence[Stack], limit: int = 15) -> list[tuple[str, int, float]]:
    counter: Counter[str] = Counter()
    for frames, count in stacks:
        label = "(outside our functions: event loop I/O callbacks, library tasks)"
        for frame in reversed(frames):
            func, path = _split(frame)
            if _own(path):
                label = f"{func} ({_short_path(path)})"
                break
        counter[label] += count
    return _ranked(counter, _total(stacks), limit)


def by_thread(stacks: Sequence[Stack]) -> list[tuple[str, int, float]]:
    """Event loop vs worker threads: they share one GIL, so both count against throughput."""
    counter: Counter[str] = Counter()
    for frames, count in stacks:
        counter[_thread_kind(frames)] += count
    return _ranked(counter, _total(stacks), 5)


def summary(stacks: Iterable[Stack], limit: int = 12) -> dict[str, object]:
    """All three views, JSON-ready, for results.json and the closing report."""
    listed = list(stacks)

    def rows(ranked: list[tuple[str, int, float]]) -> list[dict[str, object]]:
        return [{"where": w, "samples": n, "share": round(s, 4)} for w, n, s in ranked]

    return {
        "samples": _total(listed),
        "by_thread": rows(by_thread(listed)),
        "by_package": rows(by_package(listed, limit)),
        "by_own_function": rows(by_own_function(listed, limit)),
        "top_self": rows(top_self(listed, limit)),
    }
