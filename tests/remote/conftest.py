"""Fixtures: emulated aarch64 devices for the remote tests (see emulated.py)."""

from __future__ import annotations

import signal

import pytest

from emulated import start_devices


@pytest.fixture(scope="session")
def farm(request, tmp_path_factory):
    """Two emulated aarch64 devices registered under key rpi4 with one local tracker."""
    devices = start_devices(request.config, tmp_path_factory, 2, with_tracker=True)
    yield devices
    devices.stop(request.config)


@pytest.fixture(scope="session")
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
