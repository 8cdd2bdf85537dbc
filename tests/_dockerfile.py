"""The poller's Dockerfile read as instructions, so tests can run its exact steps (no
container registry is reachable where the tests run, so the image itself is not built)."""

from __future__ import annotations

from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "infra" / "poller" / "Dockerfile"


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuation lines joined, comments dropped."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.lstrip().startswith("#"):
            lines.append(line)
    text = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def dockerfile_runs(path: Path = DOCKERFILE) -> list[str]:
    return [rest for keyword, rest in dockerfile_instructions(path) if keyword == "RUN"]
