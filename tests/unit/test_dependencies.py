"""Dependency hygiene: every runtime dependency is bounded below its next major version, and
both lock files pin every package (with hashes) that pyproject.toml asks for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;]+)(?: ;.*)? \\$")


def _locked(name: str) -> dict[str, Version]:
    """``{package: version}`` of a lock file; every pin must carry sha256 hashes."""
    lines = (ROOT / name).read_text().splitlines()
    pins: dict[str, Version] = {}
    for index, line in enumerate(lines):
        if not line or line.startswith((" ", "#")):
            continue
        match = _PIN.match(line)
        assert match, f"{name}: not a hashed pin: {line!r}"
        assert lines[index + 1].strip().startswith("--hash=sha256:"), f"{name}: {line} has no hash"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_runtime_dependencies_are_bounded_below_the_next_major_of_the_locked_version() -> None:
    locked = _locked("requirements.lock")
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        uppers = [s for s in requirement.specifier if s.operator == "<"]
        assert uppers, f"{text!r} has no upper bound"
        version = locked[canonicalize_name(requirement.name)]
        # The next major of what is used (0.x: below 1.0).
        assert Version(uppers[0].version) == Version(f"{version.major + 1}"), (text, version)


def test_lock_files_pin_everything_pyproject_asks_for_within_its_bounds() -> None:
    runtime, dev = _locked("requirements.lock"), _locked("requirements-dev.lock")
    extras = PYPROJECT["project"]["optional-dependencies"]["dev"]
    for lock, wanted in ((runtime, PYPROJECT["project"]["dependencies"]), (dev, extras)):
        for text in wanted:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{requirement.name} is not locked"
            assert lock[name] in requirement.specifier, (text, lock[name])
    # One version of each package, whichever lock it is installed from.
    for name, version in runtime.items():
        assert dev.get(name) == version, (name, version, dev.get(name))
    # The build backend is locked too (make setup builds the project without isolation).
    assert "setuptools" in runtime
    assert "wheel" in runtime
