"""The cache behind `optgen.load`: real files for the generated modules, and nothing foreign run.

`load` needs its classes in files under a stable module name, so that instances pickle and
`torch.save` like any module's. The cache gives them that, and is never a source of code:

- The code executed is the code optgen has just generated in memory. A cache entry is a
  package folder whose files must match that code, checked against the sha256 digests of its
  manifest before import; an entry that does not (planted, truncated, empty, stale) is
  rebuilt and atomically replaced. The modules execute the verified bytes: no second read of
  the file and no bytecode from `__pycache__`.
- No user text becomes code: every package's `__init__.py` is one constant text.
- The cache folder is never put on `sys.path`, and the packages have an empty `__path__`:
  each module is imported by its explicit location, registered in `sys.modules` under its
  package's name, and nothing else in the folder is importable.
- Folders optgen creates are 0700 whatever the umask, files 0600. A cache folder owned by
  another user or writable by group or others is refused with a `CacheError`. When the
  user's cache folder is read-only, a private folder made by `tempfile.mkdtemp` serves this
  process alone (no shared fallback that another user could create first).
- Writes are atomic: each file is written, flushed and fsynced in a staging folder that is
  renamed into place. Any `OSError` while writing becomes a `CacheError` naming the folder,
  and the staging folder is removed.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import importlib.abc
import importlib.util
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from ._version import __version__
from .errors import OptgenError

MANIFEST = "MANIFEST.sha256"

# Constant, so that no user text (a file name above all) is ever spliced into code.
INIT_SOURCE = b'"""Modules compiled by optgen for `optgen.load`; see MANIFEST.sha256."""\n'

# The names of the files become paths and module names: optgen's own stems, nothing else.
_MODULE_FILE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.py")

# Errors of a cache folder the user cannot write to, where a private folder serves instead.
_READ_ONLY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

# Group- or world-writable: someone else could plant files there.
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH

# How often an entry is rebuilt when it keeps failing its check (another process racing).
_ATTEMPTS = 3

_lock = threading.RLock()
_private_root: Path | None = None


class CacheError(OptgenError):
    """optgen's cache folder cannot be trusted or written. It has a message, no diagnostics."""

    def __init__(self, message: str):
        # OptgenError renders the diagnostics of a source; this error is about a folder.
        Exception.__init__(self, message)
        self.source = None
        self._diagnostics = []
        self.message = message

    def render(self) -> str:
        return self.message


def cache_folder() -> Path:
    """Where `load` writes its packages: $OPTGEN_CACHE, else the user's cache folder."""
    configured = os.environ.get("OPTGEN_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "optgen"


def load_package(outputs: dict[str, str], filename: str) -> dict[str, ModuleType]:
    """The generated modules (by file stem) of a source, imported from a verified cache entry.

    `outputs` is the compiler's {file name: code}; its `test_*` files are left out. The same
    source gives the same modules again within a process.
    """
    files = package_files(outputs)
    package = package_name(outputs, filename)
    with _lock:
        # Written (or verified) even when already imported: a later process finds it there.
        folder = _intact_entry(_modules_root(), package, files)
        loaded = _already_loaded(package, files)
        if loaded is not None:
            return loaded
        return _import_package(folder, package, files)


def package_files(outputs: dict[str, str]) -> dict[str, bytes]:
    """The files of a cache entry: the generated modules and the constant `__init__.py`."""
    files = {"__init__.py": INIT_SOURCE}
    for name, code in outputs.items():
        if name.startswith("test_"):
            continue
        if not _MODULE_FILE.fullmatch(name) or name == "__init__.py":
            raise ValueError(f"optgen generated a file name unfit for a module: {name!r}")
        files[name] = code.encode("utf-8")
    return files


def package_name(outputs: dict[str, str], filename: str) -> str:
    """A digest of optgen's version, the source's file name and every generated file.

    The same source always imports the same package, and a changed one (or a change of
    optgen that changes the code, within one version) never meets a stale entry. The file
    name enters only the digest.
    """
    parts = [__version__, Path(filename).name]
    parts += [f"{name}\0{code}" for name, code in sorted(outputs.items())]
    return "optgen_" + hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:20]


def manifest(files: dict[str, bytes]) -> bytes:
    """The sha256 digest of every file of an entry, in `sha256sum` format (`sha256sum -c`)."""
    lines = [
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())
    ]
    return "".join(lines).encode("ascii")


def private_folder(name: str) -> Path | None:
    """`name` in optgen's cache folder, created 0700 and checked as the modules' folder is,
    for a cache optgen can do without (the parser's tables): None when it cannot be trusted
    or written, never an error."""
    folder = cache_folder() / name
    try:
        created = _make_private_folders(folder)
        for checked in (cache_folder(), folder, *created):
            _refuse_if_untrusted(checked)
    except (OSError, CacheError):
        return None
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a private temporary beside it, fsync, rename), so a
    reader sees the old file or the whole new one; raises OSError, leaving nothing behind."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        _write_file(staging, data)
        os.replace(staging, path)
    except BaseException:
        _remove(staging)
        raise


# ---------------------------------------------------------------- the cache's folders
def _modules_root() -> Path:
    """This version's folder of packages, trusted and writable, or this process' own folder."""
    folder = cache_folder()
    root = folder / f"modules-{__version__}"
    try:
        created = _make_private_folders(root)
    except OSError as error:
        if error.errno not in _READ_ONLY:
            message = f"cannot create optgen's cache folder {root}: {_reason(error)}"
            raise CacheError(message) from error
        created = []
    # Checked even when unwritable: a folder someone else controls is an error, not a fallback.
    for checked in (folder, root, *created):
        if os.path.lexists(checked):
            _refuse_if_untrusted(checked)
    if os.path.isdir(root) and os.access(root, os.W_OK | os.X_OK):
        return root
    return _private_temporary_root()


def _make_private_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents, each 0700; return those created here."""
    missing = []
    path = folder
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    created = []
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # made meanwhile by another process: checked as found
            continue
        os.chmod(path, 0o700)  # explicit: mkdir's mode is masked by the umask, not enforced
        created.append(path)
    return created


def _refuse_if_untrusted(folder: Path) -> None:
    """Raise `CacheError` unless `folder` is a folder of this user that no one else can write."""
    try:
        info = os.stat(folder)
    except OSError as error:
        raise CacheError(f"cannot use optgen's cache folder {folder}: {_reason(error)}") from error
    hint = "set $OPTGEN_CACHE to a folder of yours that only you can write"
    if not stat.S_ISDIR(info.st_mode):
        raise CacheError(f"refusing optgen's cache folder {folder}: it is not a folder; {hint}")
    if info.st_uid != os.geteuid():
        raise CacheError(
            f"refusing optgen's cache folder {folder}: it is owned by uid {info.st_uid}, "
            f"not by you (uid {os.geteuid()}); {hint}"
        )
    if info.st_mode & _WRITABLE_BY_OTHERS:
        raise CacheError(
            f"refusing optgen's cache folder {folder}: it is writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod go-w {folder}` or {hint}"
        )


def _private_temporary_root() -> Path:
    """A folder of this process alone, for a read-only cache folder; removed at exit.

    `mkdtemp` makes a new folder (0700) under an unpredictable name, so no one can have
    prepared it, unlike a fixed name in the shared temporary directory.
    """
    global _private_root
    if _private_root is None or not _private_root.is_dir():
        try:
            _private_root = Path(tempfile.mkdtemp(prefix="optgen-"))
        except OSError as error:
            raise CacheError(f"cannot create a temporary cache folder: {_reason(error)}") from error
        atexit.register(shutil.rmtree, _private_root, True)
    _refuse_if_untrusted(_private_root)
    return _private_root


# ---------------------------------------------------------------- entries
def _intact_entry(root: Path, package: str, files: dict[str, bytes]) -> Path:
    """The folder of `package` in `root`, holding exactly `files`: verified, else rebuilt."""
    folder = root / package
    digests = manifest(files)
    for _ in range(_ATTEMPTS):
        if _is_intact(folder, files, digests):
            return folder
        _install_entry(root, folder, files, digests)
    raise CacheError(f"optgen's cache entry {folder} keeps changing while it is written")


def _is_intact(folder: Path, files: dict[str, bytes], digests: bytes) -> bool:
    """Whether `folder` is a private folder holding the manifest and the files it lists."""
    try:
        if not _is_private(os.lstat(folder), stat.S_ISDIR):
            return False
        if set(os.listdir(folder)) != {*files, MANIFEST}:
            return False  # a missing file, or one planted beside them
        if _read_private_file(folder / MANIFEST) != digests:
            return False
        # The manifest is the expected one: each file must have the digest it lists.
        return all(
            hashlib.sha256(_read_private_file(folder / name)).digest()
            == hashlib.sha256(data).digest()
            for name, data in files.items()
        )
    except OSError:  # missing, a symbolic link (O_NOFOLLOW), unreadable: rebuilt
        return False


def _is_private(info: os.stat_result, kind: Callable[[int], bool]) -> bool:
    return (
        kind(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & _WRITABLE_BY_OTHERS
    )


def _read_private_file(path: Path) -> bytes:
    """The bytes of a regular file of this user; OSError for anything else."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with open(descriptor, "rb") as handle:
        if not _is_private(os.fstat(handle.fileno()), stat.S_ISREG):
            raise OSError(errno.EPERM, "not a private regular file", str(path))
        return handle.read()


def _install_entry(root: Path, folder: Path, files: dict[str, bytes], digests: bytes) -> None:
    """Write the entry in a staging folder, then rename it over `folder` in one step."""
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
        for name, data in {**files, MANIFEST: digests}.items():
            _write_file(staging / name, data)
        _fsync_folder(staging)
        _swap_into_place(staging, folder)
        _fsync_folder(root)
    except OSError as error:
        raise CacheError(
            f"cannot write to optgen's cache folder {root}: {_reason(error)}; free some space "
            "or set $OPTGEN_CACHE to another folder"
        ) from error
    finally:
        if staging is not None and os.path.lexists(staging):
            _remove(staging)


def _write_file(path: Path, data: bytes) -> None:
    """Create `path` (0600, never through a link) and put `data` on disk before it is used."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the folder's new names durable, so that a crash leaves whole entries only."""
    descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot
            raise
    finally:
        os.close(descriptor)


def _swap_into_place(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`, moving aside (then removing) whatever `folder` held."""
    stale = None
    if os.path.lexists(folder):
        stale = folder.with_name(f".{folder.name}.stale-{secrets.token_hex(8)}")
        try:
            os.rename(folder, stale)
        except FileNotFoundError:  # another process moved it first
            stale = None
    try:
        os.rename(staging, folder)
    except OSError as error:
        # Another process installed its entry meanwhile: the caller checks that one.
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    finally:
        if stale is not None:
            _remove(stale)


def _remove(path: Path) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


# ---------------------------------------------------------------- import
class _VerifiedSource(importlib.abc.Loader):
    """Executes the bytes optgen generated and checked, never what the file holds later.

    No bytecode is read or written, so a planted `__pycache__` file is never run either.
    """

    def __init__(self, path: Path, source: bytes):
        self.path = path
        self.source = source

    def create_module(self, spec):
        return None  # the default module

    def exec_module(self, module: ModuleType) -> None:
        code = compile(self.source, str(self.path), "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname: str) -> str:
        return self.source.decode("utf-8")  # for tracebacks and `inspect`


def _already_loaded(package: str, files: dict[str, bytes]) -> dict[str, ModuleType] | None:
    """The modules of `package` this process imported through the cache, if all are there."""
    names = {_stem(name): f"{package}.{_stem(name)}" for name in files if name != "__init__.py"}
    modules = [sys.modules.get(name) for name in (package, *names.values())]
    if all(isinstance(getattr(m, "__loader__", None), _VerifiedSource) for m in modules):
        return {stem: sys.modules[name] for stem, name in names.items()}
    return None


def _import_package(folder: Path, package: str, files: dict[str, bytes]) -> dict[str, ModuleType]:
    parent = _execute(package, folder / "__init__.py", files["__init__.py"], is_package=True)
    modules = {}
    for name in sorted(files):
        if name != "__init__.py":
            stem = _stem(name)
            modules[stem] = _execute(f"{package}.{stem}", folder / name, files[name])
            setattr(parent, stem, modules[stem])
    return modules


def _execute(name: str, path: Path, source: bytes, is_package: bool = False) -> ModuleType:
    """Import `source` as module `name` located at `path`, registered in `sys.modules`."""
    loader = _VerifiedSource(path, source)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if is_package:
        # A package for pickle's dotted names, but with no search path: nothing in the
        # folder but the verified files is importable as a submodule.
        spec.submodule_search_locations = []
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _stem(file_name: str) -> str:
    return file_name.removesuffix(".py")
