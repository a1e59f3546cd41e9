"""Tenants as a user meets them: ``nf.Flow(tenant=)``, ``nf.open_store(tenant=)``,
``$NBFLOW_TENANT``, the frames, forks and resumes, export/import, copy, gc, the CLI's
``--tenant`` and the browser widget (the store contract itself: nbflow.testing)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import nbflow as nf
from nbflow.cli import main
from nbflow.errors import (
    InvalidTenantError,
    StoreError,
    TenantMismatchError,
    TenantReadOnlyError,
    TransferError,
    UnknownRunError,
)
from nbflow.store.base import Store


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    base: dict[str, str | None] = {"NBFLOW_STORE": None, "NBFLOW_TENANT": None}
    return CliRunner().invoke(main, list(args), env={**base, **(env or {})})


def make_flow(store: Store | str, tenant: str | None, *, fail: bool = False) -> nf.Flow:
    flow = nf.Flow("sales", store=store, tenant=tenant)

    @flow.step
    def raw() -> pd.DataFrame:
        return pd.DataFrame({"who": [str(tenant)] * 200, "n": range(200)})

    @flow.step
    def total(raw: pd.DataFrame) -> int:
        if fail:
            raise RuntimeError("not yet")
        return int(raw["n"].sum())

    return flow


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "shared.duckdb")


def test_runs_are_stamped_and_each_tenant_sees_its_own(path: str) -> None:
    legacy = make_flow(path, None).run(progress=False)
    run_a = make_flow(path, "team-a").run(progress=False)
    run_b = make_flow(path, "team-b").run(progress=False)
    assert make_flow(path, "team-a").tenant == "team-a"
    frame = nf.runs(path, tenant="team-a")
    assert set(frame["run_id"]) == {run_a.id, legacy.id}
    assert frame.set_index("run_id").loc[run_a.id, "tenant"] == "team-a"
    assert set(nf.events(store=path, tenant="team-a")["run_id"]) == {run_a.id, legacy.id}
    assert set(nf.runs(path)["run_id"]) == {legacy.id, run_a.id, run_b.id}  # the owner
    assert set(make_flow(path, "team-b").runs()["run_id"]) == {run_b.id, legacy.id}
    assert nf.get_run(legacy.id, path, tenant="team-a")["total"] == sum(range(200))
    assert run_a.steps["status"].tolist() == ["completed", "completed"]  # nothing of b's


def test_another_tenants_run_is_an_unknown_run(path: str) -> None:
    """By id, in every way a user asks: the same error and message as a made-up id."""
    run_b = make_flow(path, "team-b", fail=True).run(progress=False, raise_on_error=False)
    store_a = nf.open_store(path, tenant="team-a")
    for ask in (
        lambda: nf.get_run(run_b.id, path, tenant="team-a"),
        lambda: nf.events(run_b.id, path, tenant="team-a"),
        lambda: store_a.get_run(run_b.id),
        lambda: nf.Run(store_a, run_b.id).resume(),
    ):
        with pytest.raises(TenantMismatchError) as caught:
            ask()
        assert isinstance(caught.value, UnknownRunError)
        assert str(caught.value) == str(UnknownRunError(run_b.id, store_a))
    with pytest.raises(TenantMismatchError) as made_up:
        store_a.get_run("20260101-000000-deadbeef")
    assert str(made_up.value) == str(caught.value).replace(run_b.id, "20260101-000000-deadbeef")


def test_a_run_without_a_tenant_is_read_by_all_and_forked_not_changed(path: str) -> None:
    legacy = make_flow(path, None, fail=True).run(progress=False, raise_on_error=False)
    seen = nf.get_run(legacy.id, path, tenant="team-a")
    assert seen["raw"].shape == (200, 2)
    with pytest.raises(TenantReadOnlyError, match="no tenant"):
        seen.resume()
    assert nf.get_run(legacy.id, path).status == "failed"  # unchanged
    fork = nf.open_store(path, tenant="team-a")
    same_code = make_flow(fork, None)  # (the flow's code is the legacy run's)
    assert same_code.tenant == "team-a"
    forked = nf.Run(fork, legacy.id, same_code).fork(from_step="total")
    assert forked.status == "completed"
    assert fork.get_run(forked.id).tenant == "team-a"
    assert forked.steps.set_index("step").loc["raw", "source_run_id"] == legacy.id  # reused


def test_the_owner_forks_a_tenants_run_as_that_tenants(path: str) -> None:
    run_a = make_flow(path, "team-a").run(progress=False)
    owner = make_flow(path, None)
    forked = nf.Run(owner.store, run_a.id, owner).fork(from_step="total")
    assert owner.store.get_run(forked.id).tenant == "team-a"
    assert forked.id not in set(nf.runs(path, tenant="team-b")["run_id"])


def test_nbflow_tenant_in_the_environment(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_TENANT", "team-env")
    run = make_flow(path, None).run(progress=False)
    assert nf.open_store(path).tenant == "team-env"
    assert nf.open_store(path).get_run(run.id).tenant == "team-env"
    assert nf.open_store(path, tenant="team-x").tenant == "team-x"  # the argument wins
    monkeypatch.setenv("NBFLOW_TENANT", "bad\nname")
    with pytest.raises(InvalidTenantError, match="NBFLOW_TENANT"):
        nf.open_store(path)
    monkeypatch.setenv("NBFLOW_TENANT", "")
    with pytest.raises(InvalidTenantError, match="empty"):
        nf.open_store(path)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 129, "at most 128"),
        ("team\x00a", "control"),
        ("team\na", "control"),
        ("team\u200ba", "control"),
        (" team-a", "spaces"),
        (42, "not int"),
    ],
)
def test_a_bad_tenant_name_is_refused_everywhere(path: str, bad: object, says: str) -> None:
    for make in (
        lambda: nf.Flow("f", store=path, tenant=bad),  # type: ignore[arg-type]
        lambda: nf.open_store(path, tenant=bad),  # type: ignore[arg-type]
        lambda: nf.open_store("memory://", tenant=bad),  # type: ignore[arg-type]
        lambda: nf.runs(path, tenant=bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidTenantError, match=says):
            make()
    assert isinstance(InvalidTenantError("x"), nf.errors.NbflowError)


def test_values_are_shared_only_when_both_tenants_made_them(path: str) -> None:
    run_a = make_flow(path, "team-a").run(progress=False)
    b = nf.open_store(path, tenant="team-b")
    secret = nf.open_store(path).executions(run_a.id)[0].output
    assert secret is not None and not secret.is_inline
    with pytest.raises(StoreError, match="missing"):
        b.load_value(secret)


def test_gc_per_tenant(path: str) -> None:
    run_a = make_flow(path, "team-a").run(progress=False)
    run_b = make_flow(path, "team-b").run(progress=False)
    legacy = make_flow(path, None).run(progress=False)
    report = nf.open_store(path, tenant="team-a").gc(keep_last=0)
    assert report.runs == (run_a.id,)
    assert len(report.blobs) == 1  # team-a's own frame, used by no other run
    assert set(nf.runs(path)["run_id"]) == {run_b.id, legacy.id}
    assert nf.get_run(run_b.id, path)["raw"].shape == (200, 2)


def test_export_and_import_carry_the_tenant(path: str, tmp_path: Path) -> None:
    from nbflow.transfer.archives import export_run, import_run

    run_a = make_flow(path, "team-a").run(progress=False)
    folder = export_run(nf.open_store(path, tenant="team-a"), run_a.id, tmp_path / "export")
    elsewhere = str(tmp_path / "other.duckdb")
    as_owner = import_run(nf.open_store(elsewhere), folder, trust=True)
    assert nf.open_store(elsewhere).get_run(as_owner).tenant == "team-a"
    third = str(tmp_path / "third.duckdb")
    with pytest.raises(TransferError, match="belongs to tenant 'team-a'.*--tenant team-b"):
        import_run(nf.open_store(third, tenant="team-b"), folder, trust=True)
    assert nf.runs(third).empty
    moved = import_run(nf.open_store(third, tenant="team-b"), folder, trust=True, tenant="team-b")
    assert nf.open_store(third).get_run(moved).tenant == "team-b"
    assert nf.get_run(moved, third, tenant="team-b")["total"] == sum(range(200))


def test_copy_keeps_the_tenant_and_refuses_another_tenants_target(
    path: str, tmp_path: Path
) -> None:
    run_a = make_flow(path, "team-a").run(progress=False)
    target = str(tmp_path / "copy.duckdb")
    nf.copy_runs(path, target, run_a.id)
    assert nf.open_store(target).get_run(run_a.id).tenant == "team-a"
    other = str(tmp_path / "copy-b.duckdb")
    with pytest.raises(TransferError, match="belongs to tenant 'team-a'"):
        nf.copy_runs(path, nf.open_store(other, tenant="team-b"), run_a.id)
    copied = nf.copy_runs(nf.open_store(path, tenant="team-b"), target)  # only b's (none)
    assert copied.copied == ()


def test_the_cli_takes_a_tenant(path: str, tmp_path: Path) -> None:
    run_a = make_flow(path, "team-a").run(progress=False)
    run_b = make_flow(path, "team-b").run(progress=False)
    listed = invoke("runs", "--store", path, "--tenant", "team-a", "--format", "csv")
    assert listed.exit_code == 0, listed.output
    assert run_a.id in listed.output and run_b.id not in listed.output
    owner = invoke("runs", "--store", path)  # the table names each run's tenant
    assert owner.output.splitlines()[0].split()[:3] == ["run_id", "flow", "tenant"]
    assert "team-a" in owner.output and "team-b" in owner.output
    by_env = invoke("runs", "--store", path, "--format", "csv", env={"NBFLOW_TENANT": "team-b"})
    assert run_b.id in by_env.output and run_a.id not in by_env.output
    shown = invoke("show", run_b.id, "--store", path, "--tenant", "team-b")
    assert "tenant    team-b" in shown.output, shown.output
    hidden = invoke("show", run_b.id, "--store", path, "--tenant", "team-a")
    made_up = invoke("show", "20260101-000000-deadbeef", "--store", path, "--tenant", "team-a")
    assert hidden.exit_code == made_up.exit_code != 0
    assert hidden.output.replace(run_b.id, "ID") == made_up.output.replace(
        "20260101-000000-deadbeef", "ID"
    )
    bad = invoke("runs", "--store", path, "--tenant", "")
    assert bad.exit_code == 2 and "empty" in bad.output
    folder = tmp_path / "exported"
    assert invoke("export", run_a.id, str(folder), "--store", path).exit_code == 0
    target = str(tmp_path / "imported.duckdb")
    refused = invoke("import", str(folder), "--store", target, env={"NBFLOW_TENANT": "team-b"})
    assert refused.exit_code != 0 and "--tenant team-b" in refused.output
    taken = invoke("import", str(folder), "--store", target, "--tenant", "team-b", "--trust")
    assert taken.exit_code == 0, taken.output
    assert nf.open_store(target).get_run(run_a.id).tenant == "team-b"
    gc = invoke("gc", "--keep-last", "0", "--store", path, "--tenant", "team-b")
    assert gc.exit_code == 0, gc.output
    assert set(nf.runs(path)["run_id"]) == {run_a.id}


def test_the_browser_lists_only_the_tenants_runs(path: str) -> None:
    legacy = make_flow(path, None).run(progress=False)
    run_a = make_flow(path, "team-a").run(progress=False)
    run_b = make_flow(path, "team-b").run(progress=False)
    browser = nf.browse(make_flow(path, "team-a"))
    assert set(browser.runs.row_keys) == {run_a.id, legacy.id}
    assert run_b.id not in str(browser.runs.rows)


PIPELINE = """
import nbflow as nf

flow = nf.Flow("mod")

@flow.step
def numbers(n: int = 3):
    return list(range(n))
"""


def test_nbflow_run_records_the_run_for_the_tenant(tmp_path: Path) -> None:
    module = tmp_path / "nbflow_tenant_pipeline.py"
    module.write_text(PIPELINE)
    store = str(tmp_path / "mod.duckdb")
    ran = invoke("run", f"{module}:flow", "--store", store, "--tenant", "team-a")
    assert ran.exit_code == 0, ran.output
    by_env = invoke("run", f"{module}:flow", "--store", store, env={"NBFLOW_TENANT": "team-b"})
    assert by_env.exit_code == 0, by_env.output
    assert sorted(nf.runs(store)["tenant"]) == ["team-a", "team-b"]
    bad = invoke("run", f"{module}:flow", "--store", store, "--tenant", "tab\there")
    assert bad.exit_code != 0 and "control" in bad.output
    assert len(nf.runs(store)) == 2


def test_a_gate_is_decided_only_in_its_tenants_store(path: str) -> None:
    flow = nf.Flow("gated", store=path, tenant="team-a")

    @flow.step
    def raw() -> list[int]:
        return [1, 2, 3]

    @flow.gate
    def review(raw: list[int]) -> int:
        return len(raw)

    @flow.step
    def publish(review: int) -> int:
        return review * 2

    run = flow.run(progress=False)
    assert run.status == "waiting"
    token = run.gate_token("review")
    with pytest.raises(TenantMismatchError):
        nf.approve(token, by="mallory", store=nf.open_store(path, tenant="team-b"))
    assert nf.runs(path, status="waiting", tenant="team-b").empty
    assert list(nf.runs(path, status="waiting", tenant="team-a")["run_id"]) == [run.id]
    assert nf.approve(token, by="ann", store=flow.store).status == "completed"


def test_a_private_in_memory_duckdb_cannot_be_opened_for_a_tenant() -> None:
    with pytest.raises(StoreError, match="cannot be opened again for a tenant"):
        nf.open_store(nf.open_store(":memory:"), tenant="team-a")
    assert nf.open_store(":memory:", tenant="team-a").tenant == "team-a"  # opened for it
