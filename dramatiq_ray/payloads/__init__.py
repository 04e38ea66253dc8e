"""Payloads: what a value becomes on its way to a store and back. Codecs, compression, encryption, pointers,
blob stores, the spill plan and its markers, arguments by reference and blob gc.

This layer knows nothing of Dramatiq's middleware or of Ray: the call path and the middleware above use it.
"""
