"""What the OpenAPI schema says about errors, made true to what the API answers.

FastAPI documents every 422 as a list of validation errors (``HTTPValidationError``). Our routes
also answer 422 with a plain message when a value is well-formed but refers to nothing (an
unknown service item, no such elder), as ``{"detail": "…"}``; the console shows either. Without
this, a client generated from the schema fails to read those answers (schemathesis found it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI


def document_plain_error_details(app: FastAPI) -> None:
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI caches it in app.openapi_schema
            schemas = schema.get("components", {}).get("schemas", {})
            error = schemas.get("HTTPValidationError", {}).get("properties", {})
            if "detail" in error:
                listed = error["detail"]
                error["detail"] = {
                    "title": "Detail",
                    "anyOf": [listed, {"type": "string", "description": "a plain message"}],
                }
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
