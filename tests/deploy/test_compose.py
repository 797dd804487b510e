"""docker-compose.yml, the Dockerfiles and .env.example, checked offline (no Docker engine here).

The compose file is validated against the Compose Specification's JSON schema (vendored in
tests/deploy/schemas/, see its README) and resolved for every profile; every command, file,
variable and metric it or the Dockerfiles name must exist in the project, and the API and
workers must start exactly as cli.launch (and so the end-to-end tests) start them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from cli.launch import API_COMMAND, DISTRIBUTED_ENV, WORKER_COMMAND
from service.api.metrics import Metrics
from service.settings import Settings
from service.settings_env import env_example, variable
from tests.service.servers import service_env

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
PROFILES = [(), ("cpu",), ("monitoring",), ("flower",), ("cpu", "monitoring", "flower")]
SETTINGS_VARIABLES = {variable(name) for name in Settings.model_fields}
#: what `unpaired serve` / `unpaired worker` run as in each service
ROLES = {"api": API_COMMAND, "worker": WORKER_COMMAND, "worker-cpu": WORKER_COMMAND}
#: files a user brings (`make demo-model` makes it), not the repository
USER_PATHS = {"./model-store"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys resolved
    return loaded


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` with nothing set: every default, as on a fresh machine."""

    def default(match: re.Match[str]) -> str:
        if match.group(2) is None:
            raise AssertionError(f"{match.group(0)} has no default: compose would warn")
        return match.group(2)

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", default, text)


def active(compose: dict[str, Any], profiles: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return {
        name: service
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def compose_validator() -> jsonschema.Draft7Validator:
    """The schema says draft-07 (in a spelling jsonschema does not recognise by itself)."""
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_the_compose_file_follows_the_compose_specification() -> None:
    validator = compose_validator()
    # validated as written (interpolation is compose's job) and with every default filled in
    validator.validate(yaml.safe_load(COMPOSE.read_text()))
    validator.validate(yaml.safe_load(interpolate(COMPOSE.read_text())))


def test_the_schema_refuses_a_broken_compose_file() -> None:
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["api"]["ports"] = {"8000": 8000}  # a list is required
    with pytest.raises(jsonschema.ValidationError):
        compose_validator().validate(broken)


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_every_profile_resolves(compose: dict[str, Any], profiles: tuple[str, ...]) -> None:
    services = active(compose, profiles)
    assert {"redis", "api"} <= services.keys()
    volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} needs {dependency}, not in {profiles}"
        for mount in service.get("volumes", []):
            source = interpolate(mount).split(":")[0]
            if source.startswith((".", "/")):
                assert source in USER_PATHS or (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
    if "cpu" in profiles:
        assert "worker-cpu" in services
    if "monitoring" in profiles:
        assert {"prometheus", "grafana"} <= services.keys()


def test_the_gpu_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in compose["services"]["worker-cpu"]
    assert compose["services"]["worker-cpu"]["environment"]["UNPAIRED_DEVICE"] == "cpu"


def test_redis_keeps_the_queue_safe(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(mount.endswith(":/data") for mount in redis["volumes"])


def test_services_start_as_the_tests_start_them(compose: dict[str, Any]) -> None:
    """One way to start each process: cli.launch, which tests/service/servers.py uses."""
    services = compose["services"]
    for name, command in ROLES.items():
        assert services[name]["command"] == list(command), name
        environment = services[name]["environment"]
        assert set(DISTRIBUTED_ENV) <= environment.keys(), name
        assert set(environment) <= SETTINGS_VARIABLES, name
    # the tests give their processes the same variables (a broker URL in distributed tests)
    tested = service_env(Path("/store"), broker_url="redis://127.0.0.1:6379/0")
    assert set(DISTRIBUTED_ENV) <= tested.keys()
    assert services["api"]["environment"]["UNPAIRED_HOST"] == "0.0.0.0"
    port = services["api"]["environment"]["UNPAIRED_PORT"]
    assert any(interpolate(p).endswith(f":{port}") for p in services["api"]["ports"])
    assert set(Settings.model_fields) >= {"host", "port", "device"}


def test_every_unpaired_variable_named_anywhere_exists() -> None:
    named = set()
    for path in [COMPOSE, *ROOT.glob("deploy/Dockerfile.*"), ROOT / ".env.example"]:
        named |= set(re.findall(r"\bUNPAIRED_[A-Z0-9_]+\b", path.read_text()))
    assert named, "no variables found: the pattern is wrong"
    assert named <= SETTINGS_VARIABLES, named - SETTINGS_VARIABLES


def test_env_example_is_generated_from_the_settings() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "regenerate: unpaired settings --env-example > .env.example"
    listed = set(re.findall(r"^# (UNPAIRED_[A-Z0-9_]+)=", text, re.MULTILINE))
    assert listed == SETTINGS_VARIABLES


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "deploy" / name).read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize(
    ("name", "command"),
    [("Dockerfile.api", API_COMMAND), ("Dockerfile.worker", WORKER_COMMAND)],
)
def test_dockerfiles_are_multi_stage_pinned_non_root_and_start_as_launch_says(
    name: str, command: tuple[str, ...]
) -> None:
    instructions = dockerfile(name)
    args = dict(
        a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a
    )  # base images are ARGs with pinned defaults
    bases = [a.split()[0] for kind, a in instructions if kind == "FROM"]
    assert len(bases) >= 2, "multi-stage"
    for base in bases:
        image = args.get(base.strip("${}"), base)
        assert re.search(r":\d[\w.-]*$", image), f"{image} is not pinned to a version"
    final = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM") :]
    kinds = [kind for kind, _ in final]
    assert "HEALTHCHECK" in kinds
    user = [a for kind, a in final if kind == "USER"]
    assert user and not user[-1].startswith(("0", "root")), "runs as root"
    cmd = [a for kind, a in final if kind == "CMD"]
    assert json.loads(cmd[-1]) == list(command)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for kind, arguments in instructions:
        if kind == "COPY" and "--from" not in arguments:
            *sources, _ = shlex.split(arguments)
            for source in sources:
                assert (ROOT / source).exists(), source
                assert f"!{source}" in ignored or f"!{source}/" in ignored, (
                    f"{source} is left out of the build context by .dockerignore"
                )


def test_the_monitoring_profile_scrapes_what_the_api_exports() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    exported = {
        sample.name for family in Metrics().registry.collect() for sample in family.samples
    } | {family.name for family in Metrics().registry.collect()}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/unpaired.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\bunpaired_\w+", query)}
    histograms = {f"{name}_bucket" for name in exported} | {f"{n}_sum" for n in exported}
    counts = {f"{name}_count" for name in exported} | {f"{n}_total" for n in exported}
    assert used and used <= exported | histograms | counts, used - exported
    provisioning = ROOT / "deploy/grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert all(
        t["datasource"]["uid"] == datasource["datasources"][0]["uid"]
        for panel in dashboard["panels"]
        for t in panel["targets"]
    )


def test_images_install_the_versions_the_tests_ran_with() -> None:
    """deploy/constraints.txt pins every runtime dependency (deploy/write_constraints.py)."""
    import tomllib

    from packaging.requirements import Requirement

    pins = dict(
        line.split("==")
        for line in (ROOT / "deploy/constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for raw in project["dependencies"]:
        requirement = Requirement(raw)
        if requirement.marker is None or requirement.marker.evaluate():
            name = requirement.name.lower().replace("_", "-")
            assert name in pins, f"{name} is not pinned in deploy/constraints.txt"
            assert requirement.specifier.contains(pins[name], prereleases=True), name


def write_constraints() -> Any:
    """deploy/write_constraints.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "write_constraints", ROOT / "deploy/write_constraints.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pip_installs(name: str) -> list[list[str]]:
    """The arguments of every `pip install` a Dockerfile runs."""
    installs = []
    for kind, arguments in dockerfile(name):
        if kind != "RUN":
            continue
        for command in re.split(r"&&|;", arguments):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    return installs


def test_the_api_image_installs_the_api_requirements_and_the_package_without_its_deps() -> None:
    """Dockerfile.api: pyproject.toml's dependencies less the training-only ones, pinned, then
    the package with --no-deps (its own requirements name torch), and torch nowhere."""
    module = write_constraints()
    [requirements, package] = pip_installs("Dockerfile.api")
    assert requirements[:2] == ["--constraint", "deploy/constraints.txt"]
    assert requirements[2:] == module.api_requirements(), "print them: deploy/write_constraints.py"
    assert package == ["--no-deps", "."]
    text = (ROOT / "deploy/Dockerfile.api").read_text()
    assert "download.pytorch.org" not in text
    for raw in requirements[2:]:
        assert module.normalise(Requirement(raw).name) not in module.TRAINING_ONLY, raw
    env = " ".join(a for kind, a in dockerfile("Dockerfile.api") if kind == "ENV")
    assert "UNPAIRED_DEVICE=cpu" in env.split(), "no torch: the image must not probe for CUDA"
    # the worker image installs the package with its dependencies: torch among them
    assert pip_installs("Dockerfile.worker")[0] == ["--constraint", "deploy/constraints.txt", "."]


def test_nothing_the_api_image_installs_pulls_torch_in() -> None:
    """The API requirements' whole closure (markers and extras evaluated on this machine, from
    the installed packages' own metadata): no torch, torchvision, triton or CUDA wheel, and
    every package in it pinned by deploy/constraints.txt."""
    module = write_constraints()
    found: dict[str, str] = {}
    for raw in module.api_requirements():
        requirement = Requirement(raw)
        module.closure(requirement.name, tuple(requirement.extras), found)
    heavy = {name for name in found if name in module.TRAINING_ONLY or name == "triton"}
    heavy |= {name for name in found if name.startswith(("nvidia-", "cuda-"))}
    assert not heavy, f"the API image would install {sorted(heavy)}"
    assert {"fastapi", "uvicorn", "celery", "onnxruntime", "redis"} <= found.keys()
    pins = dict(
        line.split("==")
        for line in (ROOT / "deploy/constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert found.keys() <= pins.keys(), f"unpinned: {sorted(found.keys() - pins.keys())}"


def test_only_real_dependencies_are_left_out_of_the_api_image() -> None:
    """TRAINING_ONLY names dependencies pyproject.toml has (no typo silently keeps torch in)."""
    import tomllib

    module = write_constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {module.normalise(Requirement(raw).name) for raw in project["dependencies"]}
    assert names >= module.TRAINING_ONLY, module.TRAINING_ONLY - names
    assert {"torch", "torchvision"} <= module.TRAINING_ONLY
