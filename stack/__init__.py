"""Stack files, the shared loading front door, placement, lock, plan and the CLI."""
