"""The emulator's identity services together: STS, IAM Credentials and the metadata server.

Why one assembly: the three share the token issuer (so every service knows who a token
belongs to) and the call log, and both the full emulator and tests that only need identity
mount them the same way: `IdentityServices(tokens).add_routes(app)`, or `serve()` on a port
of their own.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from gcpcall.emulator import iam, metadata, sts
from gcpcall.emulator.core import CallLog, TokenIssuer

__all__ = ["IdentityServices"]


class IdentityServices:
    """`iam` (policy, generateAccessToken/IdToken), `sts` (token exchange), `metadata`."""

    def __init__(self, tokens: TokenIssuer, *, call_log: CallLog | None = None) -> None:
        self.tokens = tokens
        self.iam = iam.IamState(tokens, call_log=call_log)
        self.sts = sts.StsState(tokens, call_log=call_log)
        self.metadata = metadata.MetadataState(tokens, call_log=call_log)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add_routes(self, app: web.Application) -> None:
        """Mount the three services (and their admin routes) on `app`."""
        iam.add_routes(app, self.iam)
        sts.add_routes(app, self.sts)
        metadata.add_routes(app, self.metadata)

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve them alone on host:port (0: a free port); returns the base URL."""
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = next(a for a in runner.addresses if isinstance(a, tuple))
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        """Stop serving (if `serve` was used) and close the STS's outgoing session."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.sts.close()

    async def __aenter__(self) -> IdentityServices:
        await self.serve()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
