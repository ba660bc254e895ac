"""The spec explains the API: codes per operation, the bearer scheme, webhooks, Allow, the UI."""

from __future__ import annotations

import httpx
import pytest

from otpservice.errors import OtpError
from otpservice.usecases.events import EVENT_DATA
from otpservice.web.problems import PROBLEM_STATUS, status_of
from tests.support.app import ApiFactory
from tests.support.helpers import api_tokens, assert_problem
from tests.support.spec import DocumentedProblems


def all_subclasses(kind: type[OtpError]) -> list[type[OtpError]]:
    found = []
    for sub in kind.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


def test_every_error_class_has_its_code_and_status_in_the_table() -> None:
    # Abstract bases (ChallengeGone, Refused, ...) name no code of their own.
    for kind in (k for k in all_subclasses(OtpError) if "code" in k.__dict__):
        error = kind.__new__(kind)  # status_of looks at the class only
        assert error.code in PROBLEM_STATUS, kind
        assert PROBLEM_STATUS[error.code] == status_of(error), kind  # type: ignore[index]


async def spec(api: httpx.AsyncClient) -> dict[str, object]:
    response = await api.get("/openapi/openapi.json")
    assert response.status_code == 200
    document: dict[str, object] = response.json()
    return document


async def test_each_operation_lists_its_codes_per_status_and_its_scope(
    make_api: ApiFactory,
) -> None:
    document = await spec(await make_api())
    paths: dict[str, dict[str, dict[str, object]]] = document["paths"]  # type: ignore[assignment]
    verify = paths["/verify"]["post"]
    responses: dict[str, dict[str, object]] = verify["responses"]  # type: ignore[assignment]
    bad_request = responses["400"]["content"]["application/problem+json"]["schema"]  # type: ignore[index]
    assert set(bad_request["allOf"][1]["properties"]["code"]["enum"]) == {
        "incorrect_code",
        "invalid_code_format",
        "invalid_request",
    }
    assert verify["security"] == [{"bearer": ["otp"]}]
    assert paths["/opt-outs"]["get"]["security"] == [{"bearer": ["admin"]}]
    assert "security" not in paths["/healthz"]["get"]
    schemes = document["components"]["securitySchemes"]  # type: ignore[index]
    assert schemes["bearer"]["scheme"] == "bearer"
    # Every code in an enum belongs to the status it is listed under.
    for item in paths.values():
        for operation in item.values():
            for status, response in operation["responses"].items():  # type: ignore[attr-defined]
                content = response.get("content", {})
                if "application/problem+json" in content:
                    schema = content["application/problem+json"]["schema"]
                    codes = schema["allOf"][1]["properties"]["code"]["enum"]
                    assert codes, (operation, status)
                    assert {str(PROBLEM_STATUS[c]) for c in codes} == {status}


async def test_the_spec_constrains_what_the_server_refuses(make_api: ApiFactory) -> None:
    document = await spec(await make_api())
    schemas = document["components"]["schemas"]  # type: ignore[index]
    assert schemas["VerifyRequest"]["properties"]["code"]["pattern"] == "^[0-9]{6}$"
    assert schemas["ChallengeCreate"]["properties"]["phone"]["pattern"].startswith("^\\+")
    assert schemas["ChallengeCreate"]["properties"]["client_ip"]["minLength"] == 2
    phone = document["paths"]["/opt-outs/{phone}"]["get"]["parameters"][0]  # type: ignore[index]
    assert phone["schema"]["pattern"].startswith("^\\+")


async def test_the_events_the_service_posts_are_webhooks(make_api: ApiFactory) -> None:
    document = await spec(await make_api())
    webhooks = document["webhooks"]
    assert set(webhooks) == set(EVENT_DATA)  # type: ignore[arg-type]
    inbound = webhooks["inbound.message"]["post"]  # type: ignore[index]
    body = inbound["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["type"]["const"] == "inbound.message"
    data = document["components"]["schemas"]["InboundMessage"]  # type: ignore[index]
    assert "from" in data["properties"]
    headers = {p["name"] for p in inbound["parameters"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}


async def test_options_and_405_list_every_method_of_a_path(make_api: ApiFactory) -> None:
    api = await make_api()
    options = await api.options("/opt-outs/+14155550123")
    assert options.status_code == 204
    assert options.headers["allow"] == "DELETE, GET, OPTIONS, PUT"
    refused = await api.request("PATCH", "/challenge/x.y")
    assert refused.status_code == 405
    assert set(refused.headers["allow"].split(", ")) == {"DELETE", "GET", "OPTIONS"}


async def test_unknown_docs_paths_answer_problems(make_api: ApiFactory) -> None:
    api = await make_api()
    for path in ("/openapi/nope", "/openapi/assets/nope.js", "/openapi/nope.json"):
        assert_problem(await api.get(path), 404, "not_found")


async def test_the_docs_page_is_served_from_the_package(make_api: ApiFactory) -> None:
    api = await make_api()
    page = await api.get("/openapi/swagger")
    assert page.status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from another host
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js"):
        assert (await api.get(f"/openapi/assets/{asset}")).status_code == 200, asset


async def test_with_tokens_the_page_opens_and_the_spec_needs_admin(make_api: ApiFactory) -> None:
    tokens = {
        "login": "login-token-0123456789abcdef012345678",
        "ops": "ops-token-0123456789abcdef0123456789",
    }
    api = await make_api(api_tokens=api_tokens(tokens, {"login": ["otp"], "ops": ["admin"]}))
    assert (await api.get("/openapi/swagger")).status_code == 200
    assert (await api.get("/openapi/assets/docs.js")).status_code == 200
    # The spec they load needs an admin token (test_tokens_are_required_and_scoped).
    assert_problem(await api.get("/openapi/openapi.json"), 401, "unauthorized")


async def test_a_problem_the_operation_does_not_document_fails_the_test(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    check = DocumentedProblems(api._transport.app)  # type: ignore[attr-defined]
    undocumented = httpx.Response(
        400,
        json={"code": "invalid_phone"},
        headers={"content-type": "application/problem+json"},
        request=httpx.Request("POST", "http://otp.test/verify"),
    )
    with pytest.raises(AssertionError, match="does not document"):
        await check(undocumented)
    documented = httpx.Response(
        400,
        json={"code": "incorrect_code"},
        headers={"content-type": "application/problem+json"},
        request=httpx.Request("POST", "http://otp.test/verify"),
    )
    await check(documented)
