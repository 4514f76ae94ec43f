"""The compare page's routes: `/` (vote), `/summary`, their JSON API and static files.

The browser only ever sees "left" and "right"; which model is which stays on the server until
the summary page names them.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from chatsft.serve.app import read_json
from chatsft.serve.compare import Pair, VoteLog, summarize
from chatsft.serve.schema import ApiError

STATIC = Path(__file__).resolve().parent / "static"


class CompareSession:
    def __init__(self, pairs: list[Pair], log: VoteLog) -> None:
        self.pairs, self.log = pairs, log
        self.by_id = {p.id: p for p in pairs}

    def progress(self) -> dict:
        voted = sum(p.id in self.log.votes for p in self.pairs)
        return {"voted": voted, "total": len(self.pairs)}

    async def next(self, request: Request) -> Response:
        pair = next((p for p in self.pairs if p.id not in self.log.votes), None)
        body: dict = {"done": pair is None, **self.progress()}
        if pair is not None:
            right = "b" if pair.left == "a" else "a"
            body["pair"] = {"id": pair.id, "prompt": pair.prompt,
                            "left": pair.replies[pair.left], "right": pair.replies[right]}
        return JSONResponse(body)

    async def vote(self, request: Request) -> Response:
        data = await read_json(request, 1 << 16)
        if not isinstance(data, dict):
            raise ApiError(422, "the body must be an object {id, choice}")
        pair = self.by_id.get(data.get("id"))
        if pair is None:
            raise ApiError(404, f"no pair {data.get('id')!r}", param="id")
        shown = data.get("choice")
        sides = {"left": pair.left, "right": "b" if pair.left == "a" else "a",
                 "tie": "tie", "both_bad": "both_bad"}
        if shown not in sides:
            raise ApiError(422, "choice must be left, right, tie or both_bad", param="choice")
        self.log.add(pair, sides[shown])
        return await self.next(request)

    async def summary(self, request: Request) -> Response:
        return JSONResponse(summarize(self.pairs, self.log.votes, self.log.names))

    def routes(self) -> list[BaseRoute]:
        def page(name: str):
            async def serve(request: Request) -> Response:
                return FileResponse(STATIC / name, media_type="text/html")
            return serve

        return [
            Route("/", page("compare.html"), methods=["GET"]),
            Route("/summary", page("summary.html"), methods=["GET"]),
            Route("/api/next", self.next, methods=["GET"]),
            Route("/api/vote", self.vote, methods=["POST"]),
            Route("/api/summary", self.summary, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]
