"""The HTTP room: one FastAPI app over the service, the routes of each API family (SageMaker, OpenAI,
text-embeddings-inference), the ASGI layer and the lifespan that loads and warms every replica.

Routes parse bodies (schemas.py, invocations.py), call Inference and shape the answer; they never touch
torch. The POST routes are plain ASGI handlers that the ASGI layer answers directly (bodies.py); FastAPI
declares them too, for the OpenAPI document. Every error is a ServeError rendered once, as {"error", "error_type"}. server.py runs the app.
"""

from __future__ import annotations

import contextlib
from typing import Callable

from fastapi import FastAPI

from neuron_encoder import __version__
from neuron_encoder.serve import routes_openai, routes_sagemaker, routes_scores, routes_tei
from neuron_encoder.serve.bodies import request_schemas
from neuron_encoder.serve.middleware import RequestMiddleware, handle_errors
from neuron_encoder.serve.replicas import run_batch
from neuron_encoder.serve.service import Service
from neuron_encoder.serve.settings import ServeSettings

# each: handlers(service) for POST, router(service, posts)
FAMILIES = (routes_sagemaker, routes_openai, routes_tei, routes_scores)


class EmbeddingAPI(FastAPI):
    """FastAPI whose OpenAPI document also defines the request bodies: the routes read their bodies
    themselves (415 and 413 before parsing), so FastAPI cannot see the models they parse them with.

    A POST to a body route goes straight to the ASGI layer (`shortcut`, a RequestMiddleware), past
    FastAPI's and Starlette's own layers, which look up telemetry settings in the environment and wrap
    every request in error handlers of their own; the ASGI layer answers every failure itself. Not with
    CORS, whose middleware must see every request."""

    shortcut: RequestMiddleware | None = None

    async def __call__(self, scope, receive, send) -> None:
        shortcut = self.shortcut
        if shortcut is not None and scope["type"] == "http" and scope["method"] == "POST" \
                and scope["path"] in shortcut.posts:
            scope["app"] = self
            return await shortcut(scope, receive, send)
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict:
        if self.openapi_schema is None:
            document = super().openapi()
            document.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas())
        return self.openapi_schema


def create_app(settings: ServeSettings, run: Callable = run_batch, service: Service | None = None) -> FastAPI:
    """The FastAPI app; `run` is the replica's model call (replicas.run_batch; tests wrap it to inject
    faults)."""
    service = service or Service(settings, run)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = EmbeddingAPI(title="neuron-encoder", version=__version__, lifespan=lifespan,
                       description="Embeddings from a compiled BERT-style encoder, for SageMaker, OpenAI and "
                                   "text-embeddings-inference clients.")
    app.state.service = service
    posts = {path: handler for family in FAMILIES for path, handler in family.handlers(service).items()}
    routers = [family.router(service, posts) for family in FAMILIES]
    for router in routers:
        app.include_router(router)
    handle_errors(app, service)
    paths = {route.path for router in [app.router, *routers] for route in router.routes if hasattr(route, "path")}
    app.add_middleware(RequestMiddleware, service=service, routes=frozenset(paths), posts=posts)  # docs' routes too
    if settings.cors_allow_origin:  # no CORS unless asked
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_allow_origin),
                           allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
    else:
        app.shortcut = RequestMiddleware(None, service, frozenset(paths), posts)
    return app
