"""``mlbatch doctor``'s object store probes: every prefix a run writes, written, listed, read and
deleted again, with the workers' own credentials (the same store code as the stages).

IAM policies are often written per prefix (``unload/*``, ``models/*``): a bucket that takes a
probe object at its root can still refuse a run's first write three stages in. So each prefix
gets its own probe object, ``<prefix><model>/_mlbatch_doctor/<random>``, under every model the
specs name; one line per prefix.

Each probe object on S3 is tagged ``mlbatch:probe=doctor`` right after its put: the bucket's
lifecycle rule (deploy/s3/lifecycle.json) expires objects with that tag after a day, so a doctor
killed between put and delete leaves nothing for long (a lifecycle filter takes one prefix, and the
probes sit under every ``<prefix><model>/``). The tag is a separate PutObjectTagging call, not the
put's ``x-amz-tagging`` header: that header needs ``s3:PutObjectTagging`` on the put itself, and the
probe's put must succeed exactly when the stages' untagged puts do. A refused tag only notes it.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

from mlbatch import names
from mlbatch.backends.env import Environment
from mlbatch.backends.store import s3_client
from mlbatch.cli.doctor.check import Check, describe_error
from mlbatch.cli.doctor.checks import PROBE_PREFIX
from mlbatch.spec import ModelSpec

# What writes under each prefix (mlbatch.names builds every key); publish/ only
# when Aurora loads the day FROM S3 (MLBATCH_AURORA_LOAD_FROM_S3=1). The probe folder sits beside
# what the pipeline lists there (versions, days, months), never inside one of them.
RUN_PREFIXES = {
    names.LABELS_ROOT: "label sync snapshots",
    names.UNLOAD_ROOT: "features unloads (Redshift writes, workers clear failed attempts)",
    names.MODELS_ROOT: "trained models and their profiles",
    names.PREDICTIONS_ROOT: "scoring shards",
    names.RUNS_ROOT: "per-run state",
    names.EXPORT_ROOT: "the warehouse export",
    names.COSTS_ROOT: "per-run cost lines",
}
PUBLISH_PREFIX = names.PUBLISH_ROOT
PROBE_TAG = {"Key": "mlbatch:probe", "Value": "doctor"}  # deploy/s3/lifecycle.json expires it (a test keeps them equal)


def check_object_store(env: Environment, specs: list[ModelSpec] | None = None) -> list[Check]:
    """The store's root first (a missing bucket is one FAIL, not one per prefix), then each prefix."""
    root = _root_check(env)
    if root.status != "ok":
        return [root]
    models = sorted({s.name for s in specs or []}) or ["_any"]
    prefixes = dict(RUN_PREFIXES)
    if env.appdb_load_from_s3:
        prefixes[PUBLISH_PREFIX] = "Aurora's LOAD DATA FROM S3 staging"
    checks = [root]
    for prefix, what in prefixes.items():
        notes: list[str] = []
        failure = next(
            filter(None, (_probe(env, names.model_folder(prefix, m) + PROBE_PREFIX, notes) for m in models)), None
        )
        where = env.store.uri(prefix)
        if failure is None:
            note = f"; {notes[0]}" if notes else ""
            checks.append(Check(f"S3 {prefix}", "ok", f"{where} put, list, get and delete ({what}){note}"))
        else:
            checks.append(Check(f"S3 {prefix}", "FAIL", f"{where} ({what}): {failure[0]}", failure[1]))
    return checks


def _root_check(env: Environment) -> Check:
    store = env.store
    try:
        if store.is_local:
            store.list("")
        else:
            parsed = urlparse(store.root)
            s3_client().list_objects_v2(Bucket=parsed.netloc, Prefix=parsed.path.strip("/") + "/", MaxKeys=1)
    except Exception as exc:  # noqa: BLE001
        return Check(
            "object store",
            "FAIL",
            f"cannot list {store.root}: {describe_error(exc)}",
            _fix(env, "", "s3:ListBucket", exc),
        )
    return Check("object store", "ok", f"{store.root} answers (its prefixes follow)")


def _probe(env: Environment, folder: str, notes: list[str]) -> tuple[str, str] | None:
    """None when a probe object under ``folder`` could be written, listed, read and deleted;
    else (what failed, the fix). A probe that could not be tagged appends why to ``notes``."""
    store = env.store
    key = f"{folder}{uuid.uuid4().hex}"
    step = "put"
    try:
        store.put_bytes(key, b"mlbatch doctor probe")
        if not store.is_local:
            notes.extend(filter(None, [_tag(env, key)]))
        step = "list"
        if key not in store.list(folder):
            return f"{key} was written but is not listed", _fix(env, folder, "s3:ListBucket")
        step = "get"
        if store.get_bytes(key) != b"mlbatch doctor probe":
            return f"{key} reads back different bytes", "check for a proxy or a bucket replication rewriting objects"
        step = "delete"
        _delete(env, key, folder)
    except Exception as exc:  # noqa: BLE001 - every failure is a finding, none stops the doctor
        action = {"put": "s3:PutObject", "list": "s3:ListBucket", "get": "s3:GetObject", "delete": "s3:DeleteObject"}
        return f"{step} of {store.uri(key)} failed: {describe_error(exc)}", _fix(env, folder, action[step], exc)
    return None


def _tag(env: Environment, key: str) -> str:
    """Tag the probe object for the lifecycle rule; "" when tagged, else a note naming the permission."""

    parsed = urlparse(env.store.uri(key))
    try:
        s3_client().put_object_tagging(
            Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Tagging={"TagSet": [dict(PROBE_TAG)]}
        )
    except Exception as exc:  # noqa: BLE001 - the probe still tests what a run needs; the tag is a safety net
        tag = f"{PROBE_TAG['Key']}={PROBE_TAG['Value']}"
        return (
            f"the probe could not be tagged {tag} ({describe_error(exc)}): allow s3:PutObjectTagging so the lifecycle "
            "rule expires a probe a killed doctor leaves"
        )
    return ""


def _delete(env: Environment, key: str, folder: str) -> None:
    store = env.store
    if store.is_local:
        store.delete_prefix(folder.rstrip("/"))
        return

    # boto3, not pyarrow: pyarrow's delete re-creates an empty "directory" marker for the parent
    # (``<prefix><model>/``) to keep its folder alive, and the probe must leave nothing behind.
    parsed = urlparse(store.uri(key))
    s3_client().delete_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))


def _fix(env: Environment, folder: str, action: str, exc: BaseException | None = None) -> str:
    text = str(exc or "")
    root = env.store.root
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return f"create the bucket of {root} or fix MLBATCH_OBJECT_STORE"
    if root.startswith("file://"):
        return f"make {root} writable by the user running Airflow (or fix MLBATCH_OBJECT_STORE)"
    parsed = urlparse(root)
    top = folder.split("/", 1)[0]
    resource = f"arn:aws:s3:::{parsed.netloc}{parsed.path.rstrip('/')}/{top + '/' if top else ''}*"
    if exc is None or any(s in text for s in ("AccessDenied", "Forbidden", "ACCESS_DENIED", "403")):
        return (
            f"allow {action} (the workers need s3:PutObject, s3:GetObject, s3:DeleteObject on {resource} and "
            f"s3:ListBucket on arn:aws:s3:::{parsed.netloc}) to the workers' role (docs/deploy.md, S3)"
        )
    return "check MLBATCH_OBJECT_STORE, the AWS connection (MLBATCH_AWS_CONN_ID) and the endpoint"
