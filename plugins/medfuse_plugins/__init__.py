"""Built-in medfuse plugins, registered through the `medfuse` entry-point group."""
