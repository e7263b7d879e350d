"""A body sent to a JSON operation as another type is a 415 in every service, with `Accept` naming the type taken
(kernel/routes.py `refuse_other_media`): every operation of the merged OpenAPI with a JSON body is tried, so a new
route is covered without a line here; in process, and over TCP (`served`)."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import pytest_asyncio

from gatherly.app.testing import Person, RunningGatherly, sign_up

# The operations come from the merged /api/openapi.json, which only the in-process gateway serves.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.in_process_only]

OTHER_TYPES = ("text/plain", "application/xml", "application/x-www-form-urlencoded", None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def person(gatherly: RunningGatherly) -> Person:
    return await sign_up(gatherly, display_name="Mia")


async def test_a_json_operations_body_sent_as_another_type_is_a_415_in_every_service(
    gatherly: RunningGatherly, person: Person
) -> None:
    await _every_json_body_sent_as_another_type_is_a_415(gatherly, person)


async def test_a_json_operations_body_sent_as_another_type_is_a_415_over_http(served: RunningGatherly) -> None:
    """Through the server `gatherly up` runs: its parser hands the Content-Type (or none) on as it came."""
    await _every_json_body_sent_as_another_type_is_a_415(served, await sign_up(served, display_name="Mia"))


async def _every_json_body_sent_as_another_type_is_a_415(gatherly: RunningGatherly, person: Person) -> None:
    document = (await gatherly.client.get("/api/openapi.json")).json()
    tried, wrong = 0, []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                continue
            assert "415" in operation["responses"], (method, path)
            url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            for content_type in OTHER_TYPES:
                headers = {**person.auth, **({"content-type": content_type} if content_type else {})}
                response = await gatherly.client.request(method, url, content=json.dumps({}), headers=headers)
                tried += 1
                if (response.status_code, response.headers.get("accept")) != (
                    415,
                    "application/json",
                ) or response.headers["content-type"] != "application/problem+json":
                    wrong.append(f"{method.upper()} {path} as {content_type}: {response.status_code}")
    assert tried > 100
    assert not wrong, "\n".join(wrong)
