"""`python -m engine` runs the `sluice` command line."""

from engine.cli.main import main

if __name__ == "__main__":
    main()
