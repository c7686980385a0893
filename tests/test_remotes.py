"""DVC remotes against real servers, in a throwaway two-stage DVC project.

S3 is moto's S3-compatible server on 127.0.0.1 (testkit/s3_server.py) reached through dvc-s3; the read-only
HTTP remote is the same bucket's path-style URL, as a public bucket serves it; the directory remote is
whatever the repository's own .dvc/config makes the default. Every dvc call is a real
`python -m dvc` subprocess with no AWS settings inherited from the machine running the tests.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from testkit.s3_server import S3Server, closed_port, s3_server
from tests.helpers import REPO

PREPARE = """\
import os, sys, yaml
if os.environ.get("STAGE_MUST_NOT_RUN"):
    sys.exit("prepare ran although its outputs were up to date")
rank = yaml.safe_load(open("params.yaml"))["rank"]
os.makedirs("data", exist_ok=True)
open("data/items.txt", "w").write("".join(f"item {i}\\n" for i in range(rank * 3)))
"""
TRAIN = """\
import json, os, sys, yaml
if os.environ.get("STAGE_MUST_NOT_RUN"):
    sys.exit("train ran although its outputs were up to date")
rank = yaml.safe_load(open("params.yaml"))["rank"]
items = open("data/items.txt").read().splitlines()
os.makedirs("models", exist_ok=True)
open("models/weights.txt", "w").write(" ".join(str(len(x) * rank) for x in items))
open("models/config.json", "w").write(json.dumps({"rank": rank}))
os.makedirs("metrics", exist_ok=True)
json.dump({"items": len(items), "score": 1 / rank}, open("metrics/train.json", "w"))
"""
DVC_YAML = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py]
    params: [rank]
    outs: [data/items.txt]
  train:
    cmd: python train.py
    deps: [train.py, data/items.txt]
    params: [rank]
    outs: [models]
    metrics:
      - metrics/train.json:
          cache: false
"""
CACHED_OUTS = ("data/items.txt", "models")


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without AWS_* and with no AWS or DVC user/system config files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"DVC_NO_ANALYTICS": "1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-creds"),
                "DVC_GLOBAL_CONFIG_DIR": str(tmp / "no-dvc-global"),
                "DVC_SYSTEM_CONFIG_DIR": str(tmp / "no-dvc-system"),
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"})
    env.update(extra)
    return env


def sh(cwd: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def dvc(cwd: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh(cwd, sys.executable, "-m", "dvc", *args, env=env, check=check)


def make_project(root: Path, env: dict[str, str]) -> Path:
    """git + dvc project with two stages run once and committed (outputs in the local cache only)."""
    root.mkdir(parents=True)
    sh(root, "git", "init", "-q", env=env)
    dvc(root, "init", "-q", env=env)
    (root / "params.yaml").write_text("rank: 8\n")
    (root / "prepare.py").write_text(PREPARE)
    (root / "train.py").write_text(TRAIN)
    (root / "dvc.yaml").write_text(DVC_YAML)
    dvc(root, "repro", "-q", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "tiny pipeline", env=env)
    return root


def snapshot(project: Path) -> dict[str, str]:
    """sha256 of every file in the project but git's and DVC's scratch dirs: the state a failure must keep."""
    files = {}
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".dvc/tmp/")):
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def pipeline_objects(project: Path) -> set[str]:
    """What `dvc push` must upload: every cached output in dvc.lock, directories with their files,
    as remote-relative paths (files/md5/ab/cdef…). The cache also holds run-cache entries, not pushed."""
    def path(md5: str) -> str:
        return f"files/md5/{md5[:2]}/{md5[2:]}"

    cache = project / ".dvc" / "cache"
    objects = set()
    for stage in yaml.safe_load((project / "dvc.lock").read_text())["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] not in CACHED_OUTS:  # metrics with `cache: false` live in git
                continue
            objects.add(path(out["md5"]))
            if out["md5"].endswith(".dir"):
                entries = json.loads((cache / path(out["md5"])).read_text())
                objects |= {path(entry["md5"]) for entry in entries}
    return objects


def output_bytes(project: Path) -> dict[str, bytes]:
    out = {}
    for name in CACHED_OUTS + ("metrics/train.json",):
        path = project / name
        for file in sorted([path] if path.is_file() else path.rglob("*")):
            out[file.relative_to(project).as_posix()] = file.read_bytes()
    return out


def assert_up_to_date_without_running(project: Path, env: dict[str, str]) -> None:
    assert json.loads(dvc(project, "status", "--json", env=env).stdout) == {}
    # The stage scripts exit non-zero when this variable is set, so any re-run fails the repro.
    result = dvc(project, "repro", env={**env, "STAGE_MUST_NOT_RUN": "1"})
    assert "Running stage" not in result.stdout


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("remotes")


@pytest.fixture(scope="module")
def env(workdir: Path) -> dict[str, str]:
    return clean_env(workdir)


@pytest.fixture(scope="module")
def project(server: S3Server, workdir: Path, env: dict[str, str]) -> Path:
    """The tiny project with the S3 remote as default: url and endpoint committed, keys in config.local."""
    root = make_project(workdir / "project", env)
    dvc(root, "remote", "add", "-d", "s3", f"s3://{server.bucket}/store", env=env)
    dvc(root, "remote", "modify", "s3", "endpointurl", server.endpoint_url, env=env)
    dvc(root, "remote", "modify", "--local", "s3", "access_key_id", server.access_key_id, env=env)
    dvc(root, "remote", "modify", "--local", "s3", "secret_access_key", server.secret_access_key, env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "S3 remote", env=env)
    return root


@pytest.fixture(scope="module")
def pushed(project: Path, server: S3Server, env: dict[str, str]) -> Path:
    # No AWS_* variables in env: the keys can only come from .dvc/config.local.
    dvc(project, "push", env=env)
    return project


def test_credentials_stay_out_of_git(project: Path, server: S3Server, env: dict[str, str]) -> None:
    local = project / ".dvc" / "config.local"
    assert server.secret_access_key in local.read_text()
    assert sh(project, "git", "check-ignore", "-q", ".dvc/config.local", env=env, check=False).returncode == 0
    tracked = sh(project, "git", "ls-files", "-z", env=env).stdout.split("\0")
    for rel in filter(None, tracked):
        text = (project / rel).read_bytes()
        assert server.secret_access_key.encode() not in text, f"secret found in git-tracked {rel}"
        assert server.access_key_id.encode() not in text, f"access key id found in git-tracked {rel}"
    history = sh(project, "git", "log", "--all", "-p", env=env).stdout
    assert server.secret_access_key not in history


def test_push_then_pull_in_a_fresh_clone_restores_every_output(pushed: Path, server: S3Server, workdir: Path,
                                                             env: dict[str, str]) -> None:
    # Everything in the local cache is now in the bucket, under the remote's prefix.
    assert {f"store/{rel}" for rel in pipeline_objects(pushed)} == set(server.keys("store/"))
    clone = workdir / "clone-s3"
    sh(workdir, "git", "clone", "-q", str(pushed), str(clone), env=env)
    assert not (clone / ".dvc" / "config.local").exists()
    assert not any((clone / name).exists() for name in CACHED_OUTS)

    # A fresh clone has no keys: a clear error, nothing written.
    before = snapshot(clone)
    no_keys = dvc(clone, "pull", env=env, check=False)
    assert no_keys.returncode != 0 and "Unable to locate credentials" in no_keys.stderr
    assert snapshot(clone) == before

    keys = {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key}
    pulled = dvc(clone, "pull", env={**env, **keys})
    assert "fetched" in pulled.stdout.lower() or "added" in pulled.stdout.lower(), pulled.stdout
    assert output_bytes(clone) == output_bytes(pushed)
    assert_up_to_date_without_running(clone, env)


def test_public_http_remote_pulls_without_credentials(pushed: Path, server: S3Server, workdir: Path,
                                                      env: dict[str, str]) -> None:
    # A bucket policy lets anyone read the prefix; its path-style URL is then a read-only http remote.
    public_read = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{server.bucket}/store/*"}]}
    server.client().put_bucket_policy(Bucket=server.bucket, Policy=json.dumps(public_read))
    clone = workdir / "clone-http"
    sh(workdir, "git", "clone", "-q", str(pushed), str(clone), env=env)
    dvc(clone, "remote", "add", "--local", "public", f"{server.endpoint_url}/{server.bucket}/store", env=env)
    try:
        dvc(clone, "pull", "-r", "public", env=env)  # env has no AWS keys: these requests are unsigned
    finally:
        server.client().delete_bucket_policy(Bucket=server.bucket)
    assert output_bytes(clone) == output_bytes(pushed)
    assert_up_to_date_without_running(clone, env)


def test_unreachable_endpoint_fails_cleanly_and_a_retry_succeeds(project: Path, server: S3Server,
                                                                 env: dict[str, str]) -> None:
    port = closed_port()
    dvc(project, "remote", "add", "--local", "retry", f"s3://{server.bucket}/retry", env=env)
    dvc(project, "remote", "modify", "--local", "retry", "endpointurl", f"http://127.0.0.1:{port}", env=env)
    keys = {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key}
    before = snapshot(project)
    failed = dvc(project, "push", "-r", "retry", env={**env, **keys}, check=False)
    assert failed.returncode != 0
    assert "Could not connect to the endpoint URL" in failed.stderr and f"127.0.0.1:{port}" in failed.stderr
    assert snapshot(project) == before
    assert server.keys("retry/") == []

    dvc(project, "remote", "modify", "--local", "retry", "endpointurl", server.endpoint_url, env=env)
    dvc(project, "push", "-r", "retry", env={**env, **keys})
    assert set(server.keys("retry/")) == {f"retry/{rel}" for rel in pipeline_objects(project)}
    assert_up_to_date_without_running(project, env)


def test_wrong_credentials_fail_cleanly_and_a_retry_succeeds(project: Path, server: S3Server,
                                                             env: dict[str, str]) -> None:
    dvc(project, "remote", "add", "--local", "creds", f"s3://{server.bucket}/creds", env=env)
    dvc(project, "remote", "modify", "--local", "creds", "endpointurl", server.endpoint_url, env=env)
    before = snapshot(project)
    wrong = {"unknown key": ("AKIA" + "UNKNOWNKEY" + "0" * 6, server.secret_access_key),  # not a real key
             "wrong secret": (server.access_key_id, "not-the-secret")}
    with server.signatures_enforced():
        for what, (key_id, secret) in wrong.items():
            failed = dvc(project, "push", "-r", "creds", check=False,
                         env={**env, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret})
            assert failed.returncode != 0, what
            assert "403" in failed.stderr and "Forbidden" in failed.stderr, (what, failed.stderr)
            assert snapshot(project) == before, what
    assert server.keys("creds/") == []

    keys = {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key}
    dvc(project, "push", "-r", "creds", env={**env, **keys})
    assert set(server.keys("creds/")) == {f"creds/{rel}" for rel in pipeline_objects(project)}


def test_default_directory_remote_from_the_repo_config(tmp_path: Path) -> None:
    """The repository's committed .dvc/config: `dvc push` and, in a clone beside it, `dvc pull` just work."""
    config = configparser.ConfigParser()
    config.read_string((REPO / ".dvc" / "config").read_text())
    default = config.get("core", "remote", fallback=None)
    assert default, "the repository's .dvc/config names no default remote (core.remote)"
    url = config.get(f"'remote \"{default}\"'", "url")
    assert "://" not in url, f"the default remote should be a local directory, not {url}"

    env = clean_env(tmp_path)
    project = make_project(tmp_path / "coordset", env)
    shutil.copyfile(REPO / ".dvc" / "config", project / ".dvc" / "config")
    sh(project, "git", "commit", "-qam", "the repository's DVC config", env=env)
    storage = (project / ".dvc" / url).resolve()  # DVC resolves a relative url against the .dvc dir
    assert not storage.is_relative_to(project), f"{url} puts the remote inside the clone it backs up"

    dvc(project, "push", env=env)
    assert {p.relative_to(storage).as_posix() for p in storage.rglob("*") if p.is_file()} \
        == pipeline_objects(project)
    clone = tmp_path / "second-clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone), env=env)
    dvc(clone, "pull", env=env)
    assert output_bytes(clone) == output_bytes(project)
    assert_up_to_date_without_running(clone, env)
