"""An id in a path that names nothing is a 404 in every service, whether it is an unknown UUID or not a UUID at all:
a path names a resource (and the groups' `{group}` takes a slug there), so a malformed one is a resource that does not
exist, not invalid input. Every operation of the merged OpenAPI with a path parameter is tried, so a new route is
covered without a line here; in process, and over TCP through the server `gatherly up` runs (`served`), where the
server, not the client's transport, decodes the path's escapes."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import pytest_asyncio

from gatherly.app.testing import Person, RunningGatherly, sign_up

# The operations come from the merged /api/openapi.json, which only the in-process gateway serves (the stack's nginx
# routes each prefix to its service and has no merged document).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.in_process_only]

NOT_IDS = ("not-a-uuid", "8c2e1f0e6b0a", "%20", "x" * 300, str(uuid.uuid4()), "a%2Fb", "%25", "%E2%82%AC", "a;b", "%3B")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def person(gatherly: RunningGatherly) -> Person:
    return await sign_up(gatherly, display_name="Ida")


def _example_body(operation: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """The documented example of the operation's JSON body (every body has one: test_documents checks it)."""
    media = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if media is None:
        return None
    schema = media["schema"]
    ref = next(option["$ref"] for option in [schema, *schema.get("anyOf", [])] if "$ref" in option)
    return schemas[ref.rsplit("/", 1)[-1]]["examples"][0]


async def test_an_id_that_names_nothing_is_a_404_in_every_service(gatherly: RunningGatherly, person: Person) -> None:
    await _every_id_that_names_nothing_is_a_404(gatherly, person)


async def test_an_id_that_names_nothing_is_a_404_in_every_service_over_http(served: RunningGatherly) -> None:
    await _every_id_that_names_nothing_is_a_404(served, await sign_up(served, display_name="Ida"))


async def _every_id_that_names_nothing_is_a_404(gatherly: RunningGatherly, person: Person) -> None:
    document = (await gatherly.client.get("/api/openapi.json")).json()
    schemas = document["components"]["schemas"]
    tried, wrong = 0, []
    for path, operations in document["paths"].items():
        if "{" not in path:
            continue
        for method, operation in operations.items():
            body = _example_body(operation, schemas)
            for not_an_id in NOT_IDS:
                url = re.sub(r"\{[^}]+\}", not_an_id, path)
                response = await gatherly.client.request(method, url, json=body, headers=person.auth)
                tried += 1
                if response.status_code != 404 or response.headers["content-type"] != "application/problem+json":
                    wrong.append(f"{method.upper()} {path} with {not_an_id[:12]}: {response.status_code}")
    assert tried > 100
    assert not wrong, "\n".join(wrong)
