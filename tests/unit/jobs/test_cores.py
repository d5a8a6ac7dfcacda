"""A job's thread pools fit the CPUs it was given, not the host it landed on."""

from __future__ import annotations

import pytest

from jobs import cpus
from jobs.cpus import cores


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A host of 8 cores with no quota and no allotment; tests add one of them."""
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(cpus, "CGROUP", tmp_path)
    monkeypatch.delenv(cpus.VCPU_ENV, raising=False)
    return tmp_path


def test_without_a_limit_every_core_of_the_cpu_set(host) -> None:
    assert cores() == 8


@pytest.mark.parametrize(("vcpu", "expected"), [("4", 4), ("2.5", 2), ("0.25", 1), ("64", 8), ("", 8), ("four", 8)])
def test_the_launchers_allotment_caps_the_pool(host, monkeypatch: pytest.MonkeyPatch, vcpu: str, expected: int) -> None:
    monkeypatch.setenv(cpus.VCPU_ENV, vcpu)
    assert cores() == expected


@pytest.mark.parametrize(("cpu_max", "expected"), [("300000 100000\n", 3), ("50000 100000\n", 1), ("max 100000\n", 8)])
def test_a_cgroup_v2_quota_caps_the_pool(host, cpu_max: str, expected: int) -> None:
    (host / "cpu.max").write_text(cpu_max)
    assert cores() == expected


@pytest.mark.parametrize(("quota", "expected"), [("200000", 2), ("-1", 8)])
def test_a_cgroup_v1_quota_caps_the_pool(host, quota: str, expected: int) -> None:
    (host / "cpu").mkdir()
    (host / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (host / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores() == expected


def test_the_smallest_limit_wins(host, monkeypatch: pytest.MonkeyPatch) -> None:
    (host / "cpu.max").write_text("600000 100000\n")
    monkeypatch.setenv(cpus.VCPU_ENV, "3")
    assert cores() == 3
