"""handlers layer (see architecture.md): the only package that imports kopf.

kopf imports the official Kubernetes client (`kubernetes`) whenever it is installed: at
import, to recognise that client's model objects when they are passed to `kopf.adopt()` and
its kin, and when its handler registry is made, to offer the client's kubeconfig login as a
fallback. This operator does neither (its own `login` handler comes first), and that import
is 45 MB of resident memory, about half the operator's empty process. So kopf is imported
and its registry made here with the client hidden; the package stays importable afterwards
for whoever asks for it (the tests use it as their own client). The image does not install
it at all.
"""

import sys


def _import_kopf_without_the_official_client() -> None:
    if "kopf" in sys.modules or "kubernetes" in sys.modules:
        return
    sys.modules["kubernetes"] = None  # type: ignore[assignment]  # "not installed" to kopf
    try:
        import kopf

        kopf.get_default_registry()
    finally:
        del sys.modules["kubernetes"]


_import_kopf_without_the_official_client()
