"""Datasets and data utilities."""
