"""Example third-party medfuse plugins."""
