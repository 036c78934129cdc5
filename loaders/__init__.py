"""File formats -> torch modules: safe state-dict reading, key maps, architecture inference.

Submodules are imported where used (`from .loaders.vq_checkpoints import load_vq_model`), so that
importing this package stays cheap.
"""
