"""Pure decisions and models: no I/O, no clock, no environment."""
