from medfuse.cli import main

main()
