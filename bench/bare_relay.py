"""The P9 baseline: the least a relay can do, as a bare aiohttp handler.

It verifies the bearer token exactly as the relay does (google-auth's `jwt.decode` against
the certificates, fetched once and cached, with the audience) and forwards the request to
one fixed target, answering with the target's status. No object lookup, no identity, no
status write, no templates: the floor the real relay's throughput is compared with.

    python bench/bare_relay.py PORT CERTS_URL AUDIENCE TARGET_URL
"""

from __future__ import annotations

import json
import sys
import urllib.request

import aiohttp
from aiohttp import web
from google.auth import jwt


def main() -> None:
    port, certs_url, audience, target = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    with urllib.request.urlopen(certs_url, timeout=30) as resp:
        certs = json.loads(resp.read())
    session: dict[str, aiohttp.ClientSession] = {}

    async def handle(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            jwt.decode(token, certs=certs, audience=audience, clock_skew_in_seconds=30)
        except Exception:
            return web.json_response({"error": "token"}, status=401)
        body = await request.read()
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        async with session["s"].post(target, data=body) as answer:
            await answer.read()
            return web.json_response({"httpStatus": answer.status}, status=answer.status)

    app = web.Application()
    app.router.add_post("/relay", handle)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
