"""The integration suite's fixtures live in ``tests/cluster.py``, shared by folders.

They are registered once for the session by ``tests/conftest.py``; this module
only re-exports the helpers that test modules import by name.
"""

from tests.cluster import (
    CLIENT_ID,
    CLIENT_SECRET,
    GROUP,
    PLURAL,
    ROOT,
    VERSION,
    Cluster,
    basic_spec,
    wait_for,
)

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "GROUP",
    "PLURAL",
    "ROOT",
    "VERSION",
    "Cluster",
    "basic_spec",
    "wait_for",
]
