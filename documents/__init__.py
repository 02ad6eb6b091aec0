"""The file layer every format stands on: bounded YAML reading with positions, validation into
pydantic models, file:line problems, and the field types the three formats share.

It imports none of ``backends``, ``inventory`` or ``stack``; they all import it.
"""
