"""GPUStack inference-backend specs: schema, catalog loading and command rendering."""
