"""Static checks of the deployment recipes in cluster/ and docker/ (no Docker engine, Kubernetes or
Slurm runs here): every manifest parses; the KubeRay objects have what KubeRay's CRDs and
validation require; every ``mona-tune ...`` command line in them parses with mona-tune's own
argument parser; compose, the Dockerfile and .dockerignore have the properties the README
promises; ray-onprem.yaml validates against the schema inside the ``ray`` package; the Slurm
script is valid bash and its readiness loops work against stub ``srun``/``ray`` commands.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest
import ray
import yaml

from locks import RUNTIME, pinned_here

from mona_tune.cli import build_parser
from mona_tune.errors import MonaError

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "cluster" / "kuberay"
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ONPREM = ROOT / "cluster" / "ray-onprem.yaml"
SLURM = ROOT / "cluster" / "slurm-ray.sbatch"
CLUSTER_README = ROOT / "cluster" / "README.md"

RAY_VERSION = ray.__version__
SUBCOMMANDS = ("search", "tracking-server", "train", "data", "best", "ui", "compare")
GPU = "nvidia.com/gpu"


# ---------------------------------------------------------------- helpers
def load_docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no YAML document"
    for d in docs:
        assert isinstance(d, dict), f"{path}: a document is not a mapping"
    return docs


def kuberay_objects() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path, d) for d in load_docs(path)]
    return out


def the(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in kuberay_objects()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in cluster/kuberay, found {len(found)}"
    return found[0]


def parse_mona(argv: list[str]):
    """mona-tune's own parser; a bad flag raises (MonaError), which fails the test."""
    return build_parser().parse_args(argv)


_SHELL_VAR = re.compile(r"\$\([^()]*\)|\$\{[^{}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\$\d")


def strip_shell_vars(text: str) -> str:
    """Shell expansions -> a neutral word that every flag accepts (paths, numbers, hosts)."""
    return _SHELL_VAR.sub("1", text)


def command_after(text: str, start: int) -> list[str]:
    """The words of the command at ``text[start:]``, up to the first shell operator."""
    rest = text[start:].split("`", 1)[0]
    lex = shlex.shlex(strip_shell_vars(rest), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    words = []
    for tok in lex:
        if tok and set(tok) <= set("();<>|&"):
            break
        words.append(tok)
    return words


_MONA = re.compile(r"(?:^|(?<=[\s`'\"/=(]))mona-tune\s+(?=(" + "|".join(SUBCOMMANDS) + r")\b)")


def mona_commands_in_text(text: str) -> list[list[str]]:
    """Every ``mona-tune <subcommand> ...`` in one logical line, as argv without "mona-tune"."""
    return [command_after(text, m.end()) for m in _MONA.finditer(text)]


def logical_lines(text: str, *, comments_only: bool = False) -> list[str]:
    """Lines with backslash continuations joined; comment markers removed. ``comments_only``:
    only comment lines (YAML files: their values are read through the YAML parser)."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        is_comment = line.startswith("#")
        if comments_only and not is_comment and not buf:
            continue
        line = line.lstrip("#").strip() if is_comment else line
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def yaml_strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in yaml_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in yaml_strings(v)]
    return []


def markdown_text(path: Path) -> list[str]:
    """Paragraphs joined (inline code may wrap), fenced blocks as logical lines; <placeholders>
    become a word."""
    out, para, fenced = [], [], []
    in_fence = False
    for raw in path.read_text().splitlines():
        if raw.strip().startswith("```"):
            if in_fence:
                out += logical_lines("\n".join(fenced))
                fenced = []
            in_fence = not in_fence
            continue
        if in_fence:
            fenced.append(raw)
        elif raw.strip():
            para.append(raw.strip())
        else:
            out.append(" ".join(para))
            para = []
    out.append(" ".join(para))
    return [re.sub(r"<[^<>]*>", "X", s) for s in out]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def uses_mona_image(image: str) -> bool:
    return "mona-tune" in image.rsplit("/", 1)[-1].split(":", 1)[0]


# ---------------------------------------------------------------- every file parses
RECIPE_YAML = [*sorted(KUBERAY.glob("*.yaml")), COMPOSE, ONPREM]


@pytest.mark.parametrize("path", RECIPE_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_parses(path):
    docs = load_docs(path)
    if path.parent == KUBERAY and path.name != "kustomization.yaml":
        for d in docs:
            assert d.get("apiVersion") and d.get("kind"), f"{path.name}: apiVersion/kind missing"
            assert d["metadata"].get("name"), f"{path.name}: {d['kind']} without a name"
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == the("Namespace")["metadata"]["name"], \
                    f"{path.name}: {d['kind']} {d['metadata']['name']} outside the namespace"


def test_kustomization_lists_the_long_lived_manifests():
    kust = load_docs(KUBERAY / "kustomization.yaml")[0]
    listed = set(kust["resources"])
    for name in listed:
        assert (KUBERAY / name).is_file(), f"kustomization lists a missing file {name}"
    files = {p.name for p in KUBERAY.glob("*.yaml")} - {"kustomization.yaml"}
    job_files = {p.name for p in KUBERAY.glob("*.yaml")
                 if any(d.get("kind") == "RayJob" for d in load_docs(p))}
    assert job_files, "no RayJob manifest"
    assert listed == files - job_files, "kustomization: every manifest but the RayJob(s)"


def test_no_password_in_any_recipe():
    uri_with_password = re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^\s:@/]+:[^\s@/]+@")
    for path in [*RECIPE_YAML, DOCKERFILE, SLURM, CLUSTER_README]:
        text = path.read_text()
        assert not uri_with_password.search(text), f"{path.name}: a database URI with a password"
    for path, d in kuberay_objects():
        assert d["kind"] != "Secret", f"{path.name}: a Secret with its value in the repository"


# ---------------------------------------------------------------- KubeRay
def test_raycluster_has_what_kuberay_requires():
    rc = the("RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    name = rc["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 53, \
        "KubeRay: a RayCluster name is a DNS-1035 label of at most 53 characters"
    spec = rc["spec"]
    assert spec["rayVersion"] == RAY_VERSION, "rayVersion must be the Ray in the image"
    assert spec["authOptions"]["mode"] == "token", "token authentication via authOptions"

    head = spec["headGroupSpec"]
    assert containers(head["template"]), "headGroupSpec.template.spec.containers is required"
    groups = [("head", head)] + [(w["groupName"], w) for w in spec["workerGroupSpecs"]]
    assert len(groups) >= 2, "at least one worker group"
    for gname, group in groups:
        params = group.get("rayStartParams", {})
        assert all(isinstance(v, str) for v in params.values()), \
            f"{gname}: rayStartParams values must be strings (the CRD says so)"
        assert "labels" not in params, f"{gname}: KubeRay refuses rayStartParams['labels']"
        if group.get("resources"):  # KubeRay: not both
            assert not {"num-cpus", "num-gpus", "memory", "resources"} & set(params)
        for c in containers(group["template"]):
            assert c.get("image") and c.get("name")
    assert "num-cpus" in head["rayStartParams"], "the head states its CPUs (0: no trials)"
    for w in spec["workerGroupSpecs"]:
        for key in ("groupName", "minReplicas", "maxReplicas", "template"):
            assert key in w, f"worker group: {key} is required by the CRD"
        assert 0 <= w["minReplicas"] <= w.get("replicas", w["minReplicas"]) <= w["maxReplicas"]


def _gpus(container: dict) -> float:
    res = container.get("resources", {})
    return max(float(res.get(part, {}).get(GPU, 0)) for part in ("limits", "requests"))


def test_gpus_on_the_worker_group_only():
    spec = the("RayCluster")["spec"]
    for c in containers(spec["headGroupSpec"]["template"]):
        assert _gpus(c) == 0, "the head is a CPU node"
    worker_gpus = [_gpus(c) for w in spec["workerGroupSpecs"] for c in containers(w["template"])]
    assert max(worker_gpus) >= 1, "the workers hold the GPUs"
    for w in spec["workerGroupSpecs"]:
        for c in containers(w["template"]):
            if _gpus(c):
                assert float(c["resources"]["limits"][GPU]) >= 1, "GPUs are set in limits"


def test_storage_is_shared_by_every_ray_pod():
    spec = the("RayCluster")["spec"]
    pods = [spec["headGroupSpec"]["template"]] + [w["template"] for w in spec["workerGroupSpecs"]]
    mounts = []
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["spec"].get("volumes", []) if "persistentVolumeClaim" in v}
        mounts.append({(claims[m["name"]], m["mountPath"]) for c in containers(pod)
                       for m in c.get("volumeMounts", []) if m["name"] in claims})
    shared = set.intersection(*mounts)
    assert shared, "one claim mounted at the same path on the head and every worker"
    for claim, _ in shared:
        pvc = the("PersistentVolumeClaim", claim)
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_rayjob_runs_the_search_on_the_cluster():
    job = the("RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    name = job["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47
    if "clusterSelector" in spec:  # KubeRay's rules for that mode
        assert spec["clusterSelector"]["ray.io/cluster"] == the("RayCluster")["metadata"]["name"]
        assert spec.get("submissionMode", "K8sJobMode") != "SidecarMode"
        assert not spec.get("backoffLimit"), "backoffLimit is refused with clusterSelector"
        assert not spec.get("shutdownAfterJobFinishes") and not spec.get("suspend")
    else:
        assert spec["rayClusterSpec"]["authOptions"]["mode"] == "token"

    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["mona-tune", "search"], "the entrypoint is the search"
    args = parse_mona(argv[1:])
    assert args.address is None, "the driver joins via RAY_ADDRESS, set by Ray's job supervisor"
    # storage: the shared claim's mount path, or object storage
    rc = the("RayCluster")["spec"]
    head_paths = {m["mountPath"] for c in containers(rc["headGroupSpec"]["template"])
                  for m in c.get("volumeMounts", [])}
    assert args.storage.startswith(("s3://", "gs://")) or \
        any(args.storage == p or args.storage.startswith(p.rstrip("/") + "/") for p in head_paths)
    # tracking: the mlflow Service, started with that host name allowed
    uri = urlparse(args.tracking_uri)
    assert uri.scheme == "http"
    svc = the("Service", uri.hostname)
    assert uri.port in {p["port"] for p in svc["spec"]["ports"]}
    server = _mlflow_server_args()
    assert uri.hostname in server.allowed_hosts.split(",")


def _mlflow_container() -> dict:
    dep = the("Deployment", "mlflow")
    (c,) = [c for c in containers(dep["spec"]["template"]) if uses_mona_image(c["image"])]
    return c


def _mlflow_server_args():
    c = _mlflow_container()
    argv = c.get("command", [])[1:] + c["args"] if c.get("command") else c["args"]
    return parse_mona(argv)


def test_mlflow_tracking_server_manifests():
    ns = the("Namespace")["metadata"]["name"]
    args = _mlflow_server_args()
    assert args.cmd == "tracking-server"
    assert args.backend_store_uri.startswith("postgresql://")
    assert args.host == "0.0.0.0"
    allowed = args.allowed_hosts.split(",")
    assert "mlflow" in allowed and f"mlflow.{ns}.svc" in allowed
    # the password comes from a Secret, through libpq's PGPASSWORD
    env = {e["name"]: e for e in _mlflow_container().get("env", [])}
    assert "secretKeyRef" in env["PGPASSWORD"]["valueFrom"]
    # the Service reaches the pod
    dep = the("Deployment", "mlflow")
    svc = the("Service", "mlflow")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {p.get("targetPort", p["port"]) for p in svc["spec"]["ports"]} & {args.port}
    # the database it names exists here, with the same Secret
    db = urlparse(args.backend_store_uri)
    pg_svc = the("Service", db.hostname)
    assert (db.port or 5432) in {p["port"] for p in pg_svc["spec"]["ports"]}
    sts = the("StatefulSet", "postgres")
    assert sts["spec"]["serviceName"] == db.hostname
    (pg,) = containers(sts["spec"]["template"])
    assert pg["image"].startswith("postgres:")
    pg_env = {e["name"]: e for e in pg["env"]}
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == \
        env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert pg_env["POSTGRES_USER"]["value"] == db.username
    assert pg_env["POSTGRES_DB"]["value"] == db.path.lstrip("/")
    assert "pg_isready" in " ".join(pg["readinessProbe"]["exec"]["command"])


def test_images_name_the_installed_ray():
    spec = the("RayCluster")["spec"]
    pods = [spec["headGroupSpec"]["template"]] + [w["template"] for w in spec["workerGroupSpecs"]]
    images = [c["image"] for pod in pods for c in containers(pod)]
    images.append(_mlflow_container()["image"])
    compose = load_docs(COMPOSE)[0]
    images += [s["image"] for s in compose["services"].values() if uses_mona_image(s["image"])]
    assert len(images) >= 4
    for image in images:
        assert ":" in image.rsplit("/", 1)[-1], f"{image}: no tag"
        assert RAY_VERSION in image.rsplit(":", 1)[1], f"{image}: the tag does not name Ray {RAY_VERSION}"
        assert uses_mona_image(image), f"{image}: Ray pods run mona-tune code: use the mona-tune image"


# ---------------------------------------------------------------- compose
def compose() -> dict:
    return load_docs(COMPOSE)[0]


def _flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def test_compose_services():
    services = compose()["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "ray-worker"}, \
        "no separate driver container: the search is a Ray job"
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} not on 127.0.0.1"
        if name != "postgres":
            assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    assert len({s["image"] for n, s in services.items() if n != "postgres"}) == 1


def test_compose_mlflow_on_postgres():
    services = compose()["services"]
    mlflow = services["mlflow"]
    assert "entrypoint" not in mlflow, "the image's entrypoint (mona-tune) runs the command"
    args = parse_mona(mlflow["command"])
    assert args.cmd == "tracking-server"
    db = urlparse(args.backend_store_uri)
    assert db.scheme == "postgresql" and db.hostname == "postgres"
    assert db.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert args.host == "0.0.0.0"
    assert {"mlflow", "localhost"} <= set(args.allowed_hosts.split(","))
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "PGPASSWORD" in mlflow["environment"]
    assert mlflow["healthcheck"]["test"], "ray-head waits for a healthy mlflow"


def test_compose_ray_nodes_have_disjoint_gpus():
    services = compose()["services"]
    gpu_sets = {}
    for name in ("ray-head", "ray-worker"):
        svc = services[name]
        argv = svc["entrypoint"]
        assert argv[:2] == ["ray", "start"]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        ids = {i for d in devices for i in d.get("device_ids", [])}
        assert ids, f"{name}: explicit device_ids (all GPUs in both would double-count them)"
        assert int(_flag(argv, "--num-gpus")) == len(ids), f"{name}: --num-gpus != its GPUs"
        env = svc["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in env
        assert "runs:/work/runs" in svc["volumes"]
        gpu_sets[name] = ids
    assert not gpu_sets["ray-head"] & gpu_sets["ray-worker"], "head and worker share a GPU"
    head, worker = services["ray-head"]["entrypoint"], services["ray-worker"]["entrypoint"]
    assert "--head" in head and "--head" not in worker
    assert _flag(worker, "--address") == f"ray-head:{_flag(head, '--port')}"


def test_compose_documents_a_ray_job_submit_that_parses():
    services = compose()["services"]
    published = {p.rsplit(":", 1)[1] for s in services.values() for p in s.get("ports", [])}
    allowed = parse_mona(services["mlflow"]["command"]).allowed_hosts.split(",")
    submits = [line for line in logical_lines(COMPOSE.read_text(), comments_only=True)
               if re.search(r"\bray job submit .* -- ", line)]
    assert submits, "the header documents `ray job submit`"
    for line in submits:
        before, after = line.split(" -- ", 1)
        address = urlparse(_flag(shlex.split(before), "--address"))
        assert address.hostname == "127.0.0.1" and str(address.port) in published | {"8265"}
        argv = shlex.split(after)
        assert argv[:2] == ["mona-tune", "search"]
        args = parse_mona(argv[1:])
        assert args.storage == "/work/runs"
        assert urlparse(args.tracking_uri).hostname in {h.lower() for h in allowed}


# ---------------------------------------------------------------- Dockerfile, .dockerignore
def dockerfile_stages() -> list[list[str]]:
    """Instructions (continuations joined) grouped by stage; the first word is the keyword."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_multistage_non_root_no_compilers():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    final = stages[-1]
    builder_names = [s[0].split()[-1] for s in stages[:-1] if " AS " in s[0].upper()]
    assert any(re.match(rf"COPY --from={n}\b.*/opt/venv", i) for i in final for n in builder_names)
    compilers = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cc|make|python3?-dev)\b")
    for instr in final:
        if instr.upper().startswith("RUN"):
            assert not compilers.search(instr), f"a compiler in the final stage: {instr}"
    assert any(compilers.search(i) for s in stages[:-1] for i in s), "the builder has the tools"
    users = [i.split(None, 1)[1] for i in final if i.upper().startswith("USER ")]
    assert users, "the final stage sets a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "the image runs as a non-root user"
    entry = [i for i in final if i.upper().startswith("ENTRYPOINT")][-1]
    assert json.loads(entry.split(None, 1)[1]) == ["mona-tune"]
    run_text = " ".join(i for s in stages for i in s if i.upper().startswith("RUN"))
    assert "runtime.txt" in run_text
    assert {"psycopg", "boto3"} <= set(pinned_here(RUNTIME)), "the [postgres,s3] extras"


def test_the_image_installs_the_lock():
    """The image holds the tested versions: locks/runtime.txt with its hashes, then the package
    without dependencies; that lock names the Ray this suite runs and the image's tag names."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^COPY locks/runtime\.txt (\S+)$", text, re.MULTILINE)
    assert re.search(r"pip install --require-hashes -r \S*runtime\.txt", text)
    assert re.search(r"pip install --no-deps --no-build-isolation \.", text)
    assert not [a for a in re.findall(r"^ARG (\w+)_VERSION=", text, re.MULTILINE)
                if a != "PYTHON"], "versions come from the lock, not from build arguments"
    runtime = pinned_here(RUNTIME)
    for name in ("ray", "torch", "mlflow"):
        assert runtime[name] == importlib.metadata.version(name).split("+")[0], name
    assert runtime["ray"] == RAY_VERSION
    base = [s[0] for s in dockerfile_stages()]
    assert all("python:${PYTHON_VERSION}" in b or "python:3" in b for b in base)


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        pat = pat.rstrip("/")
        if pat.startswith("**/"):
            if any(fnmatch.fnmatch(p, pat[3:]) for p in parts):
                return True
        elif any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            return True
    return False


def test_dockerignore_keeps_local_state_out_and_the_sources_in():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")]
    for path in (".venv/bin/python", ".git/HEAD", "runs/x/state.json", "mlruns/0/meta.yaml",
                 "mlartifacts/1/a", "mlflow.db", "benchmarks/out/r.json",
                 "mona_tune/__pycache__/cli.cpython-311.pyc", "mona_tune.egg-info/PKG-INFO",
                 ".pytest_cache/v/x"):
        assert _ignored(path, patterns), f".dockerignore lets {path} into the build context"
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = [s for line in copied for s in line.split()]
    assert "mona_tune" in sources and "pyproject.toml" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    assert not _ignored("mona_tune/search_spaces/darcy.yaml", patterns)


# ---------------------------------------------------------------- ray up (on-prem)
def onprem() -> dict:
    return load_docs(ONPREM)[0]


def test_onprem_validates_against_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")  # installed with ray[default]
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    config = onprem()
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] == "local"
    # what `ray up` does with it before touching a machine
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
    # and a broken one is refused (the check can fail)
    broken = copy.deepcopy(config)
    broken["provider"]["worker_ips"] = "WORKER_IP_1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_onprem_commands():
    config = onprem()
    lists = ("setup_commands", "head_setup_commands", "head_start_ray_commands",
             "worker_start_ray_commands")
    bash = shutil.which("bash")
    for key in lists:
        for cmd in config.get(key, []):
            r = subprocess.run([bash, "-n", "-c", cmd], capture_output=True, text=True,
                               check=False)
            assert r.returncode == 0, f"{key}: not valid bash: {cmd}\n{r.stderr}"
            for m in re.finditer(r"\bsleep\b", cmd):
                assert re.search(r"\b(for|while|until)\b.*\bdo\b", cmd[: m.start()]), \
                    f"{key}: a fixed sleep outside a readiness loop: {cmd}"
    setup = " ".join(config["setup_commands"])
    assert "--require-hashes -r ~/mona-tune/locks/runtime.txt" in setup, \
        "every node gets the tested versions, the client's Ray among them"
    assert pinned_here(RUNTIME)["ray"] == RAY_VERSION
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)

    servers = [parse_mona(a) for c in config["head_start_ray_commands"]
               for a in mona_commands_in_text(c)]
    (server,) = [a for a in servers if a.cmd == "tracking-server"]
    assert server.backend_store_uri.startswith("postgresql://")
    allowed = server.allowed_hosts.split(",")
    assert server.host == "0.0.0.0" and "HEAD_IP" in allowed
    assert any("/health" in c and re.search(r"\b(for|until|while)\b", c)
               for c in config["head_start_ray_commands"]), "wait for the server, not a sleep"
    searches = [parse_mona(a) for line in logical_lines(ONPREM.read_text(), comments_only=True)
                for a in mona_commands_in_text(line) if a[0] == "search"]
    assert searches
    for s in searches:
        assert s.tracking_uri == f"http://HEAD_IP:{server.port}"
        assert urlparse(s.tracking_uri).hostname in {h.lower() for h in allowed}


# ---------------------------------------------------------------- Slurm
def test_slurm_script_is_valid_bash_without_fixed_sleeps():
    r = subprocess.run(["bash", "-n", str(SLURM)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    depth = 0
    for raw in SLURM.read_text().splitlines():
        line = raw.split("#", 1)[0] if not raw.lstrip().startswith("#!") else ""
        if re.search(r"(^|;)\s*(for|while|until)\b", line) and re.search(r"\bdo\s*$", line):
            depth += 1
        if re.match(r"\s*sleep\s+\d+", line):
            assert depth > 0, f"a fixed sleep outside a readiness loop: {raw.strip()}"
        if re.match(r"\s*done\b", line):
            depth -= 1
    assert depth == 0
    assert not re.search(r"^\s*sleep 15\s*$", SLURM.read_text(), re.MULTILINE)


def _node_gpus(**env) -> subprocess.CompletedProcess:
    """The sbatch script's node_gpus function alone, under its own shell options and ``env``."""
    text = SLURM.read_text()
    fn = re.search(r"^node_gpus\(\) \{\n.*?^\}\n", text, re.MULTILINE | re.DOTALL).group(0)
    fail = re.search(r"^fail\(\) \{.*\}$", text, re.MULTILINE).group(0)
    script = f"set -euo pipefail\n{fail}\n{fn}node_gpus\n"
    return subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=10, check=False)


@pytest.mark.parametrize("env, want", [
    ({"SLURM_GPUS_ON_NODE": "2", "SLURM_GPUS_PER_NODE": "a100:4"}, "2"),  # Slurm's own count
    ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, "3"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-6f2b,GPU-91c0"}, "2"),  # UUIDs
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_GPUS_PER_NODE": "4"}, "0"),
    ({"SLURM_GPUS_PER_NODE": "4"}, "4"),
    ({"SLURM_GPUS_PER_NODE": "a100:4"}, "4"),
    ({"SLURM_GPUS_PER_NODE": "a100:2,v100:1"}, "3"),
    ({}, "0"),  # a CPU-only allocation
])
def test_slurm_gpus_for_ray_come_from_the_allocation(env, want):
    r = _node_gpus(**env)
    assert r.returncode == 0 and r.stdout.strip() == want, (r.stdout, r.stderr)


def test_slurm_gpus_without_a_count_is_one_error_line():
    r = _node_gpus(SLURM_GPUS_PER_NODE="a100")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == "error: SLURM_GPUS_PER_NODE=a100: no GPU count in 'a100'"


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def slurm_env(tmp_path):
    """The sbatch script's world, stubbed, for what a one-node Slurm cannot show (two nodes, the
    paper's flags, each readiness failure): scontrol (two nodes), srun (logs the step; the search
    step runs its command, a Ray worker stays up), ray (`start` logs and stays up like `--block`,
    or exits $RAY_START_RC; `status` answers once the head runs, or per $RAY_STATUS_RC), python
    (port probes: free; alive nodes = Ray starts so far, or $ALIVE; /health answers once the
    tracking server runs, or per $HEALTH_RC), mona-tune (records its argv; tracking-server stays
    up) and sleep (a tenth of a second). Nothing real starts; ``test_slurm.py`` runs the script on
    a real Slurm."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    real_sleep = shutil.which("sleep")
    _stub(stubs, "sleep", f"exec {real_sleep} 0.1\n")
    _stub(stubs, "scontrol", """\
        case "$1 $2" in
          "show hostnames") printf "%s\\n" ${SCONTROL_NODES:-node1 node2} ;;
          "show job") echo "   Command=/home/u/mona-tune/cluster/slurm-ray.sbatch" ;;
        esac
        """)
    _stub(stubs, "scancel", f'echo "scancel $*" >> {log}\n')
    _stub(stubs, "squeue", 'echo "42.1 mona-tune-search"\n')
    _stub(stubs, "srun", f"""\
        echo "srun $*" >> {log}
        while [ $# -gt 0 ] && [ "$1" != mona-tune ] && [ "$1" != ray ] && [ "$1" != rm ]; do shift; done
        [ "$1" = mona-tune ] || [ "$1" = rm ] && exec "$@"
        exec {real_sleep} 30
        """)
    _stub(stubs, "ray", f"""\
        if [ "$1" = start ]; then
          [ -z "${{RAY_START_RC:-}}" ] || exit "$RAY_START_RC"
          echo "ray $*" >> {log}
          exec {real_sleep} 30
        fi
        [ "$1" = status ] || exit 2
        [ -z "${{RAY_STATUS_RC:-}}" ] || exit "$RAY_STATUS_RC"
        grep -q -- "--head" {log}
        """)
    _stub(stubs, "python", f"""\
        if [ "$1" = - ]; then
          grep -q socket && exit 0   # a port probe: free
          echo "${{ALIVE:-$(grep -c 'ray start' {log})}}"; exit 0
        fi
        [ -z "${{HEALTH_RC:-}}" ] || exit "$HEALTH_RC"
        [ -f {tmp_path}/mona-tracking-server.argv ]
        """)
    _stub(stubs, "mona-tune", f"""\
        printf '%s\\0' "$@" > {tmp_path}/mona-$1.argv
        if [ "$1" = tracking-server ]; then exec {real_sleep} 30; fi
        exit "${{SEARCH_RC:-0}}"
        """)
    home = tmp_path / "home"
    (home / "mona-venv" / "bin").mkdir(parents=True)
    (home / "mona-venv" / "bin" / "activate").write_text(f'export PATH="{stubs}:$PATH"\n')
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("t" * 32)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "DARCY_DIR": "/data/darcy",
           "CIFAR_DIR": "/data/cifar-10-batches-py", "SWIN_WEIGHTS": "/data/swin.safetensors",
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURMD_NODENAME": "node1",
           "SLURM_CPUS_PER_TASK": "16", "SLURM_GPUS_PER_NODE": "a100:4", "SLURM_JOB_ID": "42",
           "RAY_HEAD_IP": "10.0.0.1", "RAY_TMPDIR": str(tmp_path / "ray-tmp")}
    (tmp_path / "ray-tmp" / "ray-42" / "session_latest").mkdir(parents=True)  # as Ray leaves it
    return tmp_path, env, log


def _run_slurm(tmp_path, env, **extra):
    return subprocess.run(["bash", str(SLURM)], cwd=tmp_path, env={**env, **extra},
                          capture_output=True, text=True, timeout=60, check=False)


def _argv(tmp_path, sub) -> list[str]:
    return (tmp_path / f"mona-{sub}.argv").read_text().split("\0")[:-1]


BASE = 20000 + 42 % 60 * 200  # job 42's block of ports


def test_slurm_script_starts_the_cluster_server_and_search(slurm_env):
    tmp_path, env, log = slurm_env
    r = _run_slurm(tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert "2 of 2 nodes alive, 16 CPUs and 4 GPUs each" in r.stdout
    calls = log.read_text().splitlines()   # the head first: the worker starts once it answers
    assert calls[0].startswith("ray start --head --node-ip-address=10.0.0.1")
    assert f"--port={BASE} " in calls[0] and f"--temp-dir={tmp_path}/ray-tmp/ray-42" in calls[0]
    assert calls[1].startswith("srun --nodes=1 --ntasks=1 -w node2")
    assert f"ray start --address=10.0.0.1:{BASE}" in calls[1]
    assert all("--num-gpus=4" in c and f"--min-worker-port={BASE + 20}" in c for c in calls[:2])
    assert calls[2].startswith("srun --overlap --nodes=1 --ntasks=1 -w node1 "
                               "--job-name=mona-tune-search mona-tune search")
    # the workers' temp folders go too, once their Ray has stopped
    assert calls[3] == f"srun --overlap --nodes=1 --ntasks=1 -w node2 rm -rf {tmp_path}/ray-tmp/ray-42"

    server = parse_mona(_argv(tmp_path, "tracking-server"))
    assert server.host == "10.0.0.1" and server.port == BASE + 9
    assert "10.0.0.1" in server.allowed_hosts.split(",")
    search = parse_mona(_argv(tmp_path, "search"))
    assert search.tracking_uri == f"http://10.0.0.1:{BASE + 9}"
    assert search.address == f"10.0.0.1:{BASE}"
    assert search.storage == f"{tmp_path}/runs" and search.name == "darcy-paper-42"
    assert (search.fix_data_dir, search.fix_source_data, search.fix_weights) == (
        "/data/darcy", "cifar10:/data/cifar-10-batches-py", "/data/swin.safetensors")
    assert (tmp_path / "ray-tmp").is_dir() and not (tmp_path / "ray-tmp" / "ray-42").exists()

    log.write_text("")
    (tmp_path / "mona-tracking-server.argv").unlink()
    inputs = ("DARCY_DIR", "CIFAR_DIR", "SWIN_WEIGHTS")  # a resumed search keeps its own
    env = {k: v for k, v in env.items() if k not in inputs}
    r = _run_slurm(tmp_path, env, MLFLOW_TRACKING_URI="http://mlflow.example:5000",
                   SEARCH_NAME="darcy-paper-7", RESUME="1")
    assert r.returncode == 0, r.stderr
    search = parse_mona(_argv(tmp_path, "search"))
    assert search.resume and search.name == "darcy-paper-7"
    assert search.tracking_uri == "http://mlflow.example:5000"
    assert not (tmp_path / "mona-tracking-server.argv").exists(), "the given server is used"


def test_slurm_script_continues_a_search_found_in_runs(slurm_env):
    """A job with the name of a search already in ./runs continues it (a requeued or resubmitted
    job); SEARCH_ARGS replace the paper's flags of a new one."""
    tmp_path, env, _ = slurm_env
    env = {k: v for k, v in env.items() if k not in ("DARCY_DIR", "CIFAR_DIR", "SWIN_WEIGHTS")}
    r = _run_slurm(tmp_path, env, SEARCH_NAME="mine", SEARCH_ARGS="--task burgers --seed 4")
    assert r.returncode == 0, r.stderr
    search = parse_mona(_argv(tmp_path, "search"))
    assert (search.task, search.seed, search.resume) == ("burgers", 4, False)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "mona_search.json").write_text("{}")
    r = _run_slurm(tmp_path, env, SEARCH_NAME="mine", SEARCH_ARGS="--task burgers --seed 4")
    assert r.returncode == 0, r.stderr
    argv = _argv(tmp_path, "search")
    assert "--resume" in argv and "--task" not in argv and parse_mona(argv).name == "mine"
    assert "continuing search mine" in r.stdout


@pytest.mark.parametrize("requeue", [False, True])
def test_slurm_script_after_a_stopped_search(slurm_env, requeue):
    """The search stopped by a signal (exit 143): Ray is stopped, the job exits 143 and says how to
    continue, or with REQUEUE=1 requeues itself."""
    tmp_path, env, log = slurm_env
    extra = {"SEARCH_RC": "143"} | ({"REQUEUE": "1"} if requeue else {})
    r = _run_slurm(tmp_path, env, **extra)
    assert r.returncode == 143, r.stderr
    assert "the search stopped (exit status 143)" in r.stdout
    if requeue:
        assert "requeueing job 42" in r.stdout
    else:
        assert ("continue with: sbatch --export=ALL,SEARCH_NAME=darcy-paper-42 "
                "/home/u/mona-tune/cluster/slurm-ray.sbatch") in r.stdout


@pytest.mark.parametrize("nodes, ok", [("node1", True), ("node1 node2", False)])
def test_slurm_script_loopback_head_only_alone(slurm_env, nodes, ok):
    """A loopback head address serves a one-node allocation; other nodes could not reach it."""
    tmp_path, env, _ = slurm_env
    r = _run_slurm(tmp_path, env, RAY_HEAD_IP="127.0.0.1", SCONTROL_NODES=nodes)
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 1 and r.stderr.strip() == (
            "error: the head's address is '127.0.0.1' (loopback), which the other nodes cannot "
            "reach; set RAY_HEAD_IP")


@pytest.mark.parametrize("fault, message", [
    ({"RAY_STATUS_RC": "1", "RAY_START_TIMEOUT": "0"},
     f"the Ray head at 10.0.0.1:{BASE} did not answer within 0s"),
    ({"RAY_START_RC": "1"}, "the Ray head did not start"),   # no waiting for the deadline
    ({"RAY_STATUS_RC": "0", "ALIVE": "1", "RAY_START_TIMEOUT": "0"},
     "has 1 of 2 nodes alive after 0s"),
    ({"RAY_STATUS_RC": "0", "ALIVE": "2", "HEALTH_RC": "1", "RAY_START_TIMEOUT": "0"},
     f"the tracking server did not answer at http://10.0.0.1:{BASE + 9}"),
])
def test_slurm_script_readiness_fails_with_a_clear_error(slurm_env, fault, message):
    tmp_path, env, _ = slurm_env
    r = _run_slurm(tmp_path, env, **fault)
    assert r.returncode != 0
    assert message in r.stderr
    assert not (tmp_path / "mona-search.argv").exists(), "no search on a cluster not ready"


# ---------------------------------------------------------------- every mona-tune command line
def all_mona_command_lines() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for path in RECIPE_YAML:
        text = path.read_text()
        for line in logical_lines(text, comments_only=True):
            found += [(f"{path.name} (comment)", a) for a in mona_commands_in_text(line)]
        for doc in load_docs(path):
            for s in yaml_strings(doc):
                found += [(path.name, a) for a in mona_commands_in_text(" ".join(s.split()))]
    for path in (SLURM, DOCKERFILE):
        for line in logical_lines(path.read_text()):
            found += [(path.name, a) for a in mona_commands_in_text(line)]
    for para in markdown_text(CLUSTER_README):
        found += [(CLUSTER_README.name, a) for a in mona_commands_in_text(para)]
    return found


def test_every_mona_tune_command_line_parses():
    found = all_mona_command_lines()
    where = {w.split()[0] for w, _ in found}
    assert {"rayjob.yaml", "compose.yaml", "ray-onprem.yaml", "slurm-ray.sbatch"} <= where
    assert sum(1 for _, a in found if a[0] == "search") >= 6
    for w, argv in found:
        try:
            parse_mona(argv)
        except MonaError as e:  # the parser's own message
            pytest.fail(f"{w}: mona-tune {' '.join(argv)}: {e}")


def test_the_command_line_check_can_fail():
    assert mona_commands_in_text("x `mona-tune search --storage /r --bogus 1` y") == \
        [["search", "--storage", "/r", "--bogus", "1"]]
    with pytest.raises(MonaError, match="unrecognized arguments"):
        parse_mona(["search", "--storage", "/r", "--bogus", "1"])
    assert mona_commands_in_text('nohup ~/v/bin/mona-tune tracking-server --port "$P" > l &') == \
        [["tracking-server", "--port", "1"]]


# ---------------------------------------------------------------- paper searches: real inputs
README = ROOT / "README.md"


def _paper_space(args) -> bool:
    """The search runs a packaged space that declares ``scale: paper``."""
    from mona_tune.search.space import load_space, packaged_spaces

    path = packaged_spaces().get(str(args.space).removesuffix(".yaml"))
    return path is not None and load_space(path, args.task).fixed.get("scale") == "paper"


def paper_searches() -> list[tuple[str, object]]:
    lines = all_mona_command_lines()
    lines += [(README.name, a) for para in markdown_text(README) for a in mona_commands_in_text(para)]
    return [(w, args) for w, a in lines if a[0] == "search" and "--space" in a
            for args in [parse_mona(a)] if _paper_space(args)]


def test_every_packaged_paper_space_declares_scale_paper():
    from mona_tune.search.space import load_space

    spaces = sorted((ROOT / "mona_tune" / "search_spaces").glob("*-paper.yaml"))
    assert "darcy-paper.yaml" in {p.name for p in spaces}
    for path in spaces:
        assert load_space(path, None).fixed.get("scale") == "paper", path.name


def test_every_paper_search_passes_the_real_data_model_and_source_data():
    """A recipe that runs a paper space gives --data-dir, --source-model with --weights (cluster
    nodes are often offline) and CIFAR-10 as the source data: none trains the toy."""
    from mona_tune.cli.search import search_request
    from mona_tune.config import TrainConfig, toy_inputs

    found = paper_searches()
    where = {w.split()[0] for w, _ in found}
    assert {"rayjob.yaml", "raycluster.yaml", "compose.yaml", "ray-onprem.yaml",
            "slurm-ray.sbatch", "README.md"} <= where, where
    for w, args in found:
        fixed = search_request(args).fixed
        assert toy_inputs(TrainConfig(**fixed)) == [], f"{w}: {fixed}"
        assert fixed["source_data"].startswith("cifar10:"), f"{w}: {fixed}"
        assert fixed.get("weights"), f"{w}: no --weights"
