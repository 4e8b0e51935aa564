"""schemas/openapi.json is what the gateway's code generates: regenerate it when this fails
(`vidpipe gateway --openapi > schemas/openapi.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.routing import Route

from services.gateway.app import ROUTES, openapi_document, openapi_json

ROOT = Path(__file__).resolve().parents[2]


def test_the_checked_in_openapi_document_is_the_generated_one() -> None:
    checked_in = ROOT.joinpath("schemas/openapi.json").read_text()
    assert checked_in == openapi_json(), (
        "regenerate: vidpipe gateway --openapi > schemas/openapi.json"
    )


def test_every_api_route_is_in_the_document_and_only_those() -> None:
    documented = {
        (path, method.upper())
        for path, item in openapi_document()["paths"].items()
        for method in item
    }
    served = {
        (route.path, method)
        for route in ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if route.path.startswith(("/v1/generations", "/v1/ops", "/v1/provider-hooks"))
        if method != "HEAD"
    }
    assert served <= documented and documented - served <= {("/healthz", "GET")}
    json.dumps(openapi_document())  # serialisable as it stands
