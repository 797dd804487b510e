"""The model store (a folder or any fsspec URL of verified models) and the API's cached catalog.

The lowest room of the service: it imports ``models.manifest`` and nothing else of ours, and
it never imports torch, so the API process of a distributed deployment can list models without
loading a network.
"""
