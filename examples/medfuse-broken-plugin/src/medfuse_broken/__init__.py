"""Deliberately broken plugin package."""
