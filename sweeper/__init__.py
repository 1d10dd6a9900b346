"""The sweep orchestrator and the `sweep` command line."""
