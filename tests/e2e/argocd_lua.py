"""Run the chart's Argo CD Lua scripts (health checks, resource actions) as Argo CD does.

Why a real interpreter: the scripts are code that runs inside Argo CD, and only running them
proves them. Argo CD embeds gopher-lua, a Lua 5.1; `lupa.lua51` is the reference Lua 5.1, so
a script that uses a later feature fails here too. As in Argo CD, the object is passed as
the global `obj` (JSON arrays become 1-based tables), the health script returns
`{status, message}` and an action returns the modified object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

__all__ = ["ARGOCD_DIR", "ArgoLua", "script"]

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "helm" / "gcpcall-operator" / "argocd"


def script(name: str) -> str:
    """The text of a script in the chart's argocd/ folder."""
    return (ARGOCD_DIR / name).read_text()


class ArgoLua:
    """A fresh Lua 5.1 state per call: scripts cannot leak globals into each other."""

    def _runtime(self) -> Any:
        return lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)

    def _to_lua(self, lua: Any, value: Any) -> Any:
        if isinstance(value, dict):
            # JSON null is nil in Lua: the key is absent
            return lua.table_from(
                {k: self._to_lua(lua, v) for k, v in value.items() if v is not None}
            )
        if isinstance(value, list):
            return lua.table_from([self._to_lua(lua, v) for v in value])
        return value

    def _from_lua(self, lua: Any, value: Any) -> Any:
        if lua.eval("type")(value) != "table":
            return value
        items = list(value.items())
        keys = [k for k, _ in items]
        if keys and keys == list(range(1, len(keys) + 1)):
            return [self._from_lua(lua, v) for _, v in items]
        return {k: self._from_lua(lua, v) for k, v in items}

    def run(self, source: str, obj: dict[str, Any]) -> Any:
        """Run `source` with the global `obj`; its return value, as Python data."""
        lua = self._runtime()
        lua.globals().obj = self._to_lua(lua, obj)
        return self._from_lua(lua, lua.execute(source))

    def health(self, source: str, obj: dict[str, Any]) -> tuple[str, str]:
        result = self.run(source, obj)
        assert isinstance(result, dict), f"a health script returns a table, got {result!r}"
        assert set(result) <= {"status", "message"}, result
        return str(result["status"]), str(result.get("message", ""))
