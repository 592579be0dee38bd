"""The P4/P5 baseline: plain kopf, the least an operator of our two kinds can be.

One creation handler per kind that writes `status.observedGeneration`; kopf's default
settings (its annotations for what it handled, its default worker limits), no Google
clients. Run by `bench/scale.py` as `kopf run bench/plain_kopf.py --standalone
--namespace <ns>`, so it meets the same API server and the same objects as the operator.
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.create("gcpcall.dev", "v1alpha1", "scheduledgcpcalls")
@kopf.on.create("gcpcall.dev", "v1alpha1", "gcptasks")
def created(meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    patch.status["observedGeneration"] = meta.get("generation")
