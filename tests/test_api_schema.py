"""schemathesis against the running scoring API (`serve` under uvicorn on 127.0.0.1): every
response to generated requests, valid and invalid, conforms to the OpenAPI schema the service
publishes (status codes, bodies, content types) and none is a server error."""
from __future__ import annotations

import signal
from collections import Counter
import subprocess
import sys

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_api_edges import KEY
from ports import free_port
from test_service import ROOT, clean_env, wait_healthy


@pytest.fixture(scope="module")
def served(trained_fleet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api_schema")
    port = free_port()
    command = [sys.executable, "run_scheduler.py", "--db-url", f"sqlite:///{tmp / 'api.sqlite'}", "--model-dir", str(trained_fleet["settings"].model_dir), "serve", "--port", str(port)]
    with (tmp / "serve.log").open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=clean_env(COMPRESSOR_AD_API_KEY=KEY), stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_url(f"{served}/openapi.json", headers={"X-API-Key": KEY})  # the schema is behind the key too


def test_responses_conform_to_the_published_schema(api_schema, trained_fleet):
    """Every operation, 40 generated requests each (schemathesis' pytest plugin does not run under
    this pytest, so the operations' strategies are driven by hypothesis directly)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert "/score" in {op.path for op in operations}
    seen: Counter = Counter()
    compressor = trained_fleet["bundle"].compressors[0]
    for operation in operations:

        @given(case=operation.as_strategy(), known=st.booleans())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case, known):
            if known and isinstance(case.body, dict) and "compressor_id" in case.body:
                case.body["compressor_id"] = compressor  # the schema's example id: the request reaches scoring
            response = case.call_and_validate(headers={"X-API-Key": KEY}, timeout=30)
            seen[(operation.path, response.status_code)] += 1

        conforms()
    assert seen[("/score", 200)] > 0, f"no generated request reached scoring: {dict(seen)}"
