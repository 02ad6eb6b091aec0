"""``gpufleet``, the command line: argument parsing, the commands, and how results are shown."""
