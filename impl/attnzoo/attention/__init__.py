"""Attention modules, one file per paper; each registers itself with attnzoo.registry when imported.

The registry imports every file here on first use (``attnzoo.registry._load_all``), one file at a time, so a
broken file is reported with its path and line instead of hiding the others.
"""
