"""Drive a plan through the ports: the executor and one attempt of one step."""
