"""The FerretDB launcher lives in baton.testbed (shared with `make bench`); tests import it from here too."""

from baton.testbed.ferretdb import FerretDB, fetch_ferretdb, start_ferretdb

__all__ = ["FerretDB", "fetch_ferretdb", "start_ferretdb"]
