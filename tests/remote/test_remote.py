"""Cross-compiled MobileNet on emulated aarch64 devices over TVM RPC: validate, bench, tune, faults.

These run the real aarch64 TVM runtime under QEMU (scripts/arm-device); timings under emulation
mean nothing for speed, numbers and plumbing are what is checked.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tvm_pipeline.errors import RemoteError

from emulated import KEY, cli_process, free_ports, say, start_devices, wait_for


@pytest.fixture(scope="module")
def farm(request, tmp_path_factory):
    """Two emulated aarch64 devices registered under key rpi4 with one local tracker."""
    devices = start_devices(request.config, tmp_path_factory, 2, with_tracker=True)
    yield devices
    devices.stop(request.config)


@pytest.fixture(scope="module")
def device(request, tmp_path_factory):
    """One emulated aarch64 device reached directly (--rpc HOST:PORT), no tracker."""
    devices = start_devices(request.config, tmp_path_factory, 1, with_tracker=False)
    yield devices
    devices.stop(request.config)


def _sacrificed(request, tmp_path_factory, with_tracker: bool):
    devices = start_devices(request.config, tmp_path_factory, 1, with_tracker=with_tracker)
    yield devices
    try:
        devices.signal(devices.ports[0], signal.SIGCONT)
    except (OSError, StopIteration):
        pass
    devices.stop(request.config)


@pytest.fixture
def victim(request, tmp_path_factory):
    """A fresh direct device for a test that kills or freezes it."""
    yield from _sacrificed(request, tmp_path_factory, with_tracker=False)


@pytest.fixture
def victim_farm(request, tmp_path_factory):
    """A fresh device behind its own tracker, for a test that kills it."""
    yield from _sacrificed(request, tmp_path_factory, with_tracker=True)


@pytest.fixture(scope="module")
def rpi4_artifact(small_v2, device, tmp_path_factory):
    """V2 0.25-96 cross-compiled for rpi4 and validated on an emulated device by compile itself."""
    from tvm_pipeline.cli.main import main

    out = tmp_path_factory.mktemp("rpi4") / "v2-rpi4.tvm"
    assert main(["compile", str(small_v2), "--target", "rpi4", "-o", str(out),
                 "--rpc", device.rpc()]) == 0
    return out


def test_compile_validates_on_the_device_before_writing(rpi4_artifact, request):
    meta = json.loads((rpi4_artifact / "metadata.json").read_text())
    assert meta["target"]["name"] == "rpi4" and meta["target"]["arch"] == "aarch64"
    report = meta["validation"]
    assert report["passed"], report
    for out in report["outputs"]:
        assert out["max_abs"] <= 1e-4 and out["top1_agreement"] == 1.0
        say(request.config, f"compile --target rpi4 --rpc: '{out['name']}' on the device vs ONNX "
                            f"Runtime: max abs {out['max_abs']:.2e}, top-1 agreement "
                            f"{out['top1_agreement']:.0%}")


def test_int8_model_compiles_for_rpi5_and_validates_on_the_device(cli, device, tmp_path, request):
    """A quantized (QDQ) model cross-compiled with integer kernels for the A76 board, validated on
    the emulated device in quantization steps against ONNX Runtime's op-by-op run here."""
    import onnx

    from tests.conftest import qdq_convnet_model

    model = tmp_path / "convnet.qdq.onnx"
    onnx.save(qdq_convnet_model(), model)
    out = tmp_path / "convnet-rpi5.tvm"
    res = cli("compile", model, "--target", "rpi5", "-o", out, "--rpc", device.rpc(), "--json")
    assert res.code == 0, res.err
    meta = json.loads(res.out)
    assert meta["integer"]["integer_layers"] == 3 and meta["integer"]["float_layers"] == 0
    report = meta["validation"]
    assert report["passed"] and "op by op" in report["reference"]
    (logits,) = report["outputs"]
    assert logits["max_steps"] <= 1.0 and logits["within_steps"] >= 0.999
    say(request.config, f"INT8 on the emulated rpi5: {logits['within_steps']:.1%} of the logits "
                        f"within one step, at most {logits['max_steps']:g} step(s)")


def test_int8_mobilenet_with_sdot_validates_on_the_device(cli, device, small_v2_int8, tmp_path,
                                                         request):
    """ONNX Runtime's INT8 MobileNet V2 cross-compiled for the A76 board: its convolutions multiply
    with ``sdot`` (s8 activations, packed weights) and the module passes validation on the
    emulated device (decided layer by layer when the seeded network amplifies a rounding tie)."""
    import shutil
    import subprocess

    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64 binutils are not installed (scripts/setup.sh test installs them)")
    out = tmp_path / "v2-int8-rpi5.tvm"
    res = cli("compile", small_v2_int8, "--target", "rpi5", "-o", out, "--rpc", device.rpc(),
              "--json", "--untuned")
    assert res.code == 0, res.err
    assert json.loads(res.out)["validation"]["passed"]
    code = subprocess.run([objdump, "-d", str(out / "model.so")], capture_output=True, text=True,
                          check=True).stdout
    sdots = sum(1 for line in code.splitlines() if "\tsdot\t" in line)
    assert sdots >= 10
    say(request.config, f"INT8 MobileNet V2 0.25-96 on the emulated rpi5: validated, {sdots} sdot")


def test_layer_check_runs_on_the_device(device, tmp_path):
    """The layer by layer check of a quantized model on the emulated rpi5: the module it builds
    returns every quantized tensor (a tuple of outputs), read back from the device one by one."""
    import onnx

    from tests.conftest import qdq_convnet_model
    from tvm_pipeline.api import CompileOptions, compile as compile_model
    from tvm_pipeline.frontend.load import load
    from tvm_pipeline.observe.layerwise import check_layers
    from tvm_pipeline.run.remote import RemoteOptions
    from tvm_pipeline.run.validate import ValidateOptions, make_feeds
    from tvm_pipeline.target.spec import resolve_target

    model = tmp_path / "convnet.qdq.onnx"
    onnx.save(qdq_convnet_model(), model)
    loaded = load(model)
    report = check_layers(loaded, resolve_target("rpi5"), lambda p, out: compile_model(
        p, out, CompileOptions(validate=False)), make_feeds(loaded.inputs, ValidateOptions(samples=2)),
        remote=RemoteOptions(rpc=device.rpc()))
    assert report.passed and len(report.layers) == 5


def test_validate_over_rpc_matches_onnx_runtime(cli, rpi4_artifact, device):
    res = cli("validate", rpi4_artifact, "--rpc", device.rpc(), "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["passed"]
    (logits,) = report["outputs"]
    assert logits["max_abs"] <= 1e-4 and logits["top1_agreement"] == 1.0
    assert f"running on RPC server {device.rpc()}" in res.err


def test_profile_over_rpc_times_every_kernel_on_the_device(cli, rpi4_artifact, device, small_v2):
    from tvm_pipeline.frontend.load import load

    assert (rpi4_artifact / "kernels.so").is_file()      # compile wrote the kernels alone
    res = cli("profile", rpi4_artifact, "--rpc", device.rpc(), "--runs", "3", "--warmup", "1",
              "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert device.rpc() in data["where"] and "one by one on the device" in data["method"]
    assert data["kernels"] and all(k["ms"] > 0 for k in data["kernels"])
    mapped = [n["name"] for k in data["kernels"] for n in k["nodes"]]
    convs = [n.name for n in load(small_v2).model.graph.node if n.op_type == "Conv"]
    assert sorted(mapped.count(c) for c in convs) == [1] * len(convs)
    assert data["model_ms"] > 0 and data["ort_ms"] is None


def test_validate_and_bench_through_the_tracker(cli, rpi4_artifact, farm):
    res = cli("validate", rpi4_artifact, "--tracker", farm.tracker)   # key: the target's rpc_key
    assert res.code == 0, res.err
    assert "PASSED" in res.out
    res = cli("bench", rpi4_artifact, "--tracker", farm.tracker, "--key", KEY,
              "--runs", 3, "--warmup", 1, "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["runs"] == 3 and data["tvm_median_ms"] > 0
    assert data["ort_median_ms"] is None and data["ratio"] is None   # ORT is not on the device
    assert "device-side" in res.err


def test_wrong_key_lists_the_keys_the_tracker_has(cli, rpi4_artifact, farm):
    res = cli("validate", rpi4_artifact, "--tracker", farm.tracker, "--key", "pixel-9")
    assert res.code == RemoteError.exit_code
    assert "No device is registered under key 'pixel-9'" in res.err and f"{KEY} (" in res.err


def test_rpc_status_lists_devices_per_key(cli, farm):
    res = cli("rpc", "status", "--tracker", farm.tracker, "--json")
    assert res.code == 0, res.err
    keys = json.loads(res.out)["keys"]
    assert sorted(keys[KEY]["devices"]) == sorted(farm.rpc(i) for i in range(2))
    text = cli("rpc", "status", "--tracker", farm.tracker).out
    assert f"{KEY}  2 device(s)" in text


def test_unreachable_device_fails_fast(cli, rpi4_artifact):
    port = free_ports(1)
    start = time.monotonic()
    res = cli("validate", rpi4_artifact, "--rpc", f"127.0.0.1:{port}")
    assert res.code == RemoteError.exit_code and "Cannot reach RPC server" in res.err
    assert time.monotonic() - start < 30
    res = cli("rpc", "status", "--tracker", f"127.0.0.1:{port}")
    assert res.code == RemoteError.exit_code and "Cannot reach tracker" in res.err


def test_remote_tuning_measures_on_every_device_of_the_key(cli, small_v2, farm, tmp_path,
                                                            request):
    """A 4-trial MetaSchedule run through the tracker: the two devices measure at once. (The first
    task, the input's layout transpose, has a single candidate; the next batch has three.)"""
    loads_before = [farm.log(p).count("tvm_tmp_mod.so") for p in farm.ports]
    res = cli("tune", small_v2, "--target", "rpi4", "--tracker", farm.tracker, "--key", KEY,
              "--trials", 4, "--trials-per-iter", 4, "--logs", tmp_path, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["trials"] >= 4
    assert result["records_after"] - result["records_before"] == result["trials"]
    records = [json.loads(line) for line in
               (tmp_path / "rpi4" / "database_tuning_record.json").read_text().splitlines()]
    secs = [float(s) for rec in records for s in rec[1][1]]
    assert secs and all(0 < s < 1.0 for s in secs), secs       # measured, not failed (1e10)
    loads_after = [farm.log(p).count("tvm_tmp_mod.so") for p in farm.ports]
    assert all(a > b for a, b in zip(loads_after, loads_before)), (loads_before, loads_after)
    say(request.config, f"tune --tracker: {result['trials']} trials measured, candidates per "
                        f"device: {[a - b for a, b in zip(loads_after, loads_before)]}, run times "
                        f"{', '.join(f'{1e3 * s:.3f} ms' for s in secs)}")


def test_device_killed_during_validate_gives_a_clear_error(rpi4_artifact, victim):
    port = victim.ports[0]
    proc = cli_process("validate", rpi4_artifact, "--rpc", victim.rpc(), "--samples", 500)
    wait_for(lambda: "load_module" in victim.log(port), 120, "the model to load")
    victim.signal(port, signal.SIGKILL)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == RemoteError.exit_code, err
    assert "closed the connection" in err and "Traceback" not in err
    assert time.monotonic() - killed < 30


def test_frozen_device_times_out(rpi4_artifact, victim):
    port = victim.ports[0]
    proc = cli_process("validate", rpi4_artifact, "--rpc", victim.rpc(), "--samples", 500,
                       "--timeout", 5)
    wait_for(lambda: "load_module" in victim.log(port), 120, "the model to load")
    victim.signal(port, signal.SIGSTOP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == RemoteError.exit_code, err
    assert "Timed out after 5 s" in err and "Traceback" not in err


def test_device_lost_during_tuning_keeps_measured_records(small_v2, victim_farm, tmp_path):
    db = tmp_path / "rpi4" / "database_tuning_record.json"
    proc = cli_process("tune", small_v2, "--target", "rpi4", "--tracker", victim_farm.tracker,
                       "--trials", 200, "--trials-per-iter", 2, "--timeout", 20,
                       "--logs", tmp_path)
    wait_for(lambda: db.exists() and len(db.read_text().splitlines()) >= 2, 300,
             "the first measured batch")
    victim_farm.signal(victim_farm.ports[0], signal.SIGKILL)
    kept = len(db.read_text().splitlines())
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == RemoteError.exit_code, err
    assert "stopped answering" in err and "re-run the same tune command" in err
    lines = db.read_text().splitlines()
    assert len(lines) >= kept
    assert all(float(s) < 1.0 for line in lines for s in json.loads(line)[1][1])  # no dead batch


def test_gpu_artifact_opens_its_device_on_the_server(cli, small_v2, device, tmp_path):
    """A Mali (OpenCL) artifact over RPC opens opencl(0) on the device; the emulated board runs
    PyPI's aarch64 wheel, which has no OpenCL runtime, and the error says what the device needs
    (a real board with a Mali GPU and a TVM runtime built with OpenCL runs it)."""
    out = tmp_path / "mali.tvm"
    res = cli("compile", small_v2, "--target", "mali-linux", "-o", out, "--no-numerics")
    assert res.code == 0, res.err
    res = cli("validate", out, "--rpc", device.rpc())
    assert res.code == RemoteError.exit_code
    assert "has no opencl device" in res.err
    assert "USE_OPENCL=ON" in res.err and "wheels have no OpenCL runtime" in res.err
