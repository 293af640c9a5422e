"""Prints pyproject.toml's lower bounds as exact pins, one a line, for pip's --constraint.

  python .ci/floor.py [EXTRA ...] > floor.txt

Every ``NAME>=VERSION`` among the dependencies, and among the named extras, becomes ``NAME==VERSION``;
requirements without a lower bound are left to pip. The floor leg of .ci/run installs with these, so the
bounds that pyproject.toml declares are the versions that leg tests.
"""

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
LOWER = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def pins(extras: list[str]) -> list[str]:
    """The exact pins of the dependencies' and ``extras``' lower bounds.

    Args:
      extras: names of ``[project.optional-dependencies]`` to include.

    Returns:
      ``NAME==VERSION`` lines, in pyproject.toml's order.

    Raises:
      SystemExit: an extra that pyproject.toml does not declare.
    """
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:
        raise SystemExit(f"floor.py: extra {unknown[0]!r} is not in pyproject.toml; expected one of {sorted(optional)}")
    requirements = list(project["dependencies"]) + [r for name in extras for r in optional[name]]
    found = [LOWER.match(requirement) for requirement in requirements]
    return [f"{match[1]}=={match[3]}" for match in found if match]


if __name__ == "__main__":
    print("\n".join(pins(sys.argv[1:])))
