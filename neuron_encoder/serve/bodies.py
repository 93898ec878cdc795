"""What every route does with bodies: read one within the limits (415, 413) before parsing it, answer
with JSON and the timing headers, and declare both in the OpenAPI document."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema

from neuron_encoder.serve import errors, invocations, schemas
from neuron_encoder.serve.infer import Embedded
from neuron_encoder.serve.invocations import JSON


async def read_body(request: Request, limit: int) -> bytes:
    """The body after the media type check (415), refused past `limit` bytes (413) without reading it all."""
    invocations.check_media_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    too_large = errors.PayloadTooLarge(f"the body is larger than the limit of {limit} bytes (--payload-limit)")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def answer(body: bytes, request: Request, result: Embedded | None = None, inputs: int | None = None) -> Response:
    """The JSON response; with a result, its timing headers and what the request log line records."""
    start = request.scope["state"]["start_ns"]
    headers = result.headers(start) if result is not None else {}
    if result is not None:
        request.scope["state"]["log"] = {"inputs": inputs, "tokens": result.tokens,
                                         "queue_ms": round(result.queue_s * 1000, 3),
                                         "inference_ms": round(result.inference_s * 1000, 3)}
    return Response(body, media_type=JSON, headers=headers)


def error_responses(*codes: int) -> dict:
    """The OpenAPI `responses` of these error statuses: each the one error body."""
    return {code: {"model": schemas.ErrorBody} for code in codes}


BAD_INPUT = error_responses(400, 401, 413, 415, 422, 424, 429, 503)  # what a route that reads a body may answer


def request_body(model) -> dict:
    """The request body of a route that reads its body itself (for 415/413 before parsing), for the docs:
    a reference to request_schemas()' definition, which FastAPI cannot see in such a route."""
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def request_schemas() -> dict:
    """The OpenAPI components of every request body (schemas.REQUEST_MODELS), by name."""
    _, definitions = models_json_schema([(model, "validation") for model in schemas.REQUEST_MODELS],
                                        ref_template="#/components/schemas/{model}")
    return definitions["$defs"]
