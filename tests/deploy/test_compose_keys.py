"""scripts/make_compose_keys writes keys the services accept, and keeps existing ones unless forced."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.make_compose_keys import COMPOSE_PASSWORDS, KeysExistError, main, make_compose_keys
from services.common.auth import Access, AuthConfig, build_authenticator, service_key
from services.common.config import load_config
from tests.helpers.procs import ROOT


def test_keys_are_accepted_with_their_roles(tmp_path: Path) -> None:
    keys = make_compose_keys(tmp_path, tenant="acme")
    cfg = AuthConfig(enabled=True, keys_file=str(keys.keys_file), service_key_file=str(keys.service_key_file))
    authenticator = build_authenticator(cfg)
    assert authenticator is not None and len(authenticator) == 3
    assert service_key(cfg) == keys.service_key
    roles = {raw: authenticator.authenticate(raw).principal for raw in (keys.service_key, keys.admin_key)}
    assert [p.access for p in roles.values()] == [Access.SERVICE, Access.ADMIN]
    tenant = authenticator.authenticate(keys.tenant_key).principal
    assert (tenant.tenant, tenant.access) == ("acme", Access.TENANT)
    # Only hashes are at rest.
    stored = keys.keys_file.read_text(encoding="utf-8")
    assert not any(raw in stored for raw in (keys.service_key, keys.admin_key, keys.tenant_key))


def test_existing_keys_are_kept_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = make_compose_keys(tmp_path)
    before = first.keys_file.read_text(encoding="utf-8")
    with pytest.raises(KeysExistError, match="--force"):
        make_compose_keys(tmp_path)
    assert main(["--out", str(tmp_path)]) == 0
    assert "keeping them" in capsys.readouterr().err
    assert first.keys_file.read_text(encoding="utf-8") == before
    # Half a pair is refused too: a new service key would not match the keys file.
    first.service_key_file.unlink()
    with pytest.raises(KeysExistError, match=r"api-keys\.yaml"):
        make_compose_keys(tmp_path)
    second = make_compose_keys(tmp_path, force=True)
    assert second.keys_file.read_text(encoding="utf-8") != before


def test_command_line_prints_the_admin_and_tenant_keys_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path / "s"), "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert "admin key:" in out and "tenant key (acme):" in out
    assert (tmp_path / "s" / "service-key").read_text(encoding="utf-8").strip() not in out
    with pytest.raises(SystemExit) as bad:
        main(["--out", str(tmp_path / "t"), "--tenant", "no spaces"])
    assert bad.value.code == 2 and "--tenant" in capsys.readouterr().err


def test_compose_config_loads_the_generated_files(tmp_path: Path) -> None:
    keys = make_compose_keys(tmp_path)
    env = {
        "CORRAL_AUTH__ENABLED": "true",
        "CORRAL_AUTH__KEYS_FILE": str(keys.keys_file),
        "CORRAL_AUTH__SERVICE_KEY_FILE": str(keys.service_key_file),
    }
    cfg = load_config(ROOT / "deploy" / "compose" / "corral.yaml", env=env)
    authenticator = build_authenticator(cfg.auth)
    assert authenticator is not None and len(authenticator) == 3


def test_passwords_are_written_once_and_never_replaced(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    passwords = {name: (tmp_path / name).read_text(encoding="utf-8") for name in COMPOSE_PASSWORDS}
    assert len(set(passwords.values())) == len(COMPOSE_PASSWORDS)
    assert all(len(p) >= 40 and p.strip() == p for p in passwords.values())
    # An install from before store passwords: keys present, passwords missing; they are added.
    (tmp_path / "redis-password").unlink()
    assert main(["--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "redis-password").read_text(encoding="utf-8") not in ("", passwords["redis-password"])
    kept = {name: (tmp_path / name).read_text(encoding="utf-8") for name in COMPOSE_PASSWORDS}
    assert {k: v for k, v in kept.items() if k != "redis-password"} == {
        k: v for k, v in passwords.items() if k != "redis-password"
    }
