"""docker-compose.yml and the Kubernetes manifests: generated from the declarations, and valid
against the Compose specification's schema and Kubernetes' own schemas."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from baton.workflows import agent_kinds, load_workflows
from tests.harness.kafka_broker import REPO

pytestmark = pytest.mark.integration

K8S_VERSION = "1.31"


def _render() -> dict[Path, str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_generate", REPO / "deploy" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered: dict[Path, str] = module.render()
    return rendered


def test_deploy_files_are_what_the_generator_writes() -> None:
    for path, text in _render().items():
        assert path.read_text() == text, f"{path.name} drifted from deploy/generate.py: run `make deploy`"


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    path = (
        subprocess.run([str(REPO / "scripts" / "fetch-compose-schema.sh")], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    schema: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    return schema


def test_compose_file_follows_the_compose_spec(compose_schema: dict[str, Any]) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    jsonschema.Draft7Validator(compose_schema).validate(compose)
    services = compose["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on undeclared service {dep}"
    kinds = agent_kinds(load_workflows())
    assert {f"agent-{k.replace('_', '-')}" for k in kinds} <= set(services)
    assert {"kafka", "schema-registry", "mongodb", "supervisor", "handoff-validator", "auditor"} <= set(services)
    broken = copy.deepcopy(compose)
    broken["services"]["supervisor"]["restart"] = ["always"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(compose_schema).validate(broken)


def test_kubernetes_manifests_validate_against_kubernetes_schemas() -> None:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "baton.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for kind in agent_kinds(load_workflows()):
        args = deployments[f"agent-{kind.replace('_', '-')}"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args == ["run", "agent", "--kind", kind]
    broken = copy.deepcopy(deployments["supervisor"])
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
