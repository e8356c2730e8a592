"""Container runtimes behind one small port (`base.ContainerRuntime`)."""
