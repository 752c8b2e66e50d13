"""Small helpers with one job each, shared by the rest of medfuse: :mod:`.hashing` (streamed file
hashes, plugin source hashes), :mod:`.jsonable` (plain JSON values), :mod:`.versions` (installed
library versions), :mod:`.progress` (rich progress bars) and :mod:`.formatting` (numbers as text in
result tables)."""
