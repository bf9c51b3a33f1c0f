"""``python -m painter_seg <command> ...``: the same as the ``painter-seg`` command."""
from .cli import main

if __name__ == "__main__":
    main()
