"""The `sluice` command line: thin commands, options in, one use case, exit code out."""
