"""Static checks of the production stack's configuration, for a machine without Docker or a
cluster: the compose file against the Compose Specification's schema, what it builds and
mounts exists, its variables are documented, no secret has a default, the GPU worker serves
the training task's queue, and the Helm values route that queue to a GPU pod."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
VALUES = yaml.safe_load((REPO / "infra" / "helm" / "values.yaml").read_text())
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$")
LONG_RUNNING = {
    "minio",
    "postgres",
    "redis",
    "mlflow",
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
    "worker",
    "worker-gpu",
}


def env_example() -> dict[str, str]:
    entries = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value.strip()
    return entries


def training_queue() -> str:
    """The ``queue=`` of the ``train`` task's decorator in dags/tsad_train.py."""
    tree = ast.parse((REPO / "dags" / "tsad_train.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "train":
            for decorator in node.decorator_list:
                for keyword in getattr(decorator, "keywords", []):
                    if keyword.arg == "queue":
                        return ast.literal_eval(keyword.value)
    raise AssertionError("the train task in dags/tsad_train.py sets no queue")


def queues_served(service: dict) -> set[str]:
    command = service.get("command", "")
    command = command if isinstance(command, str) else " ".join(command)
    match = re.search(r"--queues\s+(\S+)", command)
    return set(match.group(1).split(",")) if match else set()


def test_compose_file_follows_the_compose_specification():
    schema = json.loads((Path(__file__).with_name("compose-spec.json")).read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_services_of_airflows_official_layout_are_all_there():
    assert LONG_RUNNING | {"airflow-init", "mlflow-init", "minio-init"} == set(SERVICES)


@pytest.mark.parametrize("name", sorted(n for n in SERVICES if "build" in SERVICES[n]))
def test_what_a_service_builds_exists(name):
    build = SERVICES[name]["build"]
    context = REPO / build["context"]
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file(), dockerfile
    text = dockerfile.read_text()
    if "target" in build:
        assert re.search(rf"^FROM\s+\S+\s+AS\s+{build['target']}\s*$", text, re.M | re.I)
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        *sources, _ = line.split()
        for source in sources:
            assert (context / source).exists(), f"{dockerfile}: COPY {source} is missing"
    for arg in build.get("args", {}):
        assert re.search(rf"^ARG\s+{arg}\b", text, re.M), f"{dockerfile} declares no ARG {arg}"


def test_every_image_is_built_here_or_pinned_upstream():
    built = {service["image"] for service in SERVICES.values() if "build" in service}
    for name, service in SERVICES.items():
        image = service["image"]
        if image not in built:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), name


def test_bind_mounted_files_exist():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_every_variable_is_documented_in_env_example():
    used = {match["name"] for match in VARIABLE.finditer(COMPOSE_TEXT)}
    documented = set(env_example())
    assert used - documented == set(), "add these to .env.example"
    assert documented - used == set(), "stale entries in .env.example"


def test_no_secret_has_a_default_and_none_is_written_down():
    for match in VARIABLE.finditer(COMPOSE_TEXT):
        if SECRET_NAME.search(match["name"]):
            rest = match["rest"]
            assert rest.startswith(":?") or rest == ":-", f"{match[0]} must be required or empty"
    # user:password@ in a URI must take the password from a variable
    assert not re.search(r"://[^:/@\s]*:(?!\$\{)[^@\s]+@", COMPOSE_TEXT)
    secrets = {name: value for name, value in env_example().items() if SECRET_NAME.search(name)}
    assert secrets and all(value == "" for value in secrets.values()), secrets


def test_secrets_required_by_the_stack_fail_loudly_when_missing():
    required = {m["name"] for m in VARIABLE.finditer(COMPOSE_TEXT) if m["rest"].startswith(":?")}
    assert {
        "POSTGRES_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "REDIS_PASSWORD",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "TSAD_MLFLOW_PASSWORD",
    } <= required


def test_the_gpu_worker_serves_the_training_queue_on_an_nvidia_gpu():
    queue = training_queue()
    assert queue == "gpu"
    gpu_workers = [s for s in SERVICES.values() if queue in queues_served(s)]
    assert len(gpu_workers) == 1
    worker = gpu_workers[0]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["build"]["target"] == "cuda"
    assert queues_served(SERVICES["worker"]) == {"default"}
    default_queue = SERVICES["worker"]["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    assert default_queue == "default"


def test_services_are_health_checked_and_started_in_order():
    for name in LONG_RUNNING:
        assert "test" in SERVICES[name]["healthcheck"], name
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, (name, dependency)
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}
    assert "airflow-init" in SERVICES["scheduler"]["depends_on"]
    assert "mlflow-init" in SERVICES["worker-gpu"]["depends_on"]


def test_the_mlflow_service_passes_what_its_start_script_requires():
    script = (REPO / "mlflow" / "start-server.sh").read_text()
    block = re.search(r"for name in (.*?); do", script, re.S)
    required = set(block.group(1).replace("\\", " ").split())
    assert required <= set(SERVICES["mlflow"]["environment"])
    hosts = SERVICES["mlflow"]["environment"]["MLFLOW_ALLOWED_HOSTS"]
    assert "mlflow:5000" in hosts  # the name Airflow's workers use (MLFLOW_TRACKING_URI)
    assert SERVICES["worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def gpu_pod_template() -> dict:
    configmap = VALUES["extraConfigMaps"]["tsad-pod-templates"]["data"]
    return yaml.safe_load(yaml.safe_load(configmap)["gpu.yaml"])


def test_helm_values_run_the_training_queue_on_a_gpu_node():
    assert VALUES["executor"] == "KubernetesExecutor"
    pod = gpu_pod_template()
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert base["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert pod["spec"]["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["spec"]["tolerations"])
    assert base["image"].endswith(":cuda")
    assert base["image"].rsplit(":", 1)[0] == VALUES["images"]["airflow"]["repository"]


def test_the_cluster_policy_gives_gpu_queue_tasks_the_gpu_pod_template():
    from airflow.providers.standard.operators.empty import EmptyOperator

    namespace: dict = {}
    exec(VALUES["airflowLocalSettings"], namespace)
    mount = VALUES["scheduler"]["extraVolumeMounts"][0]["mountPath"]
    train = EmptyOperator(task_id="train", queue=training_queue())
    score = EmptyOperator(task_id="score")
    for task in (train, score):
        namespace["task_policy"](task)
    assert train.executor_config == {"pod_template_file": f"{mount}/gpu.yaml"}
    assert score.executor_config == {}


def test_kubernetes_manifests_parse_and_share_the_secret_names():
    documents = [
        doc
        for path in sorted((REPO / "infra" / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("Job", "mlflow-init")} <= kinds
    examples = yaml.safe_load_all((REPO / "infra" / "secrets.example.yaml").read_text())
    secret_names = {doc["metadata"]["name"] for doc in examples}
    referenced = {VALUES[key] for key in VALUES if key.endswith("SecretName")}
    referenced |= {VALUES["data"]["metadataSecretName"]}
    referenced |= {entry["secretName"] for entry in VALUES["secret"]}
    assert referenced <= secret_names


def test_every_deployment_creates_the_gpu_pool_the_training_task_waits_for():
    # A task in a pool that does not exist is never scheduled: each place that creates
    # Airflow's schema also creates the pool, sized by TSAD_GPU_POOL_SLOTS.
    init = " ".join(SERVICES["airflow-init"]["command"])
    helm = " ".join(VALUES["migrateDatabaseJob"]["args"])
    makefile = (REPO / "Makefile").read_text()
    for where in (init, helm, makefile):
        assert re.search(r"airflow pools set gpu \"\$+\{TSAD_GPU_POOL_SLOTS:-1\}", where), where
    assert {"name": "TSAD_GPU_POOL_SLOTS", "value": "1"} in VALUES["env"]


def test_the_data_tree_lives_in_object_storage_not_on_a_shared_volume():
    """Compose: MinIO with its bucket made at start, the pipeline's keys from .env. Helm: the
    same URI, keys from a Secret, and each pod's working copy on an emptyDir."""
    common = COMPOSE["x-airflow-common"]["environment"]
    uri = common["TSAD_DATA_URI"]
    bucket = uri.removeprefix("s3://").split("/")[0]
    assert common["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert "minio" in SERVICES and "minio-init" in SERVICES
    init = " ".join(SERVICES["minio-init"]["entrypoint"])
    assert f"mb --ignore-existing local/{bucket}" in init
    assert SERVICES["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert common[key].startswith("${TSAD_S3_") and ":?" in common[key]
    values_env = {entry["name"]: entry.get("value") for entry in VALUES["env"]}
    assert values_env["TSAD_DATA_URI"].startswith("s3://")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= {
        e["envName"] for e in VALUES["secret"]
    }
    assert VALUES["volumes"] == [{"name": "tsad-data", "emptyDir": {}}]
    base = next(c for c in gpu_pod_template()["spec"]["containers"] if c["name"] == "base")
    assert "TSAD_DATA_URI" in {entry["name"] for entry in base["env"]}
