"""`gcpcall-operator emulator` as a process: flags, the ready line, SIGTERM.

Why: the demo and users run the emulator standalone; whatever starts it (a script, a
Kubernetes pod) reads the bound ports from the first stdout line and stops it with
SIGTERM, and the fault and host-map flags must take effect without the admin API.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)

from gcpcall.emulator.server import parse_args

LAUNCH = "import sys; from gcpcall.emulator.server import main; sys.exit(main(sys.argv[1:]))"


def test_flags_are_parsed() -> None:
    args = parse_args(
        [
            "--grpc-port=0",
            "--seed=7",
            "--fault=GetJob=UNAVAILABLE:0.5",
            "--fault=*=13:0.1:0.25",
            "--host-map=compute.googleapis.com=http://127.0.0.1:1,a.example=https://b.example",
            "--host-map=c.example=http://127.0.0.1:2",
        ]
    )

    assert (args.grpc_port, args.http_port, args.seed) == (0, 8124, 7)
    assert [(m, c.name, r, lat) for m, c, r, lat in args.faults] == [
        ("GetJob", "UNAVAILABLE", 0.5, 0.0),
        ("*", "INTERNAL", 0.1, 0.25),
    ]
    assert args.hosts == {
        "compute.googleapis.com": "http://127.0.0.1:1",
        "a.example": "https://b.example",
        "c.example": "http://127.0.0.1:2",
    }


@pytest.mark.parametrize(
    "flag", ["--fault=GetJob", "--fault=GetJob=WHAT:0.5", "--host-map=a.example=ftp://x"]
)
def test_bad_flags_are_refused(flag: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_args([flag])
    assert stopped.value.code == 2


@pytest.fixture
def process() -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "--grpc-port=0",
            "--http-port=0",
            "--fault=GetJob=UNAVAILABLE:1.0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 60)
    assert readable, "the emulator printed no ready line"
    ready = json.loads(proc.stdout.readline())
    try:
        yield proc, ready
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_standalone_emulator_serves_and_stops_on_sigterm(
    process: tuple[subprocess.Popen[str], dict[str, int]],
) -> None:
    proc, ready = process
    assert set(ready) == {"grpc_port", "http_port"}
    health_url = f"http://127.0.0.1:{ready['http_port']}/emulator/v1/health"
    with urllib.request.urlopen(health_url, timeout=30) as response:
        assert json.loads(response.read()) == ready
    channel = grpc.insecure_channel(f"127.0.0.1:{ready['grpc_port']}")
    client = scheduler_v1.CloudSchedulerClient(
        transport=CloudSchedulerGrpcTransport(channel=channel)
    )
    try:
        with pytest.raises(exceptions.ServiceUnavailable):
            client.get_job(name="projects/p/locations/l/jobs/j", retry=None)
        with pytest.raises(exceptions.NotFound):  # the fault is for GetJob only
            client.pause_job(name="projects/p/locations/l/jobs/j", retry=None)
    finally:
        channel.close()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
