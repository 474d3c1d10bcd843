"""API fuzzing: schemathesis generates requests from the served OpenAPI document and sends
them, authenticated, to a live server: valid ones (positive) and invalid ones (negative).
Every operation gets a bounded number of examples per mode (``FNHOST_FUZZ_EXAMPLES``, 15 by
default) and the same ones every run, so the run stays within a couple of minutes and a
failure reproduces. No answer may be a 5xx, and every answer must match the schema and
content type the document gives it.

(Operations are looped over inside one test, not parametrized with schemathesis' pytest
plugin: its lazy fixture loader does not run on this pytest.)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.live import LiveServer

EXAMPLES = int(os.environ.get("FNHOST_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, str]]:
    live = LiveServer(tmp_path_factory.mktemp("fuzz")).start()
    creds = live.create_client("fuzz")  # an admin: every operation is open to it
    token = httpx.post(
        creds["token_url"],
        data={"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]},
    ).json()["access_token"]
    yield live, str(token), creds["project"]
    live.stop()


# every typed body is fuzzed, so this is the suite's longest test: on a loaded 2-core box it
# outlasts the default timeout, and a timeout inside hypothesis reads as a flaky failure
@pytest.mark.timeout(900)
def test_api_answers_within_its_schema_and_never_5xx(fuzzed: tuple[LiveServer, str, str]) -> None:
    live, token, project = fuzzed
    schema = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20  # the document describes the API (not an empty shell)
    failures: list[str] = []
    statuses: Counter[int] = Counter()  # answers by class (2 for 2xx, 4 for 4xx)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def run(case: Any) -> None:
                if case.path_parameters and "project" in case.path_parameters:
                    # a made-up project only ever meets "no such project": fuzz the real one
                    case.path_parameters["project"] = project
                response = case.call_and_validate(
                    base_url=live.base_url,
                    headers={"Authorization": f"Bearer {token}"},
                    checks=CHECKS,
                    timeout=30,
                )
                statuses[response.status_code // 100] += 1

            try:
                run()
            except Unsatisfiable:
                # nothing in this operation's schema can be violated (an untyped body, a
                # free-form string): there is no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # one failure must not hide the others
                failures.append(f"{operation.label} [{mode.value}]: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    # the run exercised both sides: requests served and requests refused
    assert statuses[2] > len(operations) and statuses[4] > len(operations), statuses
    if os.environ.get("FNHOST_FUZZ_REPORT"):
        print(f"fuzz: {sum(statuses.values())} requests over {len(operations)} operations: {dict(statuses)}")
    assert httpx.get(f"{live.base_url}/health").status_code == 200
