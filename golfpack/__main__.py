"""`python -m golfpack` = the `golfpack` command."""

from golfpack.cli import main

if __name__ == "__main__":
    main()
