"""The Kubernetes side: the connection (`connection.py`: kubeconfig, in-cluster, exec
plugins, the token kept fresh) and the typed client (`client.py`).
"""

from gcpcall.kube.client import GROUP, VERSION, KubeClient, KubeError, ObjectRef
from gcpcall.kube.connection import (
    Connection,
    Credentials,
    KubeConfigError,
    RefreshingToken,
    load_connection,
)

__all__ = [
    "GROUP",
    "VERSION",
    "Connection",
    "Credentials",
    "KubeClient",
    "KubeConfigError",
    "KubeError",
    "ObjectRef",
    "RefreshingToken",
    "load_connection",
]
