"""A damaged log file is detected on open or read with an error naming the problem."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from cairn import crypto
from cairn.errors import CairnError, StorageError
from cairn.log import Log
from tests.unit.core.forge import forge_block

N = 200


def blocks() -> list[bytes]:
    rng = random.Random(5)
    return [rng.randbytes(rng.randint(20, 120)) for _ in range(N)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "log.db"
    with Log.create(path, crypto.key_pair(bytes([3]) * 32)) as lg:
        for i in range(0, N, 10):
            lg.append(blocks()[i : i + 10])
    # closing checkpoints the WAL: the whole log is in the one file now
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    return path


def read_everything(path: Path) -> list[bytes]:
    with Log.open(path) as lg:
        lg.verify_all()
        return [lg.get(i) for i in range(lg.length)]


def test_pristine_reads_back(pristine: Path) -> None:
    assert read_everything(pristine) == blocks()


@pytest.mark.parametrize("keep", [0, 50, 100, 4096, 8192, 20000, -100])
def test_truncated_file_is_refused(pristine: Path, tmp_path: Path, keep: int) -> None:
    path = tmp_path / "t.db"
    data = pristine.read_bytes()
    path.write_bytes(data[:keep])  # a negative keep cuts that many bytes off the end
    with pytest.raises(StorageError) as err:
        read_everything(path)
    assert str(path) in str(err.value)


def test_flipped_bytes_never_come_back_as_data(pristine: Path, tmp_path: Path) -> None:
    """Flip one byte at 300 seeded positions: each time, either an error or the true data."""
    rng = random.Random(11)
    original = pristine.read_bytes()
    expected = blocks()
    outcomes = {"error": 0, "unharmed": 0}
    for trial in range(300):
        path = tmp_path / f"f{trial}.db"
        damaged = bytearray(original)
        pos = rng.randrange(len(damaged))
        damaged[pos] ^= rng.randint(1, 255)
        path.write_bytes(damaged)
        try:
            got = read_everything(path)
        except CairnError as exc:
            message = str(exc)
            outcomes["error"] += 1
            assert message, f"empty error for a flip at {pos}"
        else:
            assert got == expected, f"flip at byte {pos} returned wrong data"
            outcomes["unharmed"] += 1
        path.unlink()
    # most flips land in data, tree or header pages and must be caught
    assert outcomes["error"] > 100, outcomes


def test_damaged_block_is_named(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    shutil.copy(pristine, path)
    forge_block(path, 77, b"forged", fix_hash=False)
    with Log.open(path) as lg:
        assert lg.get(76) == blocks()[76]
        with pytest.raises(StorageError, match="block 77 is damaged"):
            lg.get(77)
        with pytest.raises(StorageError, match="block 77"):
            lg.verify_all()


def test_consistently_forged_block_is_caught_by_the_tree(pristine: Path, tmp_path: Path) -> None:
    """Data and its leaf hash rewritten together: the parent node no longer matches."""
    path = tmp_path / "c.db"
    shutil.copy(pristine, path)
    forge_block(path, 42, b"forged", fix_hash=True)
    with Log.open(path) as lg, pytest.raises(StorageError, match=r"blocks 42\.\.43"):
        lg.verify_all()


def test_not_a_log(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"hello")
    with pytest.raises(StorageError, match="not an SQLite database"):
        Log.open(tmp_path / "x.db")
    import sqlite3

    db = sqlite3.connect(tmp_path / "y.db")
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    with pytest.raises(StorageError, match="not a Cairn log"):
        Log.open(tmp_path / "y.db")
