"""The ranking API's OpenAPI document, built from the msgspec request and response types."""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for ``/v1/rank`` and ``/v1/lists`` (schemas from msgspec)."""
    import msgspec

    from rankflow.serving.app import RankRequest, RankResponse

    (request, response), components = msgspec.json.schema_components(
        [RankRequest, RankResponse], ref_template="#/components/schemas/{name}"
    )
    errors = {
        "400": {"description": "malformed body, unknown surface, bad ids, too many candidates"},
        "401": {"description": "missing or unknown API key"},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "rankflow ranking API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/rank": {
                "post": {
                    "summary": "Re-rank a user's candidates with the champion model",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": request}},
                    },
                    "responses": {
                        "200": {
                            "description": "ranked items (fallback: true when answered from "
                            "the nightly list)",
                            "content": {"application/json": {"schema": response}},
                        },
                        **errors,
                    },
                }
            },
            "/v1/lists/{surface}/{user_id}": {
                "get": {
                    "summary": "The user's nightly list",
                    "parameters": [
                        {
                            "name": "surface",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "user_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        },
                    ],
                    "responses": {"200": {"description": "the list"}, **errors},
                }
            },
        },
    }
