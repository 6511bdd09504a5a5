"""Convolutions (kind "conv"): drop-in replacements for ``nn.Conv2d``, one file per paper (imported by the registry)."""
