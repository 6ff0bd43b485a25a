"""The baseline: a minimal Starlette + httpx pass-through (no auth, limits, routing or failover).

Usage: python minimal_proxy.py PORT UPSTREAM_BASE_URL
"""

from __future__ import annotations

import sys

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:9/v1"
client = httpx.AsyncClient(
    base_url=UPSTREAM,
    timeout=60,
    limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
)


async def chat(request: Request) -> Response:
    body = await request.body()
    headers = {"content-type": "application/json"}
    if orjson.loads(body).get("stream"):
        upstream = await client.send(
            client.build_request("POST", "/chat/completions", content=body, headers=headers),
            stream=True,
        )
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            media_type="text/event-stream",
            background=BackgroundTask(upstream.aclose),
        )
    answer = await client.post("/chat/completions", content=body, headers=headers)
    return Response(answer.content, answer.status_code, media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/health/liveness", health),
    ]
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
