"""The reload loop: a dispatcher (supervisor.py) over one queue of typed events (events.py, eventqueue.py),
and the parts that own their state: the server slot (slot.py, with the exit policy in exits.py), the
container keeper (keeper.py) and live config (live.py)."""

from .supervisor import Supervisor

__all__ = ["Supervisor"]
