"""gcpcall-operator: Google Cloud API calls as Kubernetes objects.

Why a package named `gcpcall` under a source folder `operator/`: a top-level package named
`operator` would shadow the standard library module of that name.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
