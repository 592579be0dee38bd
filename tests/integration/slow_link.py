"""A TCP relay to the API server that adds latency to every request, for race tests.

Why: on loopback a status patch is answered in a few milliseconds, so two writers whose
computations overlap (each reading a base, then writing a whole list) almost never meet,
and a test of "no writer rolls back another" passes whether or not the code is safe. With
every byte from the operator to the API server held back by `delay` seconds, each write
is in flight that much longer, and the window in which another writer reads a stale base
is wide enough to be hit on every wave.

The link is plain TCP (TLS passes through untouched: the API server's certificate names
127.0.0.1, which is also where the link listens), one thread with its own event loop,
bounded to loopback. Latency is added, throughput is not cut: each chunk is stamped when
it arrives and written once its stamp plus `delay` has passed, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import yaml

__all__ = ["SlowLink"]


class SlowLink:
    """Listens on 127.0.0.1:<port> and forwards to `upstream` (https://host:port)."""

    def __init__(self, upstream: str, delay: float) -> None:
        parts = urlsplit(upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.upstream_port = int(parts.port or 443)
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> SlowLink:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the slow link did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def kubeconfig(self, source: str, into: Path) -> str:
        """A copy of the kubeconfig at `source` whose clusters go through this link."""
        config = yaml.safe_load(Path(source).read_text())
        for cluster in config.get("clusters") or []:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        into.write_text(yaml.safe_dump(config))
        return str(into)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()
        self._server.close()

    async def _connection(self, client_r: asyncio.StreamReader,
                          client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pump(client_r, server_w, self.delay),
                             self._pump(server_r, client_w, 0.0), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    delay: float) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + delay, chunk))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(OSError):
                await sender
            writer.close()
