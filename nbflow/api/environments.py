"""How the current environment differs from the one a run recorded (Python, platform,
and the version of each package the run used): told before a reproduction runs."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass

from nbflow.store.provenance import Provenance

__all__ = ["EnvironmentDifference", "environment_differences"]


@dataclass(frozen=True)
class EnvironmentDifference:
    """One way the current environment differs from a run's: ``what`` (``python``,
    ``platform`` or ``package NAME``), its ``recorded`` and ``current`` values (None:
    not installed)."""

    what: str
    recorded: str | None
    current: str | None

    def describe(self) -> str:
        """As a sentence fragment: ``package numpy: 1.26.4 recorded, 2.1.0 here``."""
        here = self.current if self.current is not None else "not installed"
        return f"{self.what}: {self.recorded} recorded, {here} here"


def environment_differences(provenance: Provenance) -> list[EnvironmentDifference]:
    """How this process's environment differs from the one ``provenance`` recorded."""
    env = provenance.environment
    if not env.python:
        return []
    found = []
    if env.python != platform.python_version():
        found.append(EnvironmentDifference("python", env.python, platform.python_version()))
    if env.platform != platform.platform():
        found.append(EnvironmentDifference("platform", env.platform, platform.platform()))
    for name, version in sorted(env.packages.items()):
        try:
            current: str | None = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            current = None
        if current != version:
            found.append(EnvironmentDifference(f"package {name}", version, current))
    return found
