"""The scoring API, run for real: `run_scheduler.py serve` in a subprocess (and uvicorn in a thread
for app options), called over loopback HTTP with httpx."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from core.errors import PipelineError
from service.auth import key_matches, load_api_key, presented_key
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]
KEY = secrets.token_urlsafe(24)
CID = "C01"
MAX_WINDOWS = 8
MAX_BODY = 1_000_000


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPRESSOR_AD_", "MLFLOW_"))}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 300.0, **client) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before answering")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5, **client).status_code in (200, 503):
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def server(trained_fleet, tmp_path_factory):
    """`serve` with the key in a file (as a Docker secret would be), tight limits, SQLite for health."""
    tmp = tmp_path_factory.mktemp("api")
    key_file = tmp / "api_key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    port = free_port()
    log_path = tmp / "serve.log"
    command = [
        sys.executable, "run_scheduler.py", "--db-url", f"sqlite:///{tmp / 'api.sqlite'}",
        "--model-dir", str(trained_fleet["settings"].model_dir),
        "serve", "--port", str(port), "--max-windows", str(MAX_WINDOWS), "--max-body-bytes", str(MAX_BODY),
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=clean_env(COMPRESSOR_AD_API_KEY_FILE=str(key_file)), stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        with httpx.Client(base_url=url, timeout=60) as client:
            yield {"client": client, "proc": proc, "log": log_path}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log_path.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def raw_windows(trained_fleet):
    """Three windows of C01 after the training range, (3, window, features) in the model's order."""
    bundle = trained_fleet["bundle"]
    tel = trained_fleet["fleet"].telemetry
    rows = tel[(tel["compressor_id"] == CID) & (tel["timestamp"] > trained_fleet["train_end"])].iloc[: 3 * bundle.window]
    return rows[list(bundle.features)].to_numpy(np.float32).reshape(3, bundle.window, len(bundle.features))


def as_json(windows: np.ndarray, features) -> list[dict]:
    return [{name: w[:, i].astype(float).tolist() for i, name in enumerate(features)} for w in windows]


def auth(key: str = KEY) -> dict[str, str]:
    return {"X-API-Key": key}


def metric_value(text: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_score_matches_the_detector_and_flags_a_distorted_window(server, trained_fleet, raw_windows):
    bundle = trained_fleet["bundle"]
    features = bundle.features
    distorted = raw_windows[2].copy()
    column = features.index("filter_dp")
    distorted[:, column] += 50 * (raw_windows[:, :, column].std() + 1.0)
    windows = np.stack([raw_windows[0], raw_windows[1], distorted])

    response = server["client"].post("/score", json={"compressor_id": CID, "windows": as_json(windows, features)}, headers=auth())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["compressor_id"] == CID and body["model_version"] == bundle.version
    assert body["threshold"] == pytest.approx(bundle.thresholds[CID])
    scores, errors, _ = bundle.detector.anomaly_score_details(windows, CID)
    assert len(body["results"]) == 3
    for i, result in enumerate(body["results"]):
        assert result["score"] == pytest.approx(float(scores[i]), rel=1e-3, abs=1e-5)
        assert result["is_anomaly"] == (result["score"] > result["threshold"])
        assert list(result["feature_errors"]) == list(features)
        np.testing.assert_allclose(list(result["feature_errors"].values()), errors[i], rtol=1e-3, atol=1e-6)
        assert len(result["top_features"]) == 3 and set(result["top_features"]) <= set(features)
        assert result["model_version"] == bundle.version
    assert body["results"][2]["is_anomaly"] is True
    assert body["results"][2]["top_features"][0] == "filter_dp"
    assert body["results"][2]["score"] > max(body["results"][0]["score"], body["results"][1]["score"])


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda body: body["windows"][1]["filter_dp"].pop(), "windows[1].filter_dp"),
        (lambda body: body["windows"][0].update(vibraton=body["windows"][0].pop("vibration")), "windows[0].vibration"),
        (lambda body: body["windows"][0]["flow"].__setitem__(4, "high"), "windows[0].flow[4]"),
        (lambda body: body.pop("compressor_id"), "compressor_id"),
        (lambda body: body.update(windows=[]), "windows"),
    ],
    ids=["short-signal", "misspelt-signal", "not-a-number", "no-compressor", "no-windows"],
)
def test_bad_payload_is_422_naming_the_field(server, trained_fleet, raw_windows, change, field):
    body = {"compressor_id": CID, "windows": as_json(raw_windows[:2], trained_fleet["bundle"].features)}
    change(body)
    response = server["client"].post("/score", json=body, headers=auth())
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert field in [e["field"] for e in response.json()["errors"]]


def test_non_finite_values_and_broken_json_are_422(server, trained_fleet, raw_windows):
    text = httpx.Request("POST", "http://127.0.0.1/", json={"compressor_id": CID, "windows": as_json(raw_windows[:1], trained_fleet["bundle"].features)}).content
    first_value = text.index(b"[", text.index(b"filter_dp")) + 1
    nan_body = text[:first_value] + b"NaN" + text[text.index(b",", first_value) :]
    headers = {**auth(), "Content-Type": "application/json"}
    response = server["client"].post("/score", content=nan_body, headers=headers)
    assert response.status_code == 422 and response.json()["detail"].startswith("windows[0].filter_dp[0]:")
    response = server["client"].post("/score", content=text[:-5], headers=headers)
    assert response.status_code == 422 and "JSON" in response.json()["detail"]


def test_missing_or_wrong_key_is_401_everywhere_but_health(server, trained_fleet, raw_windows):
    client = server["client"]
    body = {"compressor_id": CID, "windows": as_json(raw_windows[:1], trained_fleet["bundle"].features)}
    assert client.post("/score", json=body).status_code == 401
    assert client.post("/score", json=body, headers=auth("x" * len(KEY))).status_code == 401
    assert client.post("/score", json=body, headers=auth(KEY[:-1])).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/no-such-route").status_code == 401
    assert client.get("/health").status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/openapi.json", headers=auth()).json()["paths"].keys() == {"/score"}
    assert KEY not in server["log"].read_text(errors="replace")


def test_unknown_compressor_is_404(server, trained_fleet, raw_windows):
    body = {"compressor_id": "C99", "windows": as_json(raw_windows[:1], trained_fleet["bundle"].features)}
    response = server["client"].post("/score", json=body, headers=auth())
    assert response.status_code == 404
    assert "C99" in response.json()["detail"]


def test_oversized_requests_are_413(server, trained_fleet, raw_windows):
    client = server["client"]
    one = as_json(raw_windows[:1], trained_fleet["bundle"].features)
    response = client.post("/score", json={"compressor_id": CID, "windows": one * (MAX_WINDOWS + 1)}, headers=auth())
    assert response.status_code == 413 and f"at most {MAX_WINDOWS}" in response.json()["detail"]
    assert client.post("/score", json={"compressor_id": CID, "windows": one * MAX_WINDOWS}, headers=auth()).status_code == 200

    headers = {**auth(), "Content-Type": "application/json"}
    response = client.post("/score", content=b" " * (MAX_BODY + 1), headers=headers)
    assert response.status_code == 413 and str(MAX_BODY) in response.json()["detail"]

    def chunked():  # no Content-Length: the limit is enforced while reading
        for _ in range(MAX_BODY // 100_000 + 2):
            yield b" " * 100_000

    response = client.post("/score", content=chunked(), headers=headers)
    assert response.status_code == 413
    assert client.get("/health").status_code == 200


def test_health_reports_the_model_and_the_database(server, trained_fleet):
    response = server["client"].get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "status": "ok",
        "model_loaded": True,
        "model_version": trained_fleet["bundle"].version,
        "detector": "lstm_ae",
        "compressors": len(trained_fleet["bundle"].compressors),
        "database": "reachable",
    }


def test_metrics_count_requests_latency_and_errors(server, trained_fleet, raw_windows):
    client = server["client"]
    before = client.get("/metrics", headers=auth()).text
    body = {"compressor_id": CID, "windows": as_json(raw_windows[:2], trained_fleet["bundle"].features)}
    assert client.post("/score", json=body, headers=auth()).status_code == 200
    assert client.post("/score", json={"compressor_id": "C99", "windows": body["windows"]}, headers=auth()).status_code == 404
    after = client.get("/metrics", headers=auth()).text

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("compressor_ad_api_requests_total", method="POST", route="/score", status="200") == 1
    assert delta("compressor_ad_api_requests_total", method="POST", route="/score", status="404") == 1
    assert delta("compressor_ad_api_errors_total", route="/score", status="404") == 1
    assert delta("compressor_ad_api_request_duration_seconds_count", route="/score") == 2
    assert delta("compressor_ad_api_windows_scored_total", compressor_id=CID) == 2
    assert metric_value(after, "compressor_ad_api_model_info", version=trained_fleet["bundle"].version) == 1


@pytest.mark.parametrize("key_env", [{}, {"COMPRESSOR_AD_API_KEY": "short"}], ids=["no-key", "short-key"])
def test_serve_refuses_to_start_without_a_usable_key(trained_fleet, tmp_path, key_env):
    command = [sys.executable, "run_scheduler.py", "--db-url", f"sqlite:///{tmp_path / 'x.sqlite'}", "--model-dir", str(trained_fleet["settings"].model_dir), "serve", "--port", str(free_port())]
    done = subprocess.run(command, cwd=ROOT, env=clean_env(**key_env), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "API key" in lines[0]


def test_api_key_loading(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-the-file-0123456789\n", encoding="utf-8")
    assert load_api_key({"COMPRESSOR_AD_API_KEY": "from-the-variable-0123", "COMPRESSOR_AD_API_KEY_FILE": str(key_file)}) == "from-the-file-0123456789"
    assert load_api_key({"COMPRESSOR_AD_API_KEY": "from-the-variable-0123"}) == "from-the-variable-0123"
    assert load_api_key({}) is None
    with pytest.raises(PipelineError, match="cannot read the API key file"):
        load_api_key({"COMPRESSOR_AD_API_KEY_FILE": str(tmp_path / "missing")})
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert key_matches("same-key", "same-key") and not key_matches(None, "same-key") and not key_matches("other", "same-key")


# ---------------------------------------------------------------- in-thread servers for app options
@pytest.fixture(scope="module")
def loaded_bundle(trained_fleet):
    from models.artifacts import load_for_settings

    return load_for_settings(trained_fleet["settings"])


@contextlib.contextmanager
def running(app, scheme: str = "http", **config):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def test_insecure_mode_serves_without_a_key(trained_fleet, loaded_bundle, raw_windows, tmp_path):
    from service.app import create_app

    app = create_app(trained_fleet["settings"].replace(db_url=f"sqlite:///{tmp_path / 'h.sqlite'}"), loaded_bundle, api_key=None)
    with running(app) as url:
        body = {"compressor_id": CID, "windows": as_json(raw_windows[:1], loaded_bundle.features)}
        assert httpx.post(f"{url}/score", json=body, timeout=30).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 200


def test_health_is_503_when_the_database_is_unreachable(trained_fleet, loaded_bundle):
    from db.engine import make_engine
    from service.app import create_app

    engine = make_engine("postgresql+psycopg://postgres:Unseen-Pw-42@127.0.0.1:1/test?connect_timeout=3")
    app = create_app(trained_fleet["settings"], loaded_bundle, api_key=KEY, engine=engine)
    with running(app) as url:
        response = httpx.get(f"{url}/health", timeout=30)
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable" and response.json()["status"] == "degraded"
    assert "Unseen-Pw-42" not in response.text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is needed to make a test certificate")
def test_tls(trained_fleet, loaded_bundle, tmp_path):
    from service.app import create_app

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    app = create_app(trained_fleet["settings"].replace(db_url=f"sqlite:///{tmp_path / 'h.sqlite'}"), loaded_bundle, api_key=KEY)
    with running(app, scheme="https", ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{url}/health", verify=trusted, timeout=30).json()["status"] == "ok"
        assert httpx.get(f"{url}/metrics", headers=auth(), verify=trusted, timeout=30).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=30)  # an unknown certificate is refused by default


@pytest.mark.parametrize("value", [1e20, 1e39, 1e300, -1e16])
def test_extreme_readings_are_422_never_a_null_score(trained_fleet, loaded_bundle, raw_windows, tmp_path, value):
    from service.app import create_app

    app = create_app(trained_fleet["settings"].replace(db_url=f"sqlite:///{tmp_path / 'x.sqlite'}"), loaded_bundle, api_key=None)
    body = {"compressor_id": CID, "windows": as_json(raw_windows[:2], loaded_bundle.features)}
    signal = loaded_bundle.features[1]
    body["windows"][1][signal][7] = value
    with running(app) as url:
        response = httpx.post(f"{url}/score", json=body, timeout=30)
    assert response.status_code == 422
    detail = response.json()["detail"]  # the range is part of the published schema (minimum / maximum)
    assert detail.startswith(f"windows[1].{signal}[7]: Input should be {'greater' if value < 0 else 'less'} than or equal to")
