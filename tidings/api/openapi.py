"""The OpenAPI document at /api/v1/openapi.json, built by apispec from the marshmallow schemas.

Every API route must appear in OPERATIONS (a test checks it), so the document cannot drift
from the routes silently.
"""

from __future__ import annotations

from functools import cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import jsonify

from segments.schemas import EventsBatchSchema, UserFieldsSchema, UsersBatchSchema
from tidings.api import bp
from tidings.api.segments import PreviewSchema, SegmentSchema

# (path, method, summary, request body schema or None, client key allowed)
OPERATIONS: list[tuple[str, str, str, object, bool]] = [
    ("/users/{external_id}", "put", "Create or update a user (attributes merge; devices upsert by id)", UserFieldsSchema, True),
    ("/users/{external_id}", "get", "A user's profile, devices and current segment ids", None, False),
    ("/users/{external_id}", "delete", "Erase a person (profile, devices, events, messages)", None, False),
    ("/users/batch", "post", "Upsert up to 1,000 users, all or nothing", UsersBatchSchema, False),
    ("/events", "post", "Record up to 1,000 events, all or nothing; duplicates by id are skipped", EventsBatchSchema, True),
    ("/imports/users", "post", "Upload a CSV of users (multipart field `file`); answers 202", None, False),
    ("/imports/{import_id}", "get", "Progress and per-row errors of a CSV import", None, False),
    ("/segments", "post", "Create a segment from a query", SegmentSchema, False),
    ("/segments", "get", "List segments", None, False),
    ("/segments/{segment_id}", "get", "One segment", None, False),
    ("/segments/{segment_id}", "put", "Change a segment's name, query or description", SegmentSchema, False),
    ("/segments/{segment_id}", "delete", "Delete a segment no other segment uses", None, False),
    ("/segments/{segment_id}/size", "get", "How many users the segment selects now", None, False),
    ("/segments/preview", "post", "Count and sample of an unsaved query", PreviewSchema, False),
    ("/segments/{segment_id}/churn", "get", "Active vs churned users of a segment (?inactive_days=30)", None, False),
]

EXTRA_OPERATIONS: list[tuple[str, str, str, object, bool]] = []


def register(path: str, method: str, summary: str, schema=None, client: bool = False) -> None:
    """Other API modules add their operations here at import time."""
    EXTRA_OPERATIONS.append((path, method, summary, schema, client))


ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}},
}


@cache
def build_spec() -> dict:
    spec = APISpec(
        title="Tidings API", version="1", openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Campaign messaging and targeting. Auth: `Authorization: Bearer <app key>`."},
        servers=[{"url": "/api/v1"}],
    )
    spec.components.security_scheme("appKey", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", ERROR)
    paths: dict[str, dict] = {}
    for path, method, summary, schema, client in OPERATIONS + EXTRA_OPERATIONS:
        op: dict = {
            "summary": summary,
            "security": [{"appKey": []}],
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
            "x-client-key": client,
        }
        if schema is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
        paths.setdefault(path, {})[method] = op
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())
