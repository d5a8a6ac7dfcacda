"""mlbatch doctor's checks at the boundaries that cannot run here (ECS, Redshift's control plane,
the Airflow pool) with stubs whose requests are validated against botocore's models; grant parsing;
the label sheet against the Sheets API double."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters
from mlbatch.backends.env import Environment
from mlbatch.cli import doctor
from mlbatch.labels import sheets
from mlbatch.spec import load_spec

from tests.fakes.sheets_api import FakeSheetsApi
from tests.support.paths import REPO
from tests.support.specs import write_spec

SESSION = botocore.session.get_session()
ROLE = "arn:aws:iam::123456789012:role/mlbatch-redshift"


class Stub:
    """A boto3 client that validates each request against the service's model and answers from a table."""

    def __init__(self, service: str, answers: dict[str, Any]):
        self.model = SESSION.get_service_model(service)
        self.answers = answers

    def __getattr__(self, name: str):
        operation = "".join(p.capitalize() for p in name.split("_"))

        def call(**params: Any) -> Any:
            validate_parameters(params, self.model.operation_model(operation).input_shape)
            answer = self.answers[operation]
            if callable(answer):  # answers that depend on the request (one task definition per family)
                answer = answer(**params)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


def denied(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, operation)


@pytest.mark.parametrize(
    ("grants", "have_all"),
    [
        (["GRANT ALL PRIVILEGES ON *.* TO `app`@`%`"], True),
        (["GRANT USAGE ON *.* TO `app`@`%`", "GRANT ALL PRIVILEGES ON `mlbatch`.* TO `app`@`%`"], True),
        (["GRANT ALL PRIVILEGES ON `mlb%`.* TO `app`@`%`"], True),  # a LIKE pattern
        (["GRANT ALL PRIVILEGES ON `ml\\_%`.* TO `app`@`%`"], False),  # \_ is a literal underscore
        (["GRANT ALL PRIVILEGES ON `other`.* TO `app`@`%`"], False),
        (["GRANT ALL PRIVILEGES ON `mlbatch`.`ml_labels` TO `app`@`%`"], False),  # one table cannot create tables
    ],
)
def test_grants_on_the_database_are_found(grants, have_all):
    assert ("ALL" in doctor.granted_privileges(grants, "mlbatch")) is have_all


def test_missing_privileges_are_named_with_the_grant_that_fixes_them():
    grants = ["GRANT USAGE ON *.* TO `app`@`%`", "GRANT SELECT, INSERT, UPDATE (label) ON `mlbatch`.* TO `app`@`%`"]
    check = doctor.privileges_check(grants, "mlbatch", "app@%")
    assert check.status == "FAIL"
    assert check.fix == "GRANT DELETE, CREATE, DROP, ALTER, INDEX ON `mlbatch`.* TO app@%"


def test_load_from_s3_needs_the_cluster_role(monkeypatch):
    monkeypatch.setenv(doctor.LOAD_FROM_S3_ENV, "1")
    failed = doctor.load_check({"local_infile": "ON", "aurora_load_from_s3_role": ""})
    assert failed.status == "FAIL" and "aurora_load_from_s3_role" in failed.fix
    assert doctor.load_check({"aurora_load_from_s3_role": ROLE}).status == "ok"


def ecs_env(monkeypatch, **extra: str) -> Environment:
    for name, value in {
        "MLBATCH_LAUNCHER": "ecs",
        "MLBATCH_ECS_CLUSTER": "ml-batch",
        "MLBATCH_ECS_TRAIN_TASK_DEFINITION": "mlbatch-train",
        "MLBATCH_ECS_SCORE_TASK_DEFINITION": "mlbatch-score:3",  # a revision: the family base is still mlbatch-score
        "MLBATCH_ECS_GPU_CAPACITY_PROVIDER": "gpu-asg",
        "MLBATCH_ECS_CPU_CAPACITY_PROVIDER": "FARGATE",
        **extra,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLBATCH_ECS_INSTANCE_TYPES", raising=False)
    return Environment.from_env()


def task_definition(family: str, container: str = "job", compat: str = "EC2") -> dict:
    arn = f"arn:aws:ecs:eu-west-1:123456789012:task-definition/{family}:3"
    return {
        "taskDefinition": {
            "taskDefinitionArn": arn,
            "status": "ACTIVE",
            "containerDefinitions": [{"name": container}],
            "requiresCompatibilities": [compat],
        }
    }


MISSING_TD = ClientError({"Error": {"Code": "ClientException", "Message": "Unable to describe task definition."}}, "x")
CLUSTER = {"clusters": [{"clusterName": "ml-batch", "status": "ACTIVE"}], "failures": []}


def registry(**families: dict) -> Any:
    """DescribeTaskDefinition answering the registered families, ClientException for the others."""
    return lambda taskDefinition: families.get(taskDefinition, MISSING_TD)


@pytest.fixture
def device_gender():
    return load_spec(REPO / "dags" / "specs" / "device_gender.yaml")  # train: 1 GPU, score: CPU


def test_each_model_has_its_own_families(monkeypatch, device_gender):
    env = ecs_env(monkeypatch)
    tds = {
        "mlbatch-train-device_gender-ec2": task_definition("mlbatch-train-device_gender-ec2"),  # GPU: the ASG provider
        "mlbatch-score-device_gender-fargate": task_definition("mlbatch-score-device_gender-fargate", compat="FARGATE"),
    }
    good = Stub("ecs", {"DescribeClusters": CLUSTER, "DescribeTaskDefinition": registry(**tds)})
    checks = doctor.check_ecs(env, good, [device_gender])
    assert [(c.boundary, c.status) for c in checks] == [
        ("ECS", "ok"),
        ("ECS train device_gender", "ok"),
        ("ECS score device_gender", "ok"),
        ("ECS placement", "skip"),
    ], checks
    assert "task-definition/mlbatch-train-device_gender-ec2:3" in checks[1].detail
    assert "MLBATCH_ECS_INSTANCE_TYPES is unset" in checks[3].detail


def test_the_families_are_the_launchers(monkeypatch, device_gender):
    """The doctor asks about the family RunTask names: the launcher's own run_task_kwargs."""
    from mlbatch.backends.launchers.base import JobId, JobRequest
    from mlbatch.backends.launchers.ecs import EcsConfig, EcsLauncher
    from mlbatch.cli.doctor.ecs import job_family

    ecs_env(monkeypatch)
    config = EcsConfig.from_env()
    launcher = EcsLauncher(store=None, config=config, ecs_client=object())  # type: ignore[arg-type]
    for kind in ("train", "score"):
        res = getattr(device_gender, kind).resources
        request = JobRequest(
            JobId("device_gender__train", kind, "scheduled__2026-01-01"),
            f"jobs.{kind}",
            [],
            "s3://b/_SUCCESS",
            gpu=res.gpu,
            vcpu=res.vcpu,
            memory_gib=res.memory_gib,
            model="device_gender",
        )
        assert launcher.run_task_kwargs(request)["taskDefinition"] == job_family(config, device_gender, kind)


def test_an_unregistered_family_fails_naming_the_command_that_registers_it(monkeypatch, device_gender):
    env = ecs_env(monkeypatch)
    only_train = registry(**{"mlbatch-train-device_gender-ec2": task_definition("mlbatch-train-device_gender-ec2")})
    checks = doctor.check_ecs(env, Stub("ecs", {"DescribeClusters": CLUSTER, "DescribeTaskDefinition": only_train}))
    assert (
        checks[-1].status == "skip" and "no model spec" in [c for c in checks if c.boundary == "ECS families"][0].detail
    )
    checks = doctor.check_ecs(
        env, Stub("ecs", {"DescribeClusters": CLUSTER, "DescribeTaskDefinition": only_train}), [device_gender]
    )
    score = {c.boundary: c for c in checks}["ECS score device_gender"]
    assert score.status == "FAIL" and "mlbatch-score-device_gender-fargate is not registered" in score.detail
    assert "mlbatch ecs task-definitions device_gender --kind score --compat fargate" in score.fix

    gone = Stub("ecs", {"DescribeClusters": {"clusters": [], "failures": [{"reason": "MISSING"}]}})
    check = doctor.check_ecs(env, gone, [device_gender])[0]
    assert check.status == "FAIL" and "ml-batch not found" in check.detail


def test_a_family_of_the_wrong_compatibility_or_container_fails(monkeypatch, device_gender):
    env = ecs_env(monkeypatch)
    tds = {
        "mlbatch-train-device_gender-ec2": task_definition("mlbatch-train-device_gender-ec2", container="main"),
        "mlbatch-score-device_gender-fargate": task_definition("mlbatch-score-device_gender-fargate", compat="EC2"),
    }
    stub = Stub("ecs", {"DescribeClusters": CLUSTER, "DescribeTaskDefinition": registry(**tds)})
    checks = {c.boundary: c for c in doctor.check_ecs(env, stub, [device_gender])}
    train, score = checks["ECS train device_gender"], checks["ECS score device_gender"]
    assert train.status == "FAIL" and "no container 'job'" in train.detail and "MLBATCH_ECS_CONTAINER" in train.fix
    assert score.status == "FAIL" and "requires ['EC2']" in score.detail and "(FARGATE)" in score.detail
    assert "--compat fargate" in score.fix


def test_a_16_gib_gpu_job_warns_on_g5_xlarge(monkeypatch, device_gender):
    env = ecs_env(monkeypatch)
    monkeypatch.setenv("MLBATCH_ECS_INSTANCE_TYPES", "g5.xlarge, c7i.2xlarge")
    stub = Stub("ecs", {"DescribeClusters": CLUSTER, "DescribeTaskDefinition": registry()})
    placement = [c for c in doctor.check_ecs(env, stub, [device_gender]) if c.boundary.startswith("ECS placement")]
    (check,) = placement
    assert check.boundary == "ECS placement device_gender" and check.status == "warn", check
    assert "device_gender train asks 1 GPU / 4 vCPU / 16 GiB" in check.detail and "g5.xlarge" in check.detail

    monkeypatch.setenv("MLBATCH_ECS_INSTANCE_TYPES", "g5.2xlarge")
    (check,) = [c for c in doctor.check_ecs(env, stub, [device_gender]) if c.boundary.startswith("ECS placement")]
    assert check.status == "ok" and "g5.2xlarge" in check.detail

    monkeypatch.setenv("MLBATCH_ECS_INSTANCE_TYPES", "p9.huge")
    (check,) = [c for c in doctor.check_ecs(env, stub, [device_gender]) if c.boundary.startswith("ECS placement")]
    assert check.status == "warn" and "p9.huge" in check.detail and "MLBATCH_ECS_INSTANCE_TYPES" in check.fix


def test_ecs_is_skipped_for_other_launchers(monkeypatch):
    monkeypatch.setenv("MLBATCH_LAUNCHER", "docker")
    assert [c.status for c in doctor.check_ecs(Environment.from_env())] == ["skip"]


def redshift_config(**kw):
    return SimpleNamespace(iam_role=ROLE, cluster_identifier=kw.get("cluster"), workgroup_name=kw.get("workgroup"))


def test_redshift_role_attached_to_cluster_or_namespace():
    attached = {"Clusters": [{"IamRoles": [{"IamRoleArn": ROLE, "ApplyStatus": "in-sync"}]}]}
    assert (
        doctor._check_redshift_role(
            redshift_config(cluster="c1"), Stub("redshift", {"DescribeClusters": attached})
        ).status
        == "ok"
    )

    other = {"Clusters": [{"IamRoles": [{"IamRoleArn": ROLE + "-other", "ApplyStatus": "in-sync"}]}]}
    check = doctor._check_redshift_role(redshift_config(cluster="c1"), Stub("redshift", {"DescribeClusters": other}))
    assert check.status == "FAIL" and "not attached to cluster c1" in check.detail and ROLE in check.fix

    serverless = Stub(
        "redshift-serverless",
        {
            "GetWorkgroup": {"workgroup": {"namespaceName": "ns1"}},
            "GetNamespace": {"namespace": {"iamRoles": [f"IamRole(applyStatus=in-sync, iamRoleArn={ROLE})"]}},
        },
    )
    assert doctor._check_redshift_role(redshift_config(workgroup="mlbatch-wg"), serverless).status == "ok"


def test_redshift_role_that_cannot_be_checked_is_a_warning_that_says_so():
    check = doctor._check_redshift_role(
        redshift_config(cluster="c1"), Stub("redshift", {"DescribeClusters": denied("DescribeClusters")})
    )
    assert check.status == "warn" and "cannot check" in check.detail and "by hand" in check.fix


def test_gpu_pool_exists_and_is_big_enough():
    specs = [load_spec(REPO / "dags" / "specs" / "device_gender.yaml")]  # train: 1 GPU
    assert doctor.check_gpu_pool(specs, "ecs", lambda name: SimpleNamespace(slots=2)).status == "ok"
    small = doctor.check_gpu_pool(specs, "ecs", lambda name: SimpleNamespace(slots=0))
    assert small.status == "FAIL" and "needs 1" in small.detail
    assert doctor.check_gpu_pool(specs, "ecs", lambda name: None).status == "FAIL"
    assert doctor.check_gpu_pool(specs, "local", lambda name: None).status == "warn"  # dag.test ignores pools

    def unreachable(name):
        raise RuntimeError("no such table: slot_pool")

    assert doctor.check_gpu_pool(specs, "ecs", unreachable).status == "warn"


def test_the_shared_servers_pools_exist_and_the_warehouse_s_counts_deferred_tasks(monkeypatch):
    specs = [load_spec(REPO / "dags" / "specs" / "device_gender.yaml")]
    monkeypatch.delenv("MLBATCH_POOLS", raising=False)  # the default: every pool
    made = {  # as `python -m mlbatch.airflow.pools` makes them
        "mlbatch_gpu": SimpleNamespace(slots=2, include_deferred=True),
        "mlbatch_warehouse": SimpleNamespace(slots=4, include_deferred=True),
        "mlbatch_appdb": SimpleNamespace(slots=2, include_deferred=False),
        "mlbatch_heavy": SimpleNamespace(slots=4, include_deferred=False),
    }
    checks = doctor.check_pools(specs, "ecs", made.get)
    assert [(c.boundary, c.status) for c in checks] == [
        ("GPU pool", "ok"),
        ("pool warehouse", "ok"),
        ("pool appdb", "ok"),
        ("pool heavy", "ok"),
    ]
    # Made by hand without --include-deferred: a deferred UNLOAD would free its slot while it runs.
    by_hand = made | {"mlbatch_warehouse": SimpleNamespace(slots=4, include_deferred=False)}
    (warehouse,) = [c for c in doctor.check_pools(specs, "ecs", by_hand.get) if c.boundary == "pool warehouse"]
    assert warehouse.status == "FAIL" and "does not count deferred tasks" in warehouse.detail
    missing = made | {"mlbatch_appdb": None}
    (appdb,) = [c for c in doctor.check_pools(specs, "ecs", missing.get) if c.boundary == "pool appdb"]
    assert appdb.status == "FAIL" and "mlbatch_appdb does not exist" in appdb.detail
    assert "python -m mlbatch.airflow.pools" in appdb.fix
    monkeypatch.setenv("MLBATCH_POOLS", "gpu")
    assert [c.boundary for c in doctor.check_pools(specs, "ecs", missing.get)] == ["GPU pool"]


def test_cpu_only_models_need_no_gpu_pool(tmp_path):
    spec = load_spec(write_spec(tmp_path, lambda r: r["train"].update(resources={"gpu": 0})))
    assert doctor.check_gpu_pool([spec], "ecs", lambda name: None).status == "skip"


def test_unshared_sheet_says_to_share_it_with_the_service_account(tmp_path, monkeypatch):
    key = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    sheet = {"sheet": key, "worksheet": "labels", "conn_id": "google_doctor"}
    spec = load_spec(write_spec(tmp_path, lambda r: r["labels"].update(source=sheet)))
    monkeypatch.delenv(sheets.ENV_KEY_JSON, raising=False)
    with FakeSheetsApi() as api:
        monkeypatch.setenv(sheets.ENV_ENDPOINT, api.endpoint)
        (check,) = doctor.check_sheets([spec])
        assert check.status == "FAIL" and "share the sheet with" in check.fix, check
        api.add_spreadsheet(key)
        api.add_worksheet(key, "other", [["device_id", "gender"]])
        (check,) = doctor.check_sheets([spec])
        assert check.status == "FAIL" and "no worksheet 'labels'" in check.detail
        api.add_worksheet(key, "labels", [["device_id", "gender"]])
        (check,) = doctor.check_sheets([spec])
        assert check.status == "ok", check


def test_named_connections_follow_the_configuration(monkeypatch, tmp_path):
    assert doctor.SHEETS_KEY_ENV == sheets.ENV_KEY_JSON
    monkeypatch.setenv("MLBATCH_LAUNCHER", "ecs")
    monkeypatch.setenv("MLBATCH_APPDB_CONN_ID", "mlbatch_appdb")
    monkeypatch.setenv("MLBATCH_WAREHOUSE", "redshift://aws_redshift")
    monkeypatch.delenv("MLBATCH_AWS_CONN_ID", raising=False)
    monkeypatch.delenv(sheets.ENV_KEY_JSON, raising=False)
    sheet = {"sheet": "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "conn_id": "google_labels"}
    spec = load_spec(write_spec(tmp_path, lambda r: r["labels"].update(source=sheet)))
    env = Environment.from_env()
    assert set(doctor.named_connections(env, [spec])) == {
        "mlbatch_appdb",
        "aws_default",
        "aws_redshift",
        "google_labels",
    }
    check = doctor.check_connections(env, [spec])
    assert check.status == "FAIL" and "google_labels" in check.detail and "AIRFLOW_CONN_" in check.fix
    monkeypatch.setenv(sheets.ENV_KEY_JSON, "{}")  # the sheets' fallback: no connection needed
    assert "google_labels" not in doctor.named_connections(env, [spec])
