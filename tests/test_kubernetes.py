"""The Kubernetes manifests (deploy/kubernetes): valid objects that run real engineroom commands, scale on the queues
those commands consume, and keep the guarantees the rest of the deployment relies on.

kustomize is not needed: ``render`` resolves a kustomization's resources and the few transformers these files
use (namespace, labels, images, replicas, strategic-merge patches of maps). Where ``kubectl`` is installed, its
built-in kustomize must render the same objects.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from engineroom.cli import build_parser
from engineroom.core.config import ENGINES, Settings
from tests.test_deployment import _service

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "example"
#: The Kubernetes version whose schemas core objects are validated against.
KUBERNETES_VERSION = "1.30"
#: The Dockerfile's user and group.
IMAGE_UID = 10001
#: Kinds that live outside namespaces, among those these files use.
CLUSTER_SCOPED = {"Namespace"}

Resource = dict[str, Any]


def _load(path: Path) -> list[Resource]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _merge(target: Resource, patch: Resource) -> None:
    """A strategic-merge patch made only of maps (what the overlays use): maps merge, scalars replace."""
    for key, value in patch.items():
        assert not isinstance(value, list), f"list in a patch ({key}): this renderer only merges maps"
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _containers(resource: Resource) -> list[Resource]:
    if resource["kind"] != "Deployment":
        return []
    containers: list[Resource] = resource["spec"]["template"]["spec"]["containers"]
    return containers


def render(directory: Path) -> list[Resource]:
    """The objects ``kustomize build directory`` produces, for the transformers these files use."""
    kustomization = _load(directory / "kustomization.yaml")[0]
    known = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
    assert set(kustomization) <= known, f"unsupported by this renderer: {set(kustomization) - known}"
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        resources += render(path) if path.is_dir() else _load(path)
    by_key = {(resource["kind"], resource["metadata"]["name"]): resource for resource in resources}
    for patch_entry in kustomization.get("patches", []):
        for patch in _load(directory / patch_entry["path"]):
            _merge(by_key[(patch["kind"], patch["metadata"]["name"])], patch)
    for replicas in kustomization.get("replicas", []):
        by_key[("Deployment", replicas["name"])]["spec"]["replicas"] = replicas["count"]
    _set_metadata(resources, kustomization)
    _set_images(resources, kustomization.get("images", []))
    return resources


def _set_metadata(resources: list[Resource], kustomization: Resource) -> None:
    """``labels`` (on the objects only, not selectors or templates) and ``namespace``."""
    for label in kustomization.get("labels", []):
        assert not label.get("includeSelectors") and not label.get("includeTemplates")
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]


def _set_images(resources: list[Resource], images: list[Resource]) -> None:
    for image in images:
        for container in (container for resource in resources for container in _containers(resource)):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image['newName']}:{image['newTag']}"


RENDERED = {"base": render(BASE), "overlay": render(OVERLAY)}


@pytest.fixture(params=sorted(RENDERED))
def resources(request: pytest.FixtureRequest) -> list[Resource]:
    return RENDERED[request.param]


def one(resources: list[Resource], kind: str, name: str) -> Resource:
    found = [resource for resource in resources if (resource["kind"], resource["metadata"]["name"]) == (kind, name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [resource for resource in resources if resource["kind"] == kind]


def component(resource: Resource) -> str:
    component_label: str = resource["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
    return component_label


def config_map(resources: list[Resource]) -> dict[str, str]:
    data: dict[str, str] = one(resources, "ConfigMap", "engineroom-config")["data"]
    return data


def worker_args(resources: list[Resource], deployment_name: str) -> Any:
    return build_parser().parse_args(_containers(one(resources, "Deployment", deployment_name))[0]["args"])


def test_every_object_is_unique_and_the_overlay_sets_namespace_and_image() -> None:
    for resources in RENDERED.values():
        keys = [(resource["kind"], resource["metadata"]["name"]) for resource in resources]
        assert len(keys) == len(set(keys))
    overlay = RENDERED["overlay"]
    assert {resource["metadata"].get("namespace") for resource in overlay if resource["kind"] != "Namespace"} == {
        one(overlay, "Namespace", "engineroom")["metadata"]["name"]
    }
    images = {container["image"] for resource in overlay for container in _containers(resource)}
    assert images == {"registry.example.com/engineroom:0.1.0"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_kubectls_kustomize_renders_the_same_objects(directory: Path) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    key = lambda resource: (resource["kind"], resource["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(built), key=key) == sorted(render(directory), key=key)


def test_core_objects_validate_against_the_kubernetes_schemas(resources: list[Resource]) -> None:
    core = [resource for resource in resources if not resource["apiVersion"].startswith("keda.sh/")]
    assert {resource["kind"] for resource in core} >= {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"}
    for resource in core:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_every_deployment_runs_a_real_engineroom_command_named_for_its_component(resources: list[Resource]) -> None:
    deployments = of_kind(resources, "Deployment")
    assert {component(deployment) for deployment in deployments} == {"api", "scheduler", "worker-media", "worker-text"}
    for deployment in deployments:
        (container,) = _containers(deployment)
        assert "command" not in container, "the image's entrypoint is `engineroom`: give the subcommand as args"
        args = build_parser().parse_args(container["args"])
        assert args.command == component(deployment).split("-")[0]


def test_worker_groups_match_docker_compose_and_cover_every_engine_once(resources: list[Resource]) -> None:
    covered: list[str] = []
    deliveries = 0
    for group in ("media", "text"):
        args = worker_args(resources, f"engineroom-worker-{group}")
        compose_args = build_parser().parse_args(_service(f"worker-{group}")["command"])
        assert (args.engines, args.notifications) == (compose_args.engines, compose_args.notifications)
        covered += args.engines.split(",")
        deliveries += args.notifications
    assert sorted(covered) == sorted(ENGINES) and deliveries == 1


def test_each_scaled_object_watches_exactly_the_real_queues_its_workers_consume(resources: list[Resource]) -> None:
    settings = Settings(namespace=config_map(resources)["ENGINEROOM_NAMESPACE"])
    scaled_objects = of_kind(resources, "ScaledObject")
    targets = {scaled["spec"]["scaleTargetRef"]["name"] for scaled in scaled_objects}
    assert targets == {"engineroom-worker-media", "engineroom-worker-text"}
    for scaled in scaled_objects:
        args = worker_args(resources, scaled["spec"]["scaleTargetRef"]["name"])
        expected = [settings.queue_name(engine) for engine in args.engines.split(",")]
        if args.notifications:
            expected.append(settings.notifications_queue)
        triggers = scaled["spec"]["triggers"]
        assert sorted(trigger["metadata"]["queueName"] for trigger in triggers) == sorted(expected)
        assert {trigger["type"] for trigger in triggers} == {"rabbitmq"}


def test_each_group_scales_on_the_sum_of_its_queues_per_pods_threads(resources: list[Resource]) -> None:
    for scaled in of_kind(resources, "ScaledObject"):
        args = worker_args(resources, scaled["spec"]["scaleTargetRef"]["name"])
        triggers = scaled["spec"]["triggers"]
        modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
        names = [trigger["name"] for trigger in triggers]
        assert modifiers["formula"] == " + ".join(names) and len(set(names)) == len(names)
        assert (modifiers["target"], modifiers["metricType"]) == (str(args.threads * args.processes), "AverageValue")
        deployment = one(resources, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in deployment["spec"], "the ScaledObject owns the replica count"
        assert 0 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
        for trigger in triggers:
            # The management API counts unacknowledged messages: pods with running jobs are not scaled away.
            assert (trigger["metadata"]["protocol"], trigger["metadata"]["mode"]) == ("http", "QueueLength")


def test_keda_reads_rabbitmq_through_a_secret_no_pod_mounts(resources: list[Resource]) -> None:
    for scaled in of_kind(resources, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            authentication = one(resources, "TriggerAuthentication", trigger["authenticationRef"]["name"])
            for reference in authentication["spec"]["secretTargetRef"]:
                secret = one(resources, "Secret", reference["name"])
                assert reference["key"] in secret["stringData"]
                mounted = {
                    source["secretRef"]["name"]
                    for deployment in of_kind(resources, "Deployment")
                    for source in _containers(deployment)[0]["envFrom"]
                    if "secretRef" in source
                }
                assert reference["name"] not in mounted


def test_every_engineroom_variable_is_a_setting_and_together_they_make_valid_settings(
    resources: list[Resource],
) -> None:
    fields = {f"ENGINEROOM_{name.upper()}" for name in Settings.model_fields}
    values = {**config_map(resources), **one(resources, "Secret", "engineroom-secrets")["stringData"]}
    for deployment in of_kind(resources, "Deployment"):
        (container,) = _containers(deployment)
        names = [variable["name"] for variable in container.get("env", [])]
        assert set(names) <= fields, set(names) - fields
        for source in container["envFrom"]:
            reference = source.get("configMapRef") or source["secretRef"]
            one(resources, "ConfigMap" if "configMapRef" in source else "Secret", reference["name"])
        environment = {**values, **{variable["name"]: variable["value"] for variable in container.get("env", [])}}
        assert set(environment) <= fields, set(environment) - fields
        settings = Settings(**{name.removeprefix("ENGINEROOM_").lower(): value for name, value in environment.items()})
        assert settings.env == "prod"


def test_the_secrets_hold_clearly_marked_example_values_only(resources: list[Resource]) -> None:
    for secret in of_kind(resources, "Secret"):
        assert secret["metadata"]["annotations"]["engineroom.dev/example-values"] == "true"
        assert all("EXAMPLE" in value for value in secret["stringData"].values()), secret["metadata"]["name"]


def test_workers_get_at_least_their_drain_grace_before_they_are_killed(resources: list[Resource]) -> None:
    for deployment in of_kind(resources, "Deployment"):
        args = build_parser().parse_args(_containers(deployment)[0]["args"])
        if args.command == "worker":
            assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= args.grace_s


def test_the_api_has_replicas_a_disruption_budget_a_service_and_probes_on_its_port(resources: list[Resource]) -> None:
    api = one(resources, "Deployment", "engineroom-api")
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["replicas"] >= 2
    (budget,) = [
        budget
        for budget in of_kind(resources, "PodDisruptionBudget")
        if budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ]
    assert 1 <= budget["spec"]["minAvailable"] < api["spec"]["replicas"]  # drains can proceed, one pod at a time
    (container,) = _containers(api)
    args = build_parser().parse_args(container["args"])
    (port,) = container["ports"]
    assert (args.host, args.port) == ("0.0.0.0", port["containerPort"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    service = one(resources, "Service", "engineroom-api")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [entry["targetPort"] for entry in service["spec"]["ports"]] == [port["name"]]


def test_the_scheduler_runs_twice_for_its_lease_to_elect_a_leader(resources: list[Resource]) -> None:
    assert one(resources, "Deployment", "engineroom-scheduler")["spec"]["replicas"] == 2


def test_workers_and_schedulers_probe_reachability_as_docker_compose_does(resources: list[Resource]) -> None:
    compose_script = _service("scheduler")["healthcheck"]["test"][-1]
    for deployment in of_kind(resources, "Deployment"):
        (container,) = _containers(deployment)
        if component(deployment) == "api":
            continue
        assert container["readinessProbe"]["exec"]["command"] == ["python", "-c", compose_script]
        assert "livenessProbe" not in container  # restarting them during an outage would not help (see the files)


def test_every_pod_runs_unprivileged_as_the_images_user_with_requests_and_limits(resources: list[Resource]) -> None:
    for deployment in of_kind(resources, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (IMAGE_UID, IMAGE_UID)
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, (deployment["metadata"]["name"], bound)


def test_the_image_runs_as_the_uid_the_pods_require() -> None:
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert users[-1] == f"{IMAGE_UID}:{IMAGE_UID}"
