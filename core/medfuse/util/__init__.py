"""Small helpers with one job each, shared by the rest of medfuse: :mod:`.hashing` (file and
source hashes)."""
