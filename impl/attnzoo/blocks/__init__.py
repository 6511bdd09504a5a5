"""Blocks (kind "block"): context, pyramid and fusion modules, one file per paper (imported by the registry)."""
