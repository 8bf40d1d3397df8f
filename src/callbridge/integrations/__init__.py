"""Bridges from callbridge's SDK to other voice frameworks.

Each integration sits above the SDK and needs its own optional extra (``pip install
'callbridge[pipecat]'``); nothing else in callbridge imports this package, so the core install
never needs a framework.
"""
