"""gpufleet's Pulumi program: stack files -> placement plan -> containers on GPU hosts over SSH."""
from components.program import run

run()
