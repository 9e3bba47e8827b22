"""Maintenance operations: plain functions over a store path, each returning a report."""
