"""Backbones, one file per paper; variants are registered as data in each file (imported by the registry)."""
