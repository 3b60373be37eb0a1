"""Output and log paths that cannot be written fail at once (exit 2), naming the path, before any
long work, and leave nothing behind; the Python API raises the same error."""

from __future__ import annotations

import os

import pytest

from tvm_pipeline.api import compile as compile_model, prepare
from tvm_pipeline.errors import UsageError

# a folder no process can create files in, even as root (sysfs refuses new files)
UNWRITABLE = "/sys/tvm-pipeline-test"


def _bad_destination(case: str, tmp_path):
    """(the -o path, the text the message must name)."""
    if case == "existing-file":
        (tmp_path / "taken.tvm").write_text("keep me")
        return tmp_path / "taken.tvm", "taken.tvm"
    if case == "parent-is-file":
        (tmp_path / "plain").write_text("keep me")
        return tmp_path / "plain" / "sub" / "out.tvm", "plain"
    if case == "empty":
        return "", "-o"
    return f"{UNWRITABLE}/out.tvm", UNWRITABLE


@pytest.fixture(scope="module")
def prepared_v2(small_v2):
    return prepare(small_v2)


def _left_behind(tmp_path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()} - {"taken.tvm", "plain"}


@pytest.mark.parametrize("case", ["existing-file", "parent-is-file", "empty", "unwritable"])
def test_compile_refuses_unwritable_output_before_work(cli, small_v2, prepared_v2, tmp_path, case):
    output, culprit = _bad_destination(case, tmp_path)
    res = cli("compile", small_v2, "-o", output)
    assert res.code == UsageError.exit_code, res.err
    assert culprit in res.err and "-o" in res.err and "Error" not in res.err
    assert "compiling" not in res.err            # refused before the model was even read
    assert not _left_behind(tmp_path)
    if case == "existing-file":
        assert (tmp_path / "taken.tvm").read_text() == "keep me"
    with pytest.raises(UsageError):
        compile_model(prepared_v2, output)


@pytest.mark.parametrize("case", ["file", "unwritable"])
def test_tune_refuses_unwritable_logs(cli, small_v2, tmp_path, case):
    logs = tmp_path / "logs" if case == "file" else UNWRITABLE
    if case == "file":
        logs.write_text("not a folder")
    res = cli("tune", small_v2, "--logs", logs, "--trials", "1")
    assert res.code == UsageError.exit_code, res.err
    assert str(logs) in res.err and "--logs" in res.err and "tuning" not in res.err.split(":")[0]
    assert {p.name for p in tmp_path.iterdir()} <= {"logs"}


def test_demo_refuses_unwritable_workdir(cli, tmp_path):
    res = cli("demo", "--workdir", f"{UNWRITABLE}/demo")
    assert res.code == UsageError.exit_code, res.err
    assert UNWRITABLE in res.err and "--workdir" in res.err
    assert not os.path.exists(f"{UNWRITABLE}/demo")
