"""Checks on the resolved IR, one pass a file: each returns located diagnostics."""
