"""deploy/mwaa/create-pools.sh: the MWAA call it makes is valid by botocore's model, and its body is
what Airflow's bulk pools endpoint accepts (the API server's own request model)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from tests.support.paths import REPO
from tests.unit.deploy.aws_models import shape_errors

SCRIPT = REPO / "deploy" / "mwaa" / "create-pools.sh"


def _run(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """The script with a stand-in ``aws`` on PATH that records its argument vector."""
    calls = tmp_path / "aws-calls"
    aws = tmp_path / "aws"
    aws.write_text(
        f'#!{sys.executable}\nimport json, sys\nopen({str(calls)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
    )
    aws.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PYTHON": sys.executable}
    env["MLBATCH_SPECS_DIR"] = str(REPO / "dags" / "specs")
    env.pop("MLBATCH_GPU_POOL_SLOTS", None)
    proc = subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, cwd=REPO)
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return proc, recorded


def _params(argv: list[str]) -> dict[str, object]:
    """``aws mwaa invoke-rest-api --name N ...`` as the API call's parameters (the CLI's own mapping:
    --kebab-case to PascalCase; --body is a JSON document)."""
    assert argv[:2] == ["mwaa", "invoke-rest-api"], shlex.join(argv)
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    params: dict[str, object] = {k.removeprefix("--").title().replace("-", ""): v for k, v in options.items()}
    params["Body"] = json.loads(str(params["Body"]))
    return params


def test_the_call_is_valid_for_invoke_rest_api_and_its_body_for_airflow(tmp_path):
    from airflow.api_fastapi.core_api.datamodels.common import BulkBody
    from airflow.api_fastapi.core_api.datamodels.pools import PoolBody

    proc, calls = _run(tmp_path, "mlbatch-prod")
    assert proc.returncode == 0, proc.stderr
    (argv,) = calls
    params = _params(argv)
    assert shape_errors("mwaa", "InvokeRestApi", params) == []
    assert params["Method"] == "PATCH" and params["Path"] == "/pools"
    body = BulkBody[PoolBody].model_validate(params["Body"])
    names = {e.pool: (e.slots, e.include_deferred) for a in body.actions for e in a.entities}
    assert names == {
        "mlbatch_gpu": (1, True),  # device_gender trains on 1 GPU
        "mlbatch_warehouse": (4, True),
        "mlbatch_appdb": (2, False),
        "mlbatch_heavy": (4, False),
    }


def test_without_an_environment_name_it_says_how_and_calls_nothing(tmp_path):
    proc, calls = _run(tmp_path)
    assert proc.returncode == 2 and "usage:" in proc.stderr and calls == []
