"""`optgen.load`'s cache runs nothing foreign (optgen/cache.py, language.md section 13).

Each test replays an attack measured on the cache as it was: code in a file name, a planted
or corrupted package, another user's folder, the cache folder on `sys.path`, a full disk and
a permissive umask. The tests run as root: `os.chown` to 65534 stands for another user.
"""

import errno
import hashlib
import importlib
import importlib.util
import io
import os
import pickle
import shutil
import stat
import sys
from pathlib import Path

import pytest
import torch

import optgen

GD = """network GD {
    state x
    param t = 1.0
    block T = mlp(hidden=dim)
    layers 2
    update {
        x+ = x - t*T(x)
    }
}
"""

# A file name that closes a docstring and calls `os.system` if it is ever spliced into code.
PAYLOAD = 'x"""+str(__import__("os").system("touch INJECTED"))+"""y.opt'

# Code planted in the cache: it leaves this file behind if it ever runs.
PLANTED = "open({marker!r}, 'w').close()\nclass GD:\n    pass\n"

OTHER_USER = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="simulates other users with chown")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder, configured the documented way."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("OPTGEN_CACHE", str(folder))
    return folder


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PLANTED_CODE_RAN"


@pytest.fixture
def filename(request) -> str:
    """A file name per test: its own package, never one an earlier test imported."""
    return f"{request.node.name.replace('[', '_').replace(']', '')}.opt"


def forget(cls: type) -> str:
    """Drop a loaded package from `sys.modules`, as a new process starts; return its name."""
    package = cls.__module__.split(".")[0]
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    return package


def entry_of(cls: type) -> Path:
    """The cache folder holding the package of a loaded class."""
    return Path(sys.modules[cls.__module__].__file__).parent


def works(cls: type) -> None:
    torch.manual_seed(0)
    assert cls(4).eval()(torch.randn(2, 4)).shape == (2, 4)


def verify_manifest(entry: Path) -> None:
    """Like `sha256sum -c MANIFEST.sha256`: every file listed, with its digest, and no other."""
    listed = {}
    for line in (entry / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        listed[name] = digest
    assert set(os.listdir(entry)) == {*listed, "MANIFEST.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256((entry / name).read_bytes()).hexdigest() == digest


def chown_tree(folder: Path, uid: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, -1)


def plant(entry: Path, marker: Path) -> None:
    """A package under the name optgen expects, whose code leaves `marker` when it runs."""
    entry.mkdir(parents=True)
    (entry / "__init__.py").write_text(PLANTED.format(marker=str(marker)))
    (entry / "gd.py").write_text(PLANTED.format(marker=str(marker)))


def scratch_entry(tmp_path, monkeypatch, filename: str) -> Path:
    """Where `filename`'s package lives relative to a cache folder (found by loading it once)."""
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("OPTGEN_CACHE", str(scratch))
    cls = optgen.loads(GD, filename)["GD"]
    entry = entry_of(cls)
    forget(cls)
    shutil.rmtree(scratch)  # as in a new process: the only copy is the planted one
    return entry.relative_to(scratch)


# ---------------------------------------------------------------- 1. code in a file name
def test_a_file_name_never_becomes_code_through_loads(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cls = optgen.loads(GD, PAYLOAD)["GD"]
    works(cls)
    assert not (tmp_path / "INJECTED").exists()
    assert "INJECTED" not in (entry_of(cls) / "__init__.py").read_text()


def test_a_file_name_never_becomes_code_through_load(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "sources" / PAYLOAD.replace("x", "z", 1)  # another package than above
    source.parent.mkdir()
    source.write_text(GD)
    works(optgen.load(source)["GD"])
    assert not (tmp_path / "INJECTED").exists()


# ---------------------------------------------------------------- 2. another user's folder
def test_an_unwritable_home_never_falls_back_to_a_shared_folder(
    tmp_path, monkeypatch, marker, filename
):
    relative = scratch_entry(tmp_path, monkeypatch, filename)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("OPTGEN_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    shared = tmp_path / "tmp"
    shared.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(shared))
    # Another user prepared the fixed name the cache used to fall back to.
    fallback = shared / f"optgen-{os.getuid()}"
    plant(fallback / relative, marker)
    chown_tree(fallback, OTHER_USER)
    for folder in [fallback, *fallback.rglob("*")]:
        os.chmod(folder, 0o777)

    real_mkdir = os.mkdir

    def unwritable_home(path, *args, **kwargs):  # root ignores modes: a read-only HOME
        if Path(path).is_relative_to(home):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", unwritable_home)
    cls = optgen.loads(GD, filename)["GD"]
    works(cls)
    assert not marker.exists()
    root = entry_of(cls).parent
    assert not root.is_relative_to(fallback)
    info = os.stat(root)
    assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700


@pytest.mark.parametrize(
    "owner, mode, reason",
    [(OTHER_USER, 0o755, "owned by uid"), (0, 0o777, "writable by"), (0, 0o770, "writable by")],
    ids=["another-owner", "world-writable", "group-writable"],
)
def test_a_cache_folder_someone_else_controls_is_refused(
    tmp_path, monkeypatch, marker, filename, owner, mode, reason
):
    relative = scratch_entry(tmp_path, monkeypatch, filename)
    configured = tmp_path / "configured"
    plant(configured / relative, marker)
    chown_tree(configured, owner)
    os.chmod(configured, mode)
    monkeypatch.setenv("OPTGEN_CACHE", str(configured))
    with pytest.raises(optgen.OptgenError) as refused:
        optgen.loads(GD, filename)
    assert not marker.exists()
    assert str(configured) in str(refused.value) and reason in str(refused.value)
    assert refused.value.diagnostics == []


def test_an_xdg_cache_folder_writable_by_others_is_refused(tmp_path, monkeypatch, filename):
    monkeypatch.delenv("OPTGEN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = tmp_path / "xdg" / "optgen"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    with pytest.raises(optgen.OptgenError, match="writable by group or others"):
        optgen.loads(GD, filename)


# ---------------------------------------------------------------- 3, 5. planted or corrupted entries
def test_a_package_planted_under_the_expected_name_is_never_imported(cache, marker, filename):
    first = optgen.loads(GD, filename)["GD"]
    entry = entry_of(first)
    forget(first)
    shutil.rmtree(entry)
    plant(entry, marker)
    cls = optgen.loads(GD, filename)["GD"]
    works(cls)
    assert not marker.exists()
    verify_manifest(entry)


def truncate(entry: Path, marker: Path) -> None:
    module = entry / "gd.py"
    module.write_bytes(module.read_bytes()[: module.stat().st_size // 2])


def empty(entry: Path, marker: Path) -> None:
    (entry / "gd.py").write_bytes(b"")


def replace_with_a_consistent_manifest(entry: Path, marker: Path) -> None:
    """Planted code whose manifest lists its own digest: only optgen's code may pass."""
    planted = PLANTED.format(marker=str(marker)).encode()
    (entry / "gd.py").write_bytes(planted)
    manifest = entry / "MANIFEST.sha256"
    if manifest.exists():
        digest = hashlib.sha256(planted).hexdigest()
        lines = manifest.read_text().splitlines()
        lines = [f"{digest}  gd.py" if line.endswith("  gd.py") else line for line in lines]
        manifest.write_text("\n".join(lines) + "\n")


def add_a_file(entry: Path, marker: Path) -> None:
    (entry / "triton.py").write_text(PLANTED.format(marker=str(marker)))


def drop_the_manifest(entry: Path, marker: Path) -> None:
    (entry / "MANIFEST.sha256").unlink(missing_ok=True)


@pytest.mark.parametrize(
    "corrupt",
    [truncate, empty, replace_with_a_consistent_manifest, add_a_file, drop_the_manifest],
    ids=lambda corrupt: corrupt.__name__,
)
def test_a_corrupted_entry_is_rebuilt_never_imported(cache, marker, filename, corrupt):
    first = optgen.loads(GD, filename)["GD"]
    entry = entry_of(first)
    forget(first)
    corrupt(entry, marker)
    cls = optgen.loads(GD, filename)["GD"]
    works(cls)
    assert not marker.exists()
    verify_manifest(entry)
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # nothing staged or stale


# ---------------------------------------------------------------- 4. sys.path
def test_the_cache_folder_is_never_on_sys_path(cache, filename):
    cls = optgen.loads(GD, filename)["GD"]
    entry = entry_of(cls)
    assert not [p for p in sys.path if p and Path(p).resolve().is_relative_to(cache.resolve())]
    # A module dropped in the cache is importable neither at top level nor in a package.
    (entry.parent / "optgen_planted_probe.py").write_text("")
    (entry / "planted_probe.py").write_text("")
    importlib.invalidate_caches()
    assert importlib.util.find_spec("optgen_planted_probe") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{cls.__module__.split('.')[0]}.planted_probe")


def test_loaded_instances_pickle_and_torch_save(cache, filename):
    """Kept behaviour (the other process is test_toolchain's): real module names, real files."""
    cls = optgen.loads(GD, filename)["GD"]
    assert Path(sys.modules[cls.__module__].__file__).is_relative_to(cache)
    torch.manual_seed(0)
    module = cls(4).eval()
    x = torch.randn(2, 4)
    clone = pickle.loads(pickle.dumps(module))
    assert type(clone) is cls
    torch.testing.assert_close(clone(x), module(x))
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    assert type(torch.load(buffer, weights_only=False)) is cls
    assert optgen.loads(GD, filename)["GD"] is cls


# ---------------------------------------------------------------- 6. full disk
def test_a_full_disk_is_an_optgen_error_that_leaves_nothing_behind(cache, monkeypatch, filename):
    import optgen.cache

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(optgen.cache, "_write_file", full_disk)
    with pytest.raises(optgen.OptgenError) as failed:
        optgen.loads(GD, filename)
    assert "No space left on device" in str(failed.value) and str(cache) in str(failed.value)
    assert [list(root.iterdir()) for root in cache.iterdir()] == [[]]
    monkeypatch.undo()
    monkeypatch.setenv("OPTGEN_CACHE", str(cache))
    works(optgen.loads(GD, filename)["GD"])


# ---------------------------------------------------------------- 7. umask
def test_cache_folders_are_private_whatever_the_umask(tmp_path, monkeypatch, filename):
    monkeypatch.setenv("OPTGEN_CACHE", str(tmp_path / "a" / "b" / "cache"))
    previous = os.umask(0)
    try:
        optgen.loads(GD, filename)
    finally:
        os.umask(previous)
    created = [tmp_path / "a", *(tmp_path / "a").rglob("*")]
    for path in created:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        else:
            assert not mode & 0o022, (path, oct(mode))
    assert any(path.name == "gd.py" for path in created)
