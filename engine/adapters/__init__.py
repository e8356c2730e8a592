"""The outside world behind the ports: Docker, git, artifact stores, GitHub, the console."""
