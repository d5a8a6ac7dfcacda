"""The object store probe on the embedded stack's folder: every prefix, nothing left behind."""

from __future__ import annotations

from mlbatch.backends.env import Environment
from mlbatch.cli import doctor


def test_local_store_prefixes_are_probed_and_cleaned(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", (tmp_path / "objects").as_uri())
    checks = doctor.check_object_store(Environment.from_env(), [])
    assert [c.status for c in checks] == ["ok"] * 8
    assert not any(p.is_file() for p in (tmp_path / "objects").rglob("*"))
    assert not list((tmp_path / "objects").rglob("_mlbatch_doctor"))


def test_unwritable_local_store_names_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "objects"
    root.mkdir()
    (root / "models").write_text("a file where a folder should be")
    monkeypatch.setenv("MLBATCH_OBJECT_STORE", root.as_uri())
    checks = {c.boundary: c for c in doctor.check_object_store(Environment.from_env(), [])}
    assert checks["S3 models/"].status == "FAIL" and "writable" in checks["S3 models/"].fix
    assert checks["S3 runs/"].status == "ok"
