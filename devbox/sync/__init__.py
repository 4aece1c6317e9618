"""`sync:`: the project's files copied into the container instead of mounted (a remote engine)."""

from .placement import Placement, sees_folder
from .syncer import Sent, Syncer

__all__ = ["Placement", "Sent", "Syncer", "sees_folder"]
