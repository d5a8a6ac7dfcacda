"""Manual promotion and rollback on real servers (MariaDB for Aurora MySQL, PostgreSQL for Aurora
PostgreSQL): the locking query (SELECT ... FOR UPDATE) and the swap run in one transaction there too."""

from __future__ import annotations

import pytest
from mlbatch.backends.appdb.hook import AppDbHook
from mlbatch.stages import registry


def test_promote_and_rollback(appdb_url: str) -> None:
    db = AppDbHook(appdb_url)
    db.ensure_schema()
    for version, value in (("v1", 0.84), ("v2", 0.60), ("v3", 0.86)):
        registry.register(
            db,
            {
                "model": "device_gender",
                "version": version,
                "family": "xgboost",
                "metric": "roc_auc",
                "value": value,
                "metrics": {"roc_auc": value},
                "artifact_uri": f"s3://bucket/models/device_gender/{version}/",
                "lineage": {},
            },
        )
    registry.decide(db, "device_gender", "v1", "production", "gate passed")
    registry.decide(db, "device_gender", "v2", "rejected", "roc_auc 0.60 < 0.75")

    with pytest.raises(registry.RegistryError, match="rejected by the model gate"):
        registry.promote(db, "device_gender", "v2", "why not", by="bob")
    mv = registry.promote(db, "device_gender", "v3", "reviewed", by="bob")
    assert mv.status == "production" and mv.reason == "manual promotion by bob: reviewed"
    statuses = {v.version: v.status for v in registry.versions(db, "device_gender")}
    assert statuses == {"v1": "retired", "v2": "rejected", "v3": "production"}

    now, was = registry.rollback(db, "device_gender", "regression in prod", by="bob")
    assert (now.version, was.version) == ("v1", "v3")
    statuses = {v.version: v.status for v in registry.versions(db, "device_gender")}
    assert statuses == {"v1": "production", "v2": "rejected", "v3": "retired"}
    assert registry.production(db, "device_gender").version == "v1"
