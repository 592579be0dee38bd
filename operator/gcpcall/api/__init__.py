"""The custom resources as typed values: parse and validate specs, build status.

Why a layer of its own: everything here is a pure function of plain values (no I/O, no
Google or Kubernetes clients, nothing else of ours), so the rules users meet - defaults,
validation messages naming a field, condition semantics - are unit tested in isolation and
shared by the reconcilers, the status sync and the relay. Import the submodules directly.
"""

__all__: list[str] = []
