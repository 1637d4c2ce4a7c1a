"""The unprivileged system user that runs PostgreSQL when the launcher runs as root."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devstack import config
from devstack._process import DevstackError


@dataclass(frozen=True)
class OsUser:
    """A system user: name, uid, primary gid and every gid it belongs to."""

    name: str
    uid: int
    gid: int
    gids: frozenset[int]


def _lookup(name: str) -> OsUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = frozenset(os.getgrouplist(name, entry.pw_gid))
    return OsUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, gids=gids)


def ensure_os_user(name: str) -> OsUser:
    """Return the system user `name`, creating it (`useradd --system`) when it does not exist."""
    found = _lookup(name)
    if found is not None:
        return found
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    last_error = ""
    # NOTE: several launchers may race to create the user; useradd then fails on the lock of
    # /etc/passwd or on the name already taken, and a retry finds the user.
    for _attempt in range(5):
        result = subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                nologin,
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = _lookup(name)
        if found is not None:
            return found
        last_error = result.stderr.strip()
        time.sleep(0.2)
    raise DevstackError(f"could not create system user {name!r} for PostgreSQL: {last_error}")


def _mode_for(user: OsUser, path: Path) -> int:
    """The rwx bits (0-7) that apply to `user` on `path` (ACLs are not considered)."""
    st = path.stat()
    if st.st_uid == user.uid:
        return (st.st_mode >> 6) & 7
    if st.st_gid in user.gids:
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def _describe(path: Path) -> str:
    st = path.stat()
    owner = pwd.getpwuid(st.st_uid).pw_name if st.st_uid >= 0 else "?"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{path} (mode {stat.filemode(st.st_mode)}, {owner}:{group})"


def check_access(user: OsUser, path: Path, need: int, what: str) -> None:
    """Raise a clear error unless `user` can traverse every parent of `path` and has `need` on it."""
    path = path.resolve()
    for parent in reversed(path.parents):
        if not _mode_for(user, parent) & 1:
            raise DevstackError(
                f"PostgreSQL runs as system user {user.name!r} (it refuses root), but that user cannot "
                f"traverse {_describe(parent)} to reach the {what} {path}. Run from a checkout and state "
                f"folder under world-traversable directories, or allow traversal: chmod o+x {parent}"
            )
    if _mode_for(user, path) & need != need:
        raise DevstackError(f"system user {user.name!r} lacks access to the {what} {_describe(path)}")


def reachable_pg_install(user: OsUser, bin_dir: Path) -> Path:
    """The `bin/` folder to run PostgreSQL from as `user`.

    The wheel's own folder when `user` can reach it; otherwise (a checkout under a 0700 home folder,
    for instance) a copy of the wheel's PostgreSQL build in a world-readable folder under /var/tmp,
    made once per build and reused.
    """
    try:
        for sub, what in (
            ("bin/postgres", "PostgreSQL binary"),
            ("lib", "library folder"),
            ("share", "share folder"),
        ):
            check_access(user, bin_dir.parent / sub, 0o5, what)
        return bin_dir
    except DevstackError:
        pass
    # NOTE: the wheel's binaries find their libraries through RPATH $ORIGIN/../../../<pkg>.libs, so
    # the copy keeps the layout <site>/<pkg>/pginstall and <site>/<pkg>.libs.
    install = bin_dir.parent
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    marker = hashlib.sha256(f"{install.resolve()}:{install.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    target = Path("/var/tmp") / f"corral-pginstall-{marker}"
    if not (target / package.name / install.name / "bin" / "postgres").is_file():
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
        if target.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    target.chmod(0o755)
    return target / package.name / install.name / "bin"


def pg_os_user_for_current_process(bin_dir: Path, state_dir: Path, pg_root: Path) -> OsUser | None:
    """The user PostgreSQL must run as: None (the current user) unless running as root.

    As root: create or reuse the system user, check that it can reach the PostgreSQL binaries
    and the state folder, and open the launcher's own folders to traversal (not listing).
    """
    if os.geteuid() != 0:
        pg_root.mkdir(parents=True, exist_ok=True)
        return None
    user = ensure_os_user(config.pg_os_user())
    read_exec = 0o5
    check_access(user, bin_dir / "postgres", read_exec, "PostgreSQL binary")
    check_access(user, bin_dir.parent / "lib", read_exec, "PostgreSQL library folder")
    check_access(user, bin_dir.parent / "share", read_exec, "PostgreSQL share folder")
    pg_root.mkdir(parents=True, exist_ok=True)
    # NOTE: a state folder made by mkdtemp is 0700; the PostgreSQL user needs only to traverse it.
    for folder in (state_dir, pg_root):
        folder.chmod(folder.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)
    check_access(user, pg_root, 0o1, "state folder")
    return user
