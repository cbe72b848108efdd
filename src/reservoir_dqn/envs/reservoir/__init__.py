"""The reservoir, an exact finite MDP: its settings, physics, inflow chain and records, the
TorchRL environment, the SDP and foresight solvers, held-out windows, accounts and figures.

Reached by the rest of the package through its profile (:mod:`.profile`), never by name.
"""
