"""Host inventory: schema, vendor table, sizes, and the plain Fleet data placement reads."""
