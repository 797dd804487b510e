"""deploy/k8s: valid Kubernetes objects that say exactly what the project does.

Offline, no cluster: built-in kinds are validated against the Kubernetes schemas that
kubernetes-validate ships, KEDA's against its CRD schemas vendored in ``schemas/``. Every
command, entry point, path, probe, queue and ``UNPAIRED_*`` variable the manifests name is
checked against the code that defines it: ``cli.launch`` (how processes start, the same
definition the distributed-mode tests use), ``service.settings``, the FastAPI app and the CLIs.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator, Mapping
from functools import cache
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml

from cli.launch import API_COMMAND, DISTRIBUTED_ENV, WORKER_COMMAND
from cli.main import app as cli_app
from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = Path(__file__).parent / "schemas"
NAMESPACE = "unpaired"
# the oldest Kubernetes the manifests support (the preStop `sleep` action is on from 1.30) and
# the newest whose schemas kubernetes-validate ships
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
PREFIX = Settings.model_config.get("env_prefix", "")
SETTING_VARIABLES = {f"{PREFIX}{name}".upper() for name in Settings.model_fields}
VARIABLE = re.compile(rf"\b{PREFIX}[A-Z0-9_]+")
REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # Kubernetes' $(VAR) in args
SHELL_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
POD_NAME = "unpaired-worker-5d9c7b8f4-x2x7q"  # what a fieldRef to metadata.name gives

Doc = dict[str, Any]


# --- reading the manifests ----------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@cache
def documents() -> tuple[tuple[Path, Doc], ...]:
    return tuple(
        (path, doc)
        for path in manifest_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    )


@cache
def readme_documents() -> tuple[Doc, ...]:
    """The complete objects README.md shows (```yaml blocks with a kind): they must work too."""
    blocks = re.findall(r"```yaml\n(.*?)```", (K8S / "README.md").read_text(), flags=re.S)
    docs = (doc for block in blocks for doc in yaml.safe_load_all(block))
    return tuple(d for d in docs if isinstance(d, dict) and "kind" in d and "apiVersion" in d)


def doc_id(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def the(kind: str, name: str) -> Doc:
    found = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in deploy/k8s, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[tuple[Doc, Doc]]:
    """(owner, pod spec) of every workload."""
    for _, doc in documents():
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield doc, doc["spec"]["template"]["spec"]


def containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(workload: Doc, name: str) -> Doc:
    (found,) = [c for c in containers(workload["spec"]["template"]["spec"]) if c["name"] == name]
    return found


def api() -> Doc:
    return container(the("Deployment", "unpaired-api"), "api")


def worker() -> Doc:
    return container(the("Deployment", "unpaired-worker"), "worker")


def environment(c: Doc) -> dict[str, str]:
    """What the container's process sees: envFrom (ConfigMaps, Secrets), then env."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        ref = source.get("configMapRef") or source["secretRef"]
        defined = any(
            (d["kind"], d["metadata"]["name"]) == (kind, ref["name"]) for _, d in documents()
        )
        if not defined and ref.get("optional"):
            continue  # created by hand when needed (README.md: a managed Redis's URL)
        doc = the(kind, ref["name"])
        env.update(doc.get("data") or doc.get("stringData") or {})
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = POD_NAME
        else:
            raise AssertionError(f"{c['name']}: no stand-in for {var['name']}'s source")
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion; an unknown name would stay in the command verbatim."""

    def value(match: re.Match[str]) -> str:
        assert match[1] in env, f"$({match[1]}) in {text!r} is not in the container's env"
        return env[match[1]]

    return REFERENCE.sub(value, text)


def argv(c: Doc) -> list[str]:
    env = environment(c)
    return [expand(arg, env) for arg in [*c.get("command", []), *c.get("args", [])]]


def settings_of(c: Doc, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the container's process starts with (the real loader, the real checks)."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(PREFIX)]:
            patch.delenv(name)
        for name, value in environment(c).items():
            patch.setenv(name, value)
        return load_settings()


def mount_of(c: Doc, path: str) -> Doc:
    """The volume mount `path` lies on."""
    mounts = [m for m in c.get("volumeMounts", []) if Path(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on no volume of container {c['name']}"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def nginx_size(text: str) -> int:
    """An nginx size (`4200m`): k, m, g are powers of 1024."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", text).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit.lower() or " ")


def parse_cli(command: str, args: list[str]) -> dict[str, Any]:
    """`unpaired COMMAND ARGS` parsed by the real CLI (unknown options and bad values raise)."""
    group = typer.main.get_command(cli_app)
    assert command in group.commands, f"`unpaired {command}` does not exist"  # type: ignore[attr-defined]
    cli_command = group.commands[command]  # type: ignore[attr-defined]
    params = dict(cli_command.make_context(command, list(args)).params)
    for param in cli_command.params:  # as the command sees them (typer < 0.28 leaves str here)
        if param.type.name == "path" and isinstance(params.get(param.name), str):
            params[param.name] = Path(params[param.name])
    return params


# --- schemas --------------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as the API server does (it prunes them, and
    `kubectl apply` fails on them), so a misspelt field cannot pass unnoticed."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for path in sorted(SCHEMAS.glob("keda-*.yaml")):
        vendored = yaml.safe_load(path.read_text())
        schema = strict(vendored["openAPIV3Schema"])
        validators[vendored["apiVersion"], vendored["kind"]] = jsonschema.Draft202012Validator(
            schema
        )
    return validators


def validate(doc: Doc) -> None:
    if doc["apiVersion"].split("/")[0].endswith(".k8s.io") or "." not in doc["apiVersion"]:
        for version in KUBERNETES_VERSIONS:  # built-in kinds (apps/v1, networking.k8s.io/v1...)
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                message = f"{doc_id(doc)} (Kubernetes {version}) {where}: {exc.message}"
                raise AssertionError(message) from None
    else:
        validator = crd_validators().get((doc["apiVersion"], doc["kind"]))
        assert validator, f"no schema for {doc['apiVersion']} {doc['kind']} in {SCHEMAS}"
        errors = [
            f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
        assert not errors, f"{doc_id(doc)}: {errors}"


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in documents()],
    ids=[f"{path.relative_to(K8S)}:{doc_id(doc)}" for path, doc in documents()],
)
def test_manifests_validate_against_the_schemas(doc: Doc) -> None:
    validate(doc)


def test_readme_examples_validate_against_the_schemas() -> None:
    assert readme_documents(), "README.md shows no complete object"
    for doc in readme_documents():
        validate(doc)


def test_the_validation_is_strict() -> None:
    """A misspelt field fails, in a built-in kind and in a KEDA one."""
    deployment = the("Deployment", "unpaired-worker")
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(AssertionError, match="replica"):
        validate(typo)
    scaled = the("ScaledObject", "unpaired-worker")
    typo = {**scaled, "spec": {**scaled["spec"], "minReplicas": 2}}
    with pytest.raises(AssertionError, match="minReplicas"):
        validate(typo)


# --- the folder -----------------------------------------------------------------------------------


def test_each_kustomization_lists_every_manifest_of_its_folder() -> None:
    folders = {p.parent for p in manifest_files()}
    for folder in folders:
        kustomization = folder / "kustomization.yaml"
        assert kustomization.exists(), f"{folder.relative_to(ROOT)} has no kustomization.yaml"
        listed = yaml.safe_load(kustomization.read_text())
        assert listed["namespace"] == NAMESPACE
        assert sorted(listed["resources"]) == sorted(
            p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"
        )
        images = {image["name"] for image in listed.get("images", [])}
        used = {
            c["image"]
            for path, doc in documents()
            if path.parent == folder and doc["kind"] in {"Deployment", "Job"}
            for c in containers(doc["spec"]["template"]["spec"])
        }
        assert used <= images, f"{kustomization}: no registry and tag for {used - images}"


def test_every_object_lives_in_the_namespace() -> None:
    for _, doc in documents():
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc_id(doc)


def test_selectors_select_their_pods() -> None:
    templates = {
        doc_id(doc): doc["spec"]["template"]["metadata"]["labels"]
        for _, doc in documents()
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}
    }
    for _, doc in documents():
        kind = doc["kind"]
        if kind in {"Deployment", "StatefulSet"}:
            wanted = doc["spec"]["selector"]["matchLabels"]
            assert wanted.items() <= templates[doc_id(doc)].items(), doc_id(doc)
        elif kind in {"Service", "PodDisruptionBudget"}:
            selector = doc["spec"]["selector"]
            wanted = selector.get("matchLabels", selector)
            chosen = [
                name for name, labels in templates.items() if wanted.items() <= labels.items()
            ]
            assert len(chosen) == 1, f"{doc_id(doc)} selects {chosen}"


def test_references_between_objects_resolve() -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for _, doc in documents()}
    for owner, pod in pod_specs():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in owner["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, f"{doc_id(owner)}: {claim}"
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names, doc_id(owner)
        for c in containers(pod):
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes.keys() | claims, f"{c['name']}: {mount['name']}"
            environment(c)  # every envFrom names a ConfigMap or Secret defined here
    ingress = the("Ingress", "unpaired-api")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            ports = {p["name"] for p in the("Service", backend["name"])["spec"]["ports"]}
            assert backend["port"]["name"] in ports
    scaled = the("ScaledObject", "unpaired-worker")
    assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in names


# --- one source of truth: commands, variables, routes, paths -------------------------------------


def test_the_services_start_with_the_launch_commands() -> None:
    """The same commands as `unpaired serve --workers`, docker compose and the end-to-end tests."""
    scripts = entry_points(group="console_scripts", name=API_COMMAND[0])
    assert [s.value for s in scripts] == ["cli.main:app"], "the `unpaired` script is not installed"
    assert api()["command"] == list(API_COMMAND) and "args" not in api()
    assert worker()["command"] == list(WORKER_COMMAND) and "args" not in worker()
    for command in (API_COMMAND, WORKER_COMMAND):
        assert command[1] in typer.main.get_command(cli_app).commands  # type: ignore[attr-defined]


def test_the_services_are_configured_by_unpaired_variables_alone() -> None:
    for c in (api(), worker()):
        names = environment(c).keys()
        assert all(name.startswith(PREFIX) for name in names), sorted(names)
    assert all(key.startswith(PREFIX) for key in the("ConfigMap", "unpaired-settings")["data"])
    assert all(key.startswith(PREFIX) for key in the("Secret", "unpaired-secrets")["stringData"])
    assert "UNPAIRED_API_KEYS" not in environment(worker()), "workers need no API keys"


def test_every_unpaired_variable_named_is_a_setting() -> None:
    named: dict[str, set[str]] = {}
    for path in [*K8S.rglob("*.yaml"), *K8S.rglob("*.md")]:
        for variable in VARIABLE.findall(path.read_text()):
            named.setdefault(variable, set()).add(str(path.relative_to(K8S)))
    assert named, "no UNPAIRED_ variable found: is the pattern right?"
    unknown = {v: sorted(files) for v, files in named.items() if v not in SETTING_VARIABLES}
    assert not unknown, f"not settings of service/settings.py: {unknown}"


def test_the_configmap_gives_every_distributed_variable() -> None:
    data = the("ConfigMap", "unpaired-settings")["data"]
    assert set(DISTRIBUTED_ENV) <= data.keys(), set(DISTRIBUTED_ENV) - data.keys()


def test_the_services_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for c in (api(), worker()):
        settings = settings_of(c, monkeypatch)
        assert settings.distributed
    assert settings_of(worker(), monkeypatch).worker_name == POD_NAME
    assert settings_of(worker(), monkeypatch).device == "cuda"
    assert settings_of(api(), monkeypatch).host == "0.0.0.0"


def test_probes_are_routes_of_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.routing import Match

    from service.api.app import create_app

    app = create_app(Settings(store=str(tmp_path)))  # built, not started

    def routed(path: str) -> bool:
        """The app has a route for GET `path` (how Starlette dispatches a request)."""
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in app.routes)

    assert not routed("/no-such-probe")
    c = api()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert list(ports.values()) == [settings_of(c, monkeypatch).port]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c[kind]["httpGet"]
        assert routed(probe["path"]), f"{kind} {probe['path']} is no route of the API"
        assert probe["port"] in ports
    annotations = the("Deployment", "unpaired-api")["spec"]["template"]["metadata"]["annotations"]
    assert routed(annotations["prometheus.io/path"])
    assert int(annotations["prometheus.io/port"]) in ports.values()


def test_the_data_paths_are_on_shared_volumes(monkeypatch: pytest.MonkeyPatch) -> None:
    for c in (api(), worker()):
        settings = settings_of(c, monkeypatch)
        store, jobs = mount_of(c, settings.store), mount_of(c, settings.jobs_dir)
        assert not jobs.get("readOnly"), f"{c['name']} must write job files"
        assert not mount_of(c, str(settings.cache_dir)).get("readOnly")
        pod = the("Deployment", f"unpaired-{c['name']}")["spec"]["template"]["spec"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims[store["name"]] == "unpaired-model-store"
        assert claims[jobs["name"]] == "unpaired-jobs"
    for claim in ("unpaired-model-store", "unpaired-jobs"):  # every API and worker pod shares it
        assert the("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


def test_shutdown_outlasts_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    api_pod = the("Deployment", "unpaired-api")["spec"]["template"]["spec"]
    timeout = settings_of(api(), monkeypatch).request_timeout_s
    drain = api()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert api_pod["terminationGracePeriodSeconds"] > drain + timeout
    worker_pod = the("Deployment", "unpaired-worker")["spec"]["template"]["spec"]
    assert (
        worker_pod["terminationGracePeriodSeconds"]
        > settings_of(worker(), monkeypatch).request_timeout_s
    )
    assert "preStop" not in worker().get("lifecycle", {}), "SIGTERM itself is the warm shutdown"


def test_the_ingress_admits_the_largest_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    annotations = the("Ingress", "unpaired-api")["metadata"]["annotations"]
    body = nginx_size(annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body >= settings_of(api(), monkeypatch).max_job_bytes
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > (
        settings_of(api(), monkeypatch).request_timeout_s
    )


def test_workers_get_a_gpu_each() -> None:
    c = worker()
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert "nvidia.com/gpu" not in c["resources"].get("requests", {})  # limits imply requests
    pod = the("Deployment", "unpaired-worker")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "replicas" not in the("Deployment", "unpaired-worker")["spec"], "KEDA owns it"


# the fields KEDA's `redis` scaler reads (pkg/scalers/redis_scaler.go, KEDA 2.x): trigger
# metadata is a free string map in the CRD schema, so a misspelt field would pass it unnoticed
REDIS_SCALER_FIELDS = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "password",
    "listName", "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl",
    "sentinelUsername", "sentinelPassword", "sentinelMaster",
}  # fmt: skip


def test_keda_scales_the_workers_from_zero_on_both_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.distributed.remote_translator import ACTIVITY_WINDOW_S, activity_key

    settings = settings_of(worker(), monkeypatch)
    broker = urlsplit(settings.broker_url or "")
    scaled = the("ScaledObject", "unpaired-worker")["spec"]
    # /readyz needs Redis only: no worker is needed for the API to serve (requests wait)
    assert scaled["minReplicaCount"] == 0, "idle GPUs cost money: scale the workers to zero"
    assert scaled["maxReplicaCount"] >= 1
    triggers = {t["metadata"]["listName"]: t for t in scaled["triggers"]}
    activity = activity_key(settings.queue)
    assert sorted(triggers) == sorted([settings.queue, settings.bulk_queue, activity])
    assert settings.queue == Settings.model_fields["queue"].default
    assert settings.bulk_queue == Settings.model_fields["bulk_queue"].default
    for trigger in triggers.values():
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert set(meta) <= REDIS_SCALER_FIELDS, set(meta) - REDIS_SCALER_FIELDS
        assert meta["address"] == broker.netloc, "KEDA must watch the broker of the ConfigMap"
        assert int(meta.get("databaseIndex", 0)) == int(broker.path.strip("/") or 0)
        assert int(meta["listLength"]) >= 1
        # active (0 -> 1) when the count exceeds the threshold: one waiting message must wake
        # a worker, or a smaller backlog would wait at zero workers for ever
        assert int(meta["activationListLength"]) == 0
    # the waiting requests one worker would take in one go: no more than its prefetch
    assert int(triggers[settings.queue]["metadata"]["listLength"]) <= settings.prefetch
    # recent requests (one member per second of the window, a few more with API clocks
    # apart) keep one worker, never more: ceil(count / listLength) stays 1
    assert int(triggers[activity]["metadata"]["listLength"]) > ACTIVITY_WINDOW_S + 10


# --- training -------------------------------------------------------------------------------------


def parse_torchrun(command: list[str]) -> Any:
    """torchrun's own parser; the script and its arguments come back separately."""
    from torch.distributed.run import get_args_parser

    assert command[0] == "torchrun"
    assert entry_points(group="console_scripts", name="torchrun"), "torch's torchrun is missing"
    launch = get_args_parser().parse_args(command[1:])
    # `-m cli train` is `python -m cli train`: `unpaired train` (cli/__main__.py)
    assert launch.module and launch.training_script == "cli"
    assert launch.training_script_args[:1] == ["train"]
    assert find_spec("cli.__main__") is not None
    launch.training_script_args = launch.training_script_args[1:]
    return launch


def train_config(params: Mapping[str, Any], config_text: str, tmp_path: Path) -> Any:
    """The TrainConfig these `unpaired train` options and config file give (validated)."""
    from training.config import TrainConfig, load_config, parse_set_options

    path = tmp_path / params["config"].name
    path.write_text(config_text)
    flags = {k: v for k, v in params.items() if k in TrainConfig.model_fields}
    cfg = load_config(path, {**flags, **parse_set_options(list(params["set_"]))})
    assert cfg.gan_mode != "wgangp", "the trainer refuses wgangp under DDP"
    return cfg


def test_the_training_job_trains_on_the_gpus_it_requests(tmp_path: Path) -> None:
    job = the("Job", "unpaired-train")
    pod = job["spec"]["template"]["spec"]
    train = container(job, "train")
    assert train in pod["initContainers"], "training must end before publishing starts"
    launch = parse_torchrun(argv(train))
    assert launch.standalone, "one node"
    gpus = int(launch.nproc_per_node)
    assert gpus > 1 and gpus == int(train["resources"]["limits"]["nvidia.com/gpu"])
    params = parse_cli("train", launch.training_script_args)
    volume = next(
        v for v in pod["volumes"] if v["name"] == mount_of(train, params["config"])["name"]
    )
    text = the("ConfigMap", volume["configMap"]["name"])["data"][params["config"].name]
    cfg = train_config(params, text, tmp_path)
    assert cfg.dataroot is not None
    mount_of(train, str(cfg.dataroot))
    assert not mount_of(train, str(cfg.out)).get("readOnly")
    assert pod["restartPolicy"] == "Never"
    assert_retries_continue_the_run(job["spec"], params)


def assert_retries_continue_the_run(spec: Doc, params: Mapping[str, Any]) -> None:
    """A Job that retries must continue the run in its folder: plain `train` refuses a folder
    that holds checkpoints, `--resume-or-start` continues it (or starts an empty one)."""
    assert spec["backoffLimit"] > 0, "a failed pod must be retried"
    assert params["resume_or_start"], "a retry must continue the run, not refuse its folder"
    assert params["resume"] is None
    rules = spec.get("podFailurePolicy", {"rules": []})["rules"]
    disruption = {"type": "DisruptionTarget", "status": "True"}
    disruptions = [r for r in rules if disruption in r.get("onPodConditions", [])]
    assert [r["action"] for r in disruptions] == ["Ignore"], "preemptions must cost no retry"
    # the replacement starts once the failed pod stopped: never beside one still checkpointing
    assert spec.get("podReplacementPolicy", "Failed") == "Failed"


def test_the_training_job_publishes_into_the_served_store(tmp_path: Path) -> None:
    job = the("Job", "unpaired-train")
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
        for v in job["spec"]["template"]["spec"]["volumes"]
    }
    train, publish = container(job, "train"), container(job, "publish")
    out = parse_cli("train", parse_torchrun(argv(train)).training_script_args)["out"]
    command = argv(publish)
    assert command[:2] == ["unpaired", "export"]
    exported = parse_cli("export", command[2:])
    assert exported["run_dir"] == out, "publish the run that was trained"
    assert exported["name"]
    served = the("ConfigMap", "unpaired-settings")["data"]["UNPAIRED_STORE"]
    assert exported["store"] == served
    store = mount_of(publish, exported["store"])
    assert not store.get("readOnly")
    assert claims[store["name"]] == "unpaired-model-store"
    assert claims[mount_of(publish, str(out))["name"]] == claims[mount_of(train, str(out))["name"]]


def shell_commands(script: str, env: Mapping[str, str]) -> list[list[str]]:
    """The simple commands of a shell script, its variables replaced by their values."""

    def value(match: re.Match[str]) -> str:
        assert match[1] in env, f"${match[1]} is not in the container's env"
        return env[match[1]]

    lines = script.replace("\\\n", " ").splitlines()
    return [shlex.split(SHELL_VARIABLE.sub(value, line)) for line in lines if line.strip()]


def test_the_multi_node_example_runs_the_same_commands(tmp_path: Path) -> None:
    """README.md's Indexed Job: torchrun's rendezvous, `python -m training`, `unpaired export`."""
    (job,) = [d for d in readme_documents() if d["kind"] == "Job"]
    spec = job["spec"]
    (c,) = spec["template"]["spec"]["containers"]
    assert c["command"] == ["sh", "-c"]
    env = {**environment(c), "JOB_COMPLETION_INDEX": "0"}  # set by Kubernetes in Indexed Jobs
    commands = shell_commands(c["args"][0], env)
    (torchrun,) = [words for words in commands if words[0] == "torchrun"]
    launch = parse_torchrun(torchrun)
    assert launch.rdzv_backend == "c10d" and not launch.standalone
    nodes = int(launch.nnodes)
    assert nodes == spec["completions"] == spec["parallelism"] > 1
    assert spec["completionMode"] == "Indexed"
    assert int(launch.nproc_per_node) == int(c["resources"]["limits"]["nvidia.com/gpu"])
    host = launch.rdzv_endpoint.split(":")[0]
    (service,) = [d for d in readme_documents() if d["kind"] == "Service"]
    name = service["metadata"]["name"]
    assert host == f"{job['metadata']['name']}-0.{name}" == f"{name}-0.{name}"
    assert spec["template"]["spec"]["subdomain"] == name
    params = parse_cli("train", launch.training_script_args)
    assert_retries_continue_the_run(spec, params)
    text = the("ConfigMap", "unpaired-train-config")["data"][params["config"].name]
    cfg = train_config(params, text, tmp_path)
    (export,) = [words for words in commands if words[:2] == ["unpaired", "export"]]
    exported = parse_cli("export", export[2:])
    assert exported["run_dir"] == cfg.out
    assert exported["store"] == the("ConfigMap", "unpaired-settings")["data"]["UNPAIRED_STORE"]
