"""The scoring API against a hostile network, run for real (`serve` under uvicorn on 127.0.0.1):
huge request lines are refused in milliseconds, readings are strict numbers, and the OpenAPI
schema declares the key and the error bodies the service really returns."""
from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from ports import free_port
from test_service import ROOT, as_json, clean_env, wait_healthy

KEY = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def api(trained_fleet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api_edges")
    port = free_port()
    log_path = tmp / "serve.log"
    command = [sys.executable, "run_scheduler.py", "--db-url", f"sqlite:///{tmp / 'api.sqlite'}", "--model-dir", str(trained_fleet["settings"].model_dir), "serve", "--port", str(port)]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=clean_env(COMPRESSOR_AD_API_KEY=KEY), stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as client:
            yield {"client": client, "port": port, "log": log_path}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def raw_request(port: int, request: bytes) -> tuple[bytes, float]:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole line was sent
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer, time.perf_counter() - started


def test_a_megabyte_request_line_is_refused_in_milliseconds(api):
    answer, elapsed = raw_request(api["port"], b"GET /" + b"a:" * 500_000 + b"@ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert elapsed < 1.0 and (answer == b"" or answer.startswith(b"HTTP/1.1 400"))
    started = time.perf_counter()
    assert api["client"].get("/health").status_code == 200
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("length", [15_000, 16_000])
def test_a_long_path_without_a_key_is_refused_fast_and_logged_clipped(api, length):
    answer, elapsed = raw_request(api["port"], b"GET /" + b"u:p" * (length // 3) + b"@x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 400 Bad Request") and elapsed < 0.5
    longest = max(len(line) for line in api["log"].read_text(errors="replace").splitlines())
    assert longest < 5_000


def window_body(trained_fleet, value) -> dict:
    bundle = trained_fleet["bundle"]
    windows = as_json(np.ones((1, bundle.window, len(bundle.features)), np.float32), bundle.features)
    windows[0][bundle.features[0]][3] = value
    return {"compressor_id": bundle.compressors[0], "windows": windows}


@pytest.mark.parametrize("value", [True, "1.5", None, [1.0], {"v": 1}])
def test_readings_are_strict_numbers(api, trained_fleet, value):
    response = api["client"].post("/score", json=window_body(trained_fleet, value))
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith(f"windows[0].{trained_fleet['bundle'].features[0]}[3]:") and body["errors"]


def test_integers_are_numbers(api, trained_fleet):
    assert api["client"].post("/score", json=window_body(trained_fleet, 2)).status_code == 200


def test_openapi_declares_the_key_and_the_real_error_bodies(api, trained_fleet):
    client = api["client"]
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    assert schema["security"] == [{"ApiKey": []}]
    responses = schema["paths"]["/score"]["post"]["responses"]
    assert set(responses) >= {"200", "401", "404", "413", "422"}

    def body_schema(code: str) -> dict:
        ref = responses[code]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        return schema["components"]["schemas"][ref]

    observed = {
        "401": httpx.post(f"{client.base_url}/score", json={}).json(),
        "404": client.post("/score", json={**window_body(trained_fleet, 1.0), "compressor_id": "NOPE"}).json(),
        "413": client.post("/score", content=b"x" * (17 * 1024 * 1024), headers={"Content-Type": "application/json"}).json(),
        "422": client.post("/score", json={"compressor_id": "C01"}).json(),
    }
    for code, body in observed.items():
        declared = body_schema(code)
        assert set(body) == set(declared["properties"]) and set(declared["required"]) <= set(body), code
    request_schema = schema["components"]["schemas"]["ScoreRequest"]["properties"]["compressor_id"]
    assert request_schema["examples"] == [trained_fleet["bundle"].compressors[0]]
