"""python -m modules.serve [flags]: launch.py with --ray (a local Ray cluster unless --ray ADDRESS)."""

import sys

from launch import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv if any(a == "--ray" or a.startswith("--ray=") for a in argv) else ["--ray", *argv])
