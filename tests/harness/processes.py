"""The service-process launcher lives in baton.testbed (shared with `make bench`); tests import it from here too."""

from baton.testbed.processes import ServiceProcesses

__all__ = ["ServiceProcesses"]
