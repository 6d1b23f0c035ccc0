"""environment.yml mirrors pyproject.toml: same dependencies, same version constraints.

pyproject.toml is the source of truth; conda users get the same packages through
environment.yml's `pip:` list. A dependency added, dropped or re-pinned in one file and
not the other fails here, naming the package and both constraints.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT_YML = ROOT / "environment.yml"

#: pip options allowed in environment.yml's pip list: only the project itself.
PIP_OPTIONS = {"-e ."}


def requirements_by_name(lines: Iterable[str], source: str) -> dict[str, Requirement]:
    """Parse PEP 508 lines into {canonical name: requirement}; a name twice is an error."""
    found: dict[str, Requirement] = {}
    for line in lines:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in found:
            raise ValueError(f"{source}: {requirement.name} is listed twice")
        found[name] = requirement
    return found


def requirement_differences(
    expected: Mapping[str, Requirement], actual: Mapping[str, Requirement]
) -> list[str]:
    """One line per disagreement between the source of truth and its mirror."""
    problems = [
        f"{expected[name]} is in pyproject.toml but not in environment.yml"
        for name in sorted(expected.keys() - actual.keys())
    ]
    problems += [
        f"{actual[name]} is in environment.yml but not in pyproject.toml"
        for name in sorted(actual.keys() - expected.keys())
    ]
    for name in sorted(expected.keys() & actual.keys()):
        want, have = expected[name], actual[name]
        if want.specifier != have.specifier:
            problems.append(
                f"{name}: pyproject.toml says {str(want.specifier) or 'any version'!r}, "
                f"environment.yml says {str(have.specifier) or 'any version'!r}"
            )
        if want.extras != have.extras:
            problems.append(
                f"{name}: extras differ, pyproject.toml {sorted(want.extras)}, "
                f"environment.yml {sorted(have.extras)}"
            )
        if str(want.marker) != str(have.marker):
            problems.append(
                f"{name}: markers differ, pyproject.toml {want.marker}, "
                f"environment.yml {have.marker}"
            )
    return problems


def _pyproject() -> dict[str, Any]:
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)


def _environment() -> dict[str, Any]:
    with ENVIRONMENT_YML.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    assert isinstance(loaded, dict), "environment.yml is not a mapping"
    return loaded


def _conda_and_pip(environment: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    conda: list[str] = []
    pip: list[str] = []
    for entry in environment.get("dependencies") or []:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"unexpected section in dependencies: {entry}"
            pip.extend(entry["pip"])
        else:
            conda.append(str(entry))
    return conda, pip


def pyproject_requirements() -> dict[str, Requirement]:
    project = _pyproject()["project"]
    lines = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    return requirements_by_name(lines, "pyproject.toml")


def environment_requirements() -> dict[str, Requirement]:
    _, pip = _conda_and_pip(_environment())
    lines = [line for line in pip if line not in PIP_OPTIONS]
    return requirements_by_name(lines, "environment.yml")


# --- the comparison itself, on hand-made cases --------------------------------------------


def _reqs(*lines: str) -> dict[str, Requirement]:
    return requirements_by_name(lines, "test")


def test_same_lists_in_another_order_agree() -> None:
    assert (
        requirement_differences(
            _reqs("numpy>=1.26,<2", "psycopg[binary]>=3.1"),
            _reqs("psycopg[binary]>=3.1", "numpy<2,>=1.26"),
        )
        == []
    )


def test_names_compare_in_canonical_form() -> None:
    assert requirement_differences(_reqs("types-PyYAML"), _reqs("types_pyyaml")) == []


@pytest.mark.parametrize(
    ("pyproject", "environment", "mentions"),
    [
        (["numpy>=1.26,<2", "pandas>=2.2"], ["numpy>=1.26,<2"], "pandas>=2.2 is in pyproject"),
        (["numpy>=1.26,<2"], ["numpy>=1.26,<2", "scipy"], "scipy is in environment.yml"),
        (["numpy>=1.26,<2"], ["numpy>=1.26"], "numpy: pyproject.toml says"),
        (["torch==2.13.0"], ["torch"], "'any version'"),
        (["psycopg[binary]>=3.1"], ["psycopg>=3.1"], "extras differ"),
        (["tomli; python_version<'3.11'"], ["tomli"], "markers differ"),
    ],
)
def test_each_kind_of_drift_is_reported(
    pyproject: list[str], environment: list[str], mentions: str
) -> None:
    problems = requirement_differences(_reqs(*pyproject), _reqs(*environment))
    assert len(problems) == 1
    assert mentions in problems[0]


def test_a_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"(?i)numpy is listed twice"):
        _reqs("numpy>=1.26", "NumPy<2")


# --- the real files ----------------------------------------------------------------------


def test_environment_yml_mirrors_pyproject() -> None:
    problems = requirement_differences(pyproject_requirements(), environment_requirements())
    assert not problems, "environment.yml has drifted from pyproject.toml:\n" + "\n".join(problems)


def test_environment_uses_conda_forge_and_keeps_packages_under_pip() -> None:
    environment = _environment()
    assert environment.get("channels") == ["conda-forge"]
    conda, pip = _conda_and_pip(environment)
    names = sorted(spec.split("=")[0].split("<")[0].split(">")[0].strip() for spec in conda)
    assert names == ["pip", "python"], (
        "only python and pip come from conda; every package goes under pip: with "
        f"pyproject.toml's constraint (found conda packages {names})"
    )
    options = [line for line in pip if line.startswith("-")]
    assert set(options) <= PIP_OPTIONS, f"unexpected pip options {options}"


def test_python_version_satisfies_requires_python() -> None:
    conda, _ = _conda_and_pip(_environment())
    pins = [spec for spec in conda if spec.startswith("python")]
    assert len(pins) == 1, f"expected one python pin, found {pins}"
    name, _, version = pins[0].partition("=")
    assert name == "python" and version and not version.startswith("="), (
        f"pin Python to a release series as python=X.Y, found {pins[0]!r}"
    )
    requires_python = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires_python.contains(f"{version}.0"), (
        f"environment.yml's python={version} is outside requires-python {requires_python}"
    )
