"""Bad storage: a read-only data directory and a full disk each give a clear, typed error,
and nothing already committed is lost. Real filesystems: a tiny tmpfs mounted for the test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from stalwart.core.audit import verify_chain
from stalwart.core.database import DB
from stalwart.core.migrations import migrate
from stalwart.errors import ReadOnlyStorageError, StorageFullError
from stalwart.models import Project
from stalwart.repositories import ProjectRepository
from tests.conftest import FAST_RETRY, PYTHON, child_env, mount_problem, need

pytestmark = pytest.mark.root


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at a fresh directory, unmounted afterwards."""
    need("root", mount_problem())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True)


def _add(db: DB, name: str, size: int = 100) -> int:
    return db.run_tx(
        lambda uow: ProjectRepository(uow).create(name=name, description="d" * size).id
    )


def _names(db: DB) -> list[str]:
    with db.get_conn() as conn:
        return list(conn.execute(select(Project.name).order_by(Project.id)).scalars())


def test_full_disk_is_a_clear_error_and_keeps_what_was_committed(tiny_fs: Path) -> None:
    db = DB(f"sqlite:///{tiny_fs / 'data' / 'stalwart.db'}", retry=FAST_RETRY)
    migrate(db)
    committed = [f"before-{i}" for i in range(5)]
    for name in committed:
        _add(db, name)
    filler = tiny_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # take every free block that is left
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(StorageFullError) as info:  # noqa: PT012 - write until the disk is full
        for i in range(200):
            _add(db, f"overflow-{i}", size=20000)
    assert "full" in info.value.message
    assert "Free disk space" in info.value.action
    names = _names(db)
    assert names[: len(committed)] == committed
    assert not any(n.startswith("overflow") and n not in names for n in names)

    filler.unlink()  # the operator frees space: writing works again, nothing was lost
    _add(db, "after")
    with db.get_conn() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
        assert verify_chain(conn).ok
    assert _names(db)[: len(committed)] == committed
    assert _names(db)[-1] == "after"
    db.dispose()


def test_read_only_data_directory_is_a_clear_error_and_keeps_data(tiny_fs: Path) -> None:
    db = DB(f"sqlite:///{tiny_fs / 'data' / 'stalwart.db'}", retry=FAST_RETRY)
    migrate(db)
    _add(db, "kept")
    db.dispose()  # the kernel refuses to remount a filesystem read-only under open files
    _remount(tiny_fs, "ro")
    try:
        with pytest.raises(ReadOnlyStorageError) as info:
            _add(db, "refused")
        assert "read-only" in info.value.message
        assert "writable" in info.value.action
        db.dispose()
    finally:
        _remount(tiny_fs, "rw")
    assert _names(db) == ["kept"]
    _add(db, "later")
    assert _names(db) == ["kept", "later"]
    db.dispose()


def test_read_only_directory_at_start_names_the_directory(tiny_fs: Path) -> None:
    _remount(tiny_fs, "ro")
    try:
        with pytest.raises(ReadOnlyStorageError, match="data"):
            DB(f"sqlite:///{tiny_fs / 'data' / 'stalwart.db'}")
        # And through the CLI, as an operator meets it.
        done = subprocess.run(
            [PYTHON, "-m", "stalwart.cli.main", "db", "migrate"],
            capture_output=True,
            text=True,
            env=child_env(STALWART_DATA_DIR=str(tiny_fs / "data")),
            timeout=60,
        )
    finally:
        _remount(tiny_fs, "rw")
    assert done.returncode == 2
    assert "cannot be created" in done.stderr
    assert "writable" in done.stderr
