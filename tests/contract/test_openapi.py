"""Schemathesis over the whole OpenAPI of a real `mm api` process: every check, the examples, coverage and
fuzzing phases (the stateful one is tests/contract/test_stateful.py).

The only failures tolerated are the documented refusals listed in `refusals`: a 503 PROJECTION_LAGGING when
an X-Min-Position is not reached in time, and business refusals of schema-valid input (unknown ids,
states, permissions), never a VALIDATION_ERROR for input the schema calls valid.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings

from tests.contract.fuzzing import REPLACED_CHECKS
from tests.contract.refusals import ONLY_DOCUMENTED_REFUSALS

schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=int(os.environ.get("MM_CONTRACT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case: schemathesis.Case, api: dict[str, Any]) -> None:
    case.call_and_validate(base_url=api["base"], excluded_checks=REPLACED_CHECKS,
                           additional_checks=ONLY_DOCUMENTED_REFUSALS)


def test_the_generated_requests_were_authenticated(api: dict[str, Any]) -> None:
    """Runs after the schemathesis test on the same server: most of its traffic got past authentication,
    so the operations were exercised, not just refused at the door (schemathesis also sends some
    requests without or with broken credentials on purpose, which rightly get 401)."""
    text = httpx.get(api["base"] + "/metrics").text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mm_http_requests_total{") and 'route="/v1/' in line:
            status = line.split('status="')[1].split('"')[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    total = sum(counts.values())
    assert total > 100, counts
    assert counts.get("401", 0) < total * 0.5, counts
    assert sum(v for k, v in counts.items() if k.startswith("2")) >= 50, counts
