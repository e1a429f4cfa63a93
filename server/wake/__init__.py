"""Wake-on-LAN before maintenance windows: which neighbour relays the packet (:mod:`.planner`, pure),
when to ask (:mod:`.waker`, driven by the task scheduler's tick)."""
