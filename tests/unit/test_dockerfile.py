"""The processing image's Dockerfile, checked against what the package declares.

No Docker daemon is needed: the Dockerfile and .dockerignore are parsed as text. The helpers
below are also run on altered copies, so each check is shown to reject a broken file.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from prepflow.jobs.template import StepTemplate

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "container" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# Libraries the image adds for user scripts, beyond what prepflow declares.
SCRIPT_LIBRARIES = ("pandas", "scikit-learn")
ROOT_USERS = {"root", "0"}


def instructions(text: str) -> list[tuple[str, str]]:
    """Return the (keyword, arguments) pairs of a Dockerfile, continuation lines joined."""
    result = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment between continuation lines
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, arguments = current.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        current = ""
    return result


def arguments_of(text: str, keyword: str) -> list[str]:
    return [arguments for name, arguments in instructions(text) if name == keyword]


def pip_installs(text: str) -> list[list[str]]:
    """Return the arguments of every ``pip install`` command in the RUN instructions."""
    commands = []
    for run in arguments_of(text, "RUN"):
        words = shlex.split(run)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";"):
                if command[:2] in (["pip", "install"], ["pip3", "install"]):
                    commands.append(command[2:])
                command = []
            else:
                command.append(word)
    return commands


def installed_requirements(text: str) -> dict[str, Requirement]:
    """Return the requirements that ``pip install`` names, by canonical name (not paths)."""
    found = {}
    for arguments in pip_installs(text):
        for argument in arguments:
            if argument.startswith(("-", "/", ".")):
                continue
            requirement = Requirement(argument)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def declared_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def pinned_version(requirement: Requirement) -> str | None:
    """Return the version of an exact ``==`` pin, or None when the requirement is not one."""
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
        return specifiers[0].version
    return None


def dependency_problems(text: str, declared: list[Requirement]) -> list[str]:
    """List each declared dependency that the Dockerfile misses, leaves unpinned or pins wrong."""
    installed = installed_requirements(text)
    problems = []
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        pin = installed.get(name)
        if pin is None:
            problems.append(f"{name}: not installed")
            continue
        version = pinned_version(pin)
        if version is None:
            problems.append(f"{name}: {pin} is not an exact == pin")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{name}: {version} is outside the declared {requirement.specifier}")
        if not requirement.extras <= pin.extras:
            problems.append(f"{name}: extras {sorted(requirement.extras)} missing")
    return problems


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate a .dockerignore pattern as Docker reads it: ``*`` stops at ``/``, ``**`` not."""
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts) + r"\Z")


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Return whether .dockerignore ``patterns`` leave ``path`` (relative) out of the context.

    As in Docker, a pattern that matches a parent folder matches the path, and the last
    matching pattern decides; ``!`` re-includes.
    """
    segments = path.strip("/").split("/")
    candidates = ["/".join(segments[:count]) for count in range(1, len(segments) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def ignore_patterns(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def copy_sources(text: str) -> list[str]:
    """Return the context paths of every COPY and ADD, without --from stages."""
    sources = []
    for keyword in ("COPY", "ADD"):
        for arguments in arguments_of(text, keyword):
            words = shlex.split(arguments)
            if any(word.startswith("--from") for word in words):
                continue
            paths = [word for word in words if not word.startswith("--")]
            sources += paths[:-1]
    return sources


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def ignored() -> list[str]:
    return ignore_patterns(DOCKERIGNORE.read_text())


def test_installs_declared_dependencies(dockerfile: str) -> None:
    declared = declared_dependencies()
    assert declared, "pyproject.toml declares no [project].dependencies"
    assert dependency_problems(dockerfile, declared) == []


def test_script_libraries_pinned(dockerfile: str) -> None:
    installed = installed_requirements(dockerfile)
    for name in SCRIPT_LIBRARIES:
        assert name in installed, f"{name} is not installed"
        assert pinned_version(installed[name]) is not None, f"{installed[name]} is not pinned"


@pytest.mark.parametrize(
    ("replaced", "replacement", "problem"),
    [
        ('"polars==2.1.0" \\\n', "", "polars: not installed"),
        ('"numpy==2.4.6"', '"numpy>=2"', "numpy: numpy>=2 is not an exact == pin"),
        ('"pydantic==2.14.4"', '"pydantic==1.10.0"', "pydantic: 1.10.0 is outside the declared"),
        ('"typer==0.29.2"', '"typer==1.0.0"', "typer: 1.0.0 is outside the declared"),
    ],
)
def test_dependency_check_rejects_drift(
    dockerfile: str, replaced: str, replacement: str, problem: str
) -> None:
    assert replaced in dockerfile, f"the Dockerfile no longer contains {replaced!r}"
    altered = dockerfile.replace(replaced, replacement)
    problems = dependency_problems(altered, declared_dependencies())
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_dependency_check_rejects_new_declaration(dockerfile: str) -> None:
    declared = [*declared_dependencies(), Requirement("httpx>=0.27")]
    assert dependency_problems(dockerfile, declared) == ["httpx: not installed"]


def test_package_installed_without_deps(dockerfile: str) -> None:
    commands = pip_installs(dockerfile)
    package_installs = [c for c in commands if any(a.startswith("/") for a in c)]
    assert len(package_installs) == 1
    assert "--no-deps" in package_installs[0]
    runs = " ".join(arguments_of(dockerfile, "RUN"))
    assert "pip check" in runs, "without pip check a missing dependency is found only in a job"


def test_base_image_pinned_python(dockerfile: str) -> None:
    bases = arguments_of(dockerfile, "FROM")
    assert len(bases) == 1
    image, _, tag = bases[0].split()[0].partition(":")
    assert image == "python"
    match = re.fullmatch(r"(3\.1[12])\.(\d+)-slim-[a-z]+", tag)
    assert match, f"base image tag {tag!r} is not a pinned 3.11/3.12 slim release"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{match[1]}.{match[2]}")


def test_runs_as_root_so_sagemaker_mounts_are_writable(dockerfile: str) -> None:
    # SageMaker mounts /opt/ml/processing/* owned by root: a USER other than root could not
    # write the job's outputs (see the comment in the Dockerfile).
    users = [user.split(":")[0] for user in arguments_of(dockerfile, "USER")]
    assert not users or users[-1] in ROOT_USERS
    runs = " ".join(arguments_of(dockerfile, "RUN"))
    assert "/opt/ml/processing" in runs
    assert "/opt/ml/output" in runs


def test_entrypoint_is_built_in_step(dockerfile: str) -> None:
    entrypoints = arguments_of(dockerfile, "ENTRYPOINT")
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == list(StepTemplate.built_in().entrypoint)


def test_copied_paths_exist_in_context(dockerfile: str, ignored: list[str]) -> None:
    sources = copy_sources(dockerfile)
    assert "src" in sources
    assert "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not found in the repository"
        assert not is_ignored(source, ignored), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/infra/conftest.py",
        "examples/data/employees.csv",
        "cdk.out/manifest.json",
        "bench/out/x.json",
        "src/prepflow/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_dockerignore_excludes(path: str, ignored: list[str]) -> None:
    assert is_ignored(path, ignored)


@pytest.mark.parametrize(
    "path", ["src/prepflow/processing/__main__.py", "pyproject.toml", "container/Dockerfile"]
)
def test_dockerignore_keeps(path: str, ignored: list[str]) -> None:
    assert not is_ignored(path, ignored)


def test_ignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!src", "**/__pycache__"]
    assert is_ignored("README.md", patterns)
    assert not is_ignored("src/a/b.py", patterns)
    assert is_ignored("src/a/__pycache__/b.pyc", patterns)
    # Patterns start at the context root, and "*" does not match "/".
    assert not is_ignored("x/src", ["s*"])
    assert is_ignored("src/a.py", ["s*/a.py"])
    assert not is_ignored("src/b/a.py", ["src*a.py"])
