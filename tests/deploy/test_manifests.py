"""The container image and the Kubernetes manifests keep the properties production relies on.

Nothing here needs Docker or a cluster: the YAML is parsed with PyYAML, the Dockerfile is read as
text, and the image's HEALTHCHECK command is run with this venv's Python against an in-process
secmail server. When kubernetes-validate is installed, every manifest is also checked against the
Kubernetes OpenAPI schemas with unknown fields rejected.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: Files in deploy/kubernetes that kustomization.yaml must not apply (see its header comment).
NOT_KUSTOMIZED = {"kustomization.yaml", "secret.template.yaml", "db-upgrade-job.yaml"}
API_PORT = 50051
POD_UID = 10001

Doc = dict[str, Any]


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def _load(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@pytest.fixture(scope="module")
def docs() -> dict[str, list[Doc]]:
    return {p.name: _load(p) for p in _manifest_files()}


def _one(docs: dict[str, list[Doc]], kind: str, name: str) -> Doc:
    found = [d for ds in docs.values() for d in ds if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def _deployment(docs: dict[str, list[Doc]]) -> Doc:
    return _one(docs, "Deployment", "secmail")


def _job(docs: dict[str, list[Doc]]) -> Doc:
    return _one(docs, "Job", "secmail-db-upgrade")


def _container(workload: Doc, name: str) -> Doc:
    matches = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(matches) == 1
    return matches[0]


def _server(docs: dict[str, list[Doc]]) -> Doc:
    return _container(_deployment(docs), "secmail")


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def _flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name}=... must appear exactly once in {args}"
    return values[0]


def _pod_templates(docs: dict[str, list[Doc]]) -> list[tuple[str, Doc]]:
    return [(w["metadata"]["name"], w["spec"]["template"]) for w in (_deployment(docs), _job(docs))]


# ---------------------------------------------------------------------------
# Every manifest
# ---------------------------------------------------------------------------


def test_every_manifest_parses_and_names_its_namespace(docs: dict[str, list[Doc]]) -> None:
    assert _manifest_files(), f"no YAML in {K8S}"
    seen: set[tuple[str, str]] = set()
    for name, ds in docs.items():
        assert ds, f"{name} holds no document"
        if name == "kustomization.yaml":
            continue
        for d in ds:
            assert d.get("apiVersion") and d.get("kind"), f"{name}: a document without apiVersion/kind"
            key = (d["kind"], d["metadata"]["name"])
            assert key not in seen, f"{key} defined twice"
            seen.add(key)
            if d["kind"] != "Namespace":
                # Set in every file, not only by kustomize, so `kubectl apply -f` of one file
                # (the Job, a Secret) lands in the same namespace.
                assert d["metadata"].get("namespace") == "secmail", f"{name}: {key} not in namespace secmail"


def test_manifests_validate_against_kubernetes_schemas(docs: dict[str, list[Doc]]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    # An older release, for clusters that lag, and the newest one the package knows, which
    # catches fields removed since.
    for version in ("1.29.0", kv.latest_version()):
        for name, ds in docs.items():
            if name == "kustomization.yaml":
                continue
            for d in ds:
                try:
                    kv.validate(d, version, strict=True)
                except kv.ValidationError as exc:
                    pytest.fail(f"{name}: {d['kind']}/{d['metadata']['name']} invalid for {version}: {exc}")


def test_kustomization_applies_everything_but_the_secret_template_and_the_job(
    docs: dict[str, list[Doc]],
) -> None:
    (kust,) = docs["kustomization.yaml"]
    resources = kust["resources"]
    for r in resources:
        assert (K8S / r).is_file(), f"kustomization.yaml lists {r}, which does not exist"
    # The template's placeholders must never be applied, and the migration must run before the
    # rollout, not next to it.
    assert set(resources) == {p.name for p in _manifest_files()} - NOT_KUSTOMIZED
    assert kust.get("namespace") == "secmail"


def test_namespace_enforces_restricted_pod_security(docs: dict[str, list[Doc]]) -> None:
    ns = _one(docs, "Namespace", "secmail")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ---------------------------------------------------------------------------
# Pods: identity and filesystem
# ---------------------------------------------------------------------------


def test_pods_run_as_non_root_with_nothing_extra(docs: dict[str, list[Doc]]) -> None:
    for name, template in _pod_templates(docs):
        spec = template["spec"]
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert uid == POD_UID, f"{name}/{c['name']} runs as uid {uid}, not the image's {POD_UID}"
            assert sc.get("runAsGroup", pod_sc.get("runAsGroup")) not in (None, 0), f"{name}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{name}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}"
            assert sc.get("privileged") is not True, f"{name}/{c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}"
            assert not sc.get("capabilities", {}).get("add"), f"{name}/{c['name']}"


def test_read_only_root_with_memory_backed_tmp(docs: dict[str, list[Doc]]) -> None:
    for name, template in _pod_templates(docs):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for c in template["spec"]["containers"]:
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}/{c['name']}: /tmp is not writable"
            # Temporary files must live in memory, never on the node's disk.
            assert volumes[mounts["/tmp"]].get("emptyDir", {}).get("medium") == "Memory", name
    server = _server(docs)
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in _deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    data_dir = _flag(server["args"], "--data-dir")
    assert "emptyDir" in volumes[mounts[data_dir]], "the data directory must be writable"


# ---------------------------------------------------------------------------
# Deployment: probes, secrets, scaling
# ---------------------------------------------------------------------------


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_probes_are_native_grpc_health_checks_on_the_plaintext_health_port(
    docs: dict[str, list[Doc]],
) -> None:
    server = _server(docs)
    config = _one(docs, "ConfigMap", "secmail-config")["data"]
    health_port = _port_of(config["SECMAIL_HEALTH_ADDRESS"])
    assert _port_of(config["SECMAIL_ADDRESS"]) == API_PORT
    declared = {p["containerPort"]: p["name"] for p in server["ports"]}
    assert declared.get(API_PORT) == "grpc"
    assert declared.get(health_port) == "health"
    # The kubelet's gRPC probe cannot present a client certificate (KEP-2727), so a probe on the
    # mTLS API port would fail for ever: the probes must use the health-only listener.
    assert health_port != API_PORT
    assert "readinessProbe" in server and "livenessProbe" in server
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = server.get(kind)
        if probe is None:
            continue
        handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & probe.keys()
        assert handlers == {"grpc"}, f"{kind} must be the native gRPC probe, not {handlers}"
        assert probe["grpc"]["port"] == health_port, kind
        # Empty service name: the server's overall status, which secmail sets.
        assert probe["grpc"].get("service", "") == "", kind
    assert server["readinessProbe"]["periodSeconds"] <= server["livenessProbe"]["periodSeconds"]


def test_master_key_and_database_url_come_from_a_secret(docs: dict[str, list[Doc]]) -> None:
    server = _server(docs)
    env = _env(server)
    for var, key in (("SECMAIL_MASTER_KEY", "master-key"), ("SECMAIL_DATABASE_URL", "database-url")):
        entry = env.get(var)
        assert entry is not None, f"{var} is not set"
        assert "value" not in entry, f"{var} must not be a literal in the manifest"
        ref = entry["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("secmail-secrets", key)
        # Optional would let a pod start without it: then it would make its own master key (or
        # its own SQLite database) and silently diverge from the other replicas.
        assert ref.get("optional") is not True, var
    assert "--master-key-file" not in " ".join(server["args"])
    # No manifest that gets applied holds a master key value anywhere.
    for name in docs:
        if name == "secret.template.yaml":
            continue
        text = (K8S / name).read_text(encoding="utf-8")
        assert not re.search(r"master-key:\s*\S", text), f"{name} holds a master key value"


def test_every_reference_resolves_to_a_defined_key(docs: dict[str, list[Doc]]) -> None:
    (config,) = [d for d in docs["configmap.yaml"] if d["kind"] == "ConfigMap"]
    secrets = {d["metadata"]["name"]: d for d in docs["secret.template.yaml"]}
    defined = {
        ("configMap", config["metadata"]["name"]): set(config["data"]),
        **{("secret", n): set(s.get("stringData", {})) | set(s.get("data", {})) for n, s in secrets.items()},
    }
    for name, template in _pod_templates(docs):
        for c in template["spec"]["containers"]:
            for e in c.get("env", []):
                src = e.get("valueFrom", {})
                for kind, field in (("secret", "secretKeyRef"), ("configMap", "configMapKeyRef")):
                    if field in src:
                        ref = src[field]
                        assert ref["key"] in defined.get((kind, ref["name"]), set()), (
                            f"{name}/{c['name']}: {e['name']} refers to {kind} {ref['name']}/{ref['key']}, "
                            "which deploy/kubernetes does not define"
                        )
                if "resourceFieldRef" in src:
                    assert src["resourceFieldRef"]["containerName"] == c["name"]
        for v in template["spec"].get("volumes", []):
            if "secret" in v:
                assert ("secret", v["secret"]["secretName"]) in defined, f"{name}: volume {v['name']}"


def test_args_only_expand_variables_the_container_defines(docs: dict[str, list[Doc]]) -> None:
    # The kubelet leaves an undefined $(VAR) as literal text: `--workers=$(TYPO)` would reach
    # secmail as is.
    for name, template in _pod_templates(docs):
        for c in template["spec"]["containers"]:
            defined = set(_env(c))
            for arg in c.get("command", []) + c.get("args", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                    assert var in defined, f"{name}/{c['name']}: {arg!r} uses undefined $({var})"


def test_tls_is_configured_for_the_non_loopback_listener(docs: dict[str, list[Doc]]) -> None:
    server = _server(docs)
    args = server["args"]
    config = _one(docs, "ConfigMap", "secmail-config")["data"]
    host = config["SECMAIL_ADDRESS"].rsplit(":", 1)[0].strip("[]")
    assert host not in ("127.0.0.1", "localhost", "::1"), "the API must be reachable from other pods"
    tls_mount = next(m for m in server["volumeMounts"] if m["name"] == "tls")
    assert tls_mount.get("readOnly") is True
    tls_volume = next(
        v for v in _deployment(docs)["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"
    )
    assert tls_volume["secret"]["defaultMode"] & 0o077 == 0o040, "TLS key must not be world-readable"
    tls_secret = _one(docs, "Secret", tls_volume["secret"]["secretName"])
    for flag, key in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key"), ("--tls-client-ca", "ca.crt")):
        path = _flag(args, flag)
        assert path == f"{tls_mount['mountPath']}/{key}", flag
        assert key in tls_secret["stringData"], f"the TLS Secret template lacks {key}"


def test_secret_template_master_key_placeholder_is_refused_by_secmail(
    docs: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from secmail.keystore.masterkey import MasterKeyError, master_key_from_env

    # A template applied unchanged must stop secmail, not seal keys under a published value.
    placeholder = _one(docs, "Secret", "secmail-secrets")["stringData"]["master-key"]
    monkeypatch.setenv("SECMAIL_MASTER_KEY", placeholder)
    with pytest.raises(MasterKeyError):
        master_key_from_env()
    # The check above can fail: a real key in the same place is accepted.
    monkeypatch.setenv("SECMAIL_MASTER_KEY", "00" * 32)
    assert master_key_from_env() == bytes(32)


def test_several_replicas_with_a_disruption_budget(docs: dict[str, list[Doc]]) -> None:
    dep = _deployment(docs)
    replicas = dep["spec"]["replicas"]
    assert replicas > 1
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = _one(docs, "PodDisruptionBudget", "secmail")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # A drain can proceed (>= 1) and never empties the service (< replicas).
    assert 1 <= pdb["spec"]["maxUnavailable"] < replicas


def test_each_pod_runs_one_worker_per_cpu_of_its_limit(docs: dict[str, list[Doc]]) -> None:
    server = _server(docs)
    assert _flag(server["args"], "--workers") == "$(SECMAIL_WORKERS)"
    ref = _env(server)["SECMAIL_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu" and str(ref.get("divisor", "1")) == "1"
    resources = server["resources"]
    assert resources["limits"]["cpu"], "--workers follows the CPU limit, which must be set"
    # Guaranteed QoS: the cores the workers count on are reserved.
    assert resources["requests"] == resources["limits"]


def test_services_expose_only_the_api_port(docs: dict[str, list[Doc]]) -> None:
    server = _server(docs)
    by_name = {p["name"]: p["containerPort"] for p in server["ports"]}
    pod_labels = _deployment(docs)["spec"]["template"]["metadata"]["labels"]
    services = [d for d in docs["service.yaml"] if d["kind"] == "Service"]
    main = _one(docs, "Service", "secmail")
    assert main["spec"].get("type", "ClusterIP") == "ClusterIP"
    for svc in services:
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        (port,) = svc["spec"]["ports"]
        assert port["port"] == API_PORT and port["appProtocol"] == "grpc"
        target = port["targetPort"]
        assert (by_name[target] if isinstance(target, str) else target) == API_PORT


def _effective_image(image: str, kust: Doc) -> str:
    """``image`` after kustomize's ``images:`` transformer."""
    head, _, last = image.split("@", 1)[0].rpartition("/")
    repo = f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
    for rule in kust.get("images", []):
        if rule["name"] == repo:
            name = rule.get("newName", repo)
            if "digest" in rule:
                return f"{name}@{rule['digest']}"
            return f"{name}:{rule['newTag']}" if "newTag" in rule else name
    return image


def test_migration_job_runs_the_same_image_as_the_deployment(docs: dict[str, list[Doc]]) -> None:
    (kust,) = docs["kustomization.yaml"]
    deployed = _effective_image(_server(docs)["image"], kust)
    job = _job(docs)
    assert _container(job, "db-upgrade")["image"] == deployed
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert _container(job, "db-upgrade")["args"][:2] == ["db", "upgrade"]


# ---------------------------------------------------------------------------
# The argv the manifests pass must be one `secmail` accepts
# ---------------------------------------------------------------------------


def _expand(args: list[str], values: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values[m.group(1)], a) for a in args]


_SAMPLE_ENV = {
    "SECMAIL_DATABASE_URL": "postgresql+psycopg://secmail@db.invalid/secmail",
    "SECMAIL_WORKERS": "2",
}


def _argv_of(docs: dict[str, list[Doc]], which: str) -> list[str]:
    config = _one(docs, "ConfigMap", "secmail-config")["data"]
    values = {**config, **_SAMPLE_ENV}
    if which == "deployment":
        return _expand(_server(docs)["args"], values)
    if which == "job":
        return _expand(_container(_job(docs), "db-upgrade")["args"], values)
    return _dockerfile().cmd


@pytest.mark.parametrize("which", ["deployment", "job", "dockerfile"])
def test_argv_is_accepted_by_the_secmail_cli(
    docs: dict[str, list[Doc]], which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from secmail.cli import build_parser

    argv = _argv_of(docs, which)
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"secmail rejects the {which}'s argv {shlex.join(argv)}: {capsys.readouterr().err}")


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]]


@dataclass(frozen=True)
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]
    text: str

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def last(self, keyword: str) -> str | None:
        found = [rest for kw, rest in self.final.instructions if kw == keyword]
        return found[-1] if found else None

    @property
    def cmd(self) -> list[str]:
        entry = json.loads(self.last("ENTRYPOINT") or "[]")
        cmd = json.loads(self.last("CMD") or "[]")
        assert entry and Path(entry[0]).name == "secmail", "the entry point is the secmail command"
        return list(cmd)


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        # Comment lines (also inside a continued instruction) are dropped by the parser.
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""
    assert not logical, "the Dockerfile ends inside a continued instruction"


def _dockerfile() -> Dockerfile:
    text = DOCKERFILE.read_text(encoding="utf-8")
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name, []))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages, text)


def test_dockerfile_is_multi_stage_and_copies_only_the_venv() -> None:
    df = _dockerfile()
    assert len(df.stages) >= 2
    builder_names = {s.name for s in df.stages[:-1]}
    copies = [rest for kw, rest in df.final.instructions if kw == "COPY"]
    assert copies and all(re.match(r"--from=(\S+)", c) for c in copies), "runtime copies only from a stage"
    for c in copies:
        m = re.match(r"--from=(\S+)", c)
        assert m is not None and m.group(1) in builder_names
    builder = " ".join(rest for kw, rest in df.stages[0].instructions if kw == "RUN")
    assert "-m venv /opt/secmail" in builder and "/opt/secmail/bin/pip install ." in builder
    assert any("/opt/secmail /opt/secmail" in c for c in copies)


def test_dockerfile_base_image_is_pinned() -> None:
    df = _dockerfile()
    stage_names = {s.name for s in df.stages if s.name}
    documented_todo = "TODO" in df.text and "docker buildx imagetools inspect" in df.text
    for stage in df.stages:
        if stage.image in stage_names:
            continue
        pinned = re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", stage.image) is not None
        assert pinned or documented_todo, f"base {stage.image!r} is neither pinned by digest nor a TODO"
        assert re.match(r"(docker\.io/library/)?python:3\.11(\.\d+)?-slim-bookworm[@:]", stage.image)


def test_dockerfile_runs_as_an_unprivileged_user() -> None:
    df = _dockerfile()
    user = df.last("USER")
    assert user is not None, "no USER in the runtime stage: the container would run as root"
    uid, _, gid = user.partition(":")
    assert uid not in ("root", "0") and gid not in ("root", "0")
    # Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd, and the same
    # uid as the manifests' runAsUser.
    assert uid == str(POD_UID) and gid == str(POD_UID)


def test_dockerfile_runtime_has_ca_store_volume_port_and_healthcheck() -> None:
    df = _dockerfile()
    runs = " ".join(rest for kw, rest in df.final.instructions if kw == "RUN")
    # The CA store verifies the PostgreSQL server; no external tool (GnuPG) is needed at run time.
    assert re.search(r"apt-get install [^&]*\bca-certificates\b", runs)
    assert not re.search(r"\bgnupg\b", runs)
    assert "rm -rf /var/lib/apt/lists" in runs
    exposed = " ".join(rest for kw, rest in df.final.instructions if kw == "EXPOSE").split()
    assert str(API_PORT) in exposed
    volumes = [json.loads(rest) for kw, rest in df.final.instructions if kw == "VOLUME"]
    assert ["/var/lib/secmail"] in volumes
    hc = df.last("HEALTHCHECK")
    assert hc is not None and hc.upper() != "NONE"
    assert "grpc_health" in hc


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "default-deny: a stray master.key or .venv never enters the context"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    df = _dockerfile()
    for kw, rest in df.stages[0].instructions:
        if kw == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for src in sources:
                assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"


def _healthcheck_argv() -> list[str]:
    hc = _dockerfile().last("HEALTHCHECK")
    assert hc is not None
    _options, _, cmd = hc.partition("CMD ")
    argv = json.loads(cmd)
    assert isinstance(argv, list), "exec form, so no shell is needed in the image"
    assert argv[0] == "/opt/secmail/bin/python", "the venv's Python, which has grpc_health"
    # This venv stands in for the image's.
    return [sys.executable, *argv[1:]]


def _run_healthcheck(address: str) -> int:
    env = {**os.environ, "SECMAIL_HEALTH_CHECK_ADDRESS": address}
    return subprocess.run(_healthcheck_argv(), env=env, capture_output=True, timeout=60).returncode


def test_healthcheck_passes_against_a_serving_secmail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from secmail.service.server import ServerConfig, build_app, create_server

    monkeypatch.delenv("SECMAIL_MASTER_KEY", raising=False)
    app = build_app(ServerConfig(data_dir=tmp_path / "data"))
    server, port = create_server("127.0.0.1:0", app, threads=2)
    server.start()
    try:
        assert _run_healthcheck(f"127.0.0.1:{port}") == 0
    finally:
        server.stop(None)


def test_healthcheck_fails_when_not_serving() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert _run_healthcheck(f"127.0.0.1:{port}") == 1
    finally:
        server.stop(None)


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _run_healthcheck(f"127.0.0.1:{port}") != 0


def test_callers_configmap_is_a_valid_callers_file() -> None:
    from secmail.service.config import parse_callers

    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/configmap-callers.yaml").read_text()))
    config = parse_callers(docs[0]["data"]["callers.toml"])
    assert {c.name for c in config.callers} == {"webmail-besancon", "submission-gateway", "admins"}
    deployment = (ROOT / "deploy/kubernetes/deployment.yaml").read_text()
    assert "--callers=/etc/secmail/callers/callers.toml" in deployment
