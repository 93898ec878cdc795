"""What every route does with bodies, in plain ASGI: read one within the limits (415, 413) before
parsing it, answer with JSON and the timing headers (a Reply the ASGI layer sends), and declare both in
the OpenAPI document.

The routes that read a body are plain ASGI handlers, (scope, receive) -> Reply, which the ASGI layer
(middleware.py) calls straight away: FastAPI's routing, Request objects and dependency machinery cost
more than the rest of a one-text request. FastAPI declares the same routes for the OpenAPI document
(and calls the same handlers when it is reached).
"""

from __future__ import annotations

from typing import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema

from neuron_encoder.serve import errors, invocations, schemas
from neuron_encoder.serve.infer import Embedded
from neuron_encoder.serve.invocations import JSON


class Reply:
    """A 200 JSON answer: its body, its extra headers, and (with a result) what the log line records."""

    __slots__ = ("body", "headers", "result", "inputs")

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 result: Embedded | None = None, inputs: int | None = None) -> None:
        self.body, self.headers, self.result, self.inputs = body, headers or [], result, inputs

    def log(self) -> dict:
        """The request log line's fields (--json-output)."""
        if self.result is None:
            return {}
        return {"inputs": self.inputs, "tokens": self.result.tokens, "queue_ms": round(self.result.queue_s * 1000, 3),
                "inference_ms": round(self.result.inference_s * 1000, 3)}


Handler = Callable[[dict, Callable[[], Awaitable[dict]]], Awaitable[Reply]]  # (scope, receive) -> Reply


def header(scope: dict, name: bytes) -> str | None:
    """A request header's value (ASGI gives names in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: dict, receive: Callable[[], Awaitable[dict]], limit: int) -> bytes:
    """The body after the media type check (415), refused past `limit` bytes (413) without reading it all."""
    invocations.check_media_type(header(scope, b"content-type"))
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise invocations.too_large(limit)
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:  # the usual case: one message
        return body
    chunks, size = [body], len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise invocations.too_large(limit)
        chunks.append(chunk)
    if size > limit:
        raise invocations.too_large(limit)
    return b"".join(chunks)


def answer(body: bytes, scope: dict, result: Embedded | None = None, inputs: int | None = None) -> Reply:
    """The JSON answer; with a result, its timing headers (from the request's start) and log fields."""
    headers = result.headers(scope["state"]["start_ns"]) if result is not None else None
    return Reply(body, headers, result, inputs)


def as_response(reply: Reply) -> Response:
    """A Reply as FastAPI's Response, for a route reached through FastAPI rather than the ASGI layer."""
    return Response(reply.body, media_type=JSON,
                    headers={k.decode(): v.decode() for k, v in reply.headers})


def via_fastapi(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The FastAPI endpoint of a plain handler (the OpenAPI document's route; the ASGI layer calls the
    handler itself first)."""
    async def endpoint(request: Request) -> Response:
        return as_response(await handler(request.scope, request.receive))
    endpoint.__doc__, endpoint.__name__ = handler.__doc__, handler.__name__
    return endpoint


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
