"""Party nodes: identity and keys, peers, Flower wiring, job approval, data connectors.

Not built yet: see the project's open issue on party nodes.
"""
