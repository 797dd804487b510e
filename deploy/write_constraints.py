"""Write deploy/constraints.txt: the installed version of every runtime dependency of unpaired.

The images install the project under these pins, so they run what the tests ran with. Run in
the project's venv after changing dependencies: ``.venv/bin/python deploy/write_constraints.py``.
"""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

from packaging.requirements import Requirement

OUT = Path(__file__).with_name("constraints.txt")
HEADER = """\
# The versions the tests ran with: every image installs the project under these pins
# (`pip install --constraint deploy/constraints.txt .`). Regenerate after changing the
# dependencies: .venv/bin/python deploy/write_constraints.py
"""


def closure(
    name: str, extras: tuple[str, ...] = (), found: dict[str, str] | None = None
) -> dict[str, str]:
    """`name` and everything it needs here (markers evaluated for this machine), by version."""
    found = {} if found is None else found
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return found
    key = dist.metadata["Name"].lower().replace("_", "-")
    first = key not in found
    found[key] = dist.version
    for raw in dist.requires or []:
        requirement = Requirement(raw)
        wanted = requirement.marker is None or any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
        )
        if wanted and (first or extras):
            closure(requirement.name, tuple(requirement.extras), found)
    return found


def main() -> None:
    pins = closure("unpaired")
    pins.pop("unpaired", None)
    OUT.write_text(HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins)))
    print(f"wrote {len(pins)} pins to {OUT}")


if __name__ == "__main__":
    main()
