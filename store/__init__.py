"""All MongoDB access: one module per collection. Nothing outside store/ builds a query."""
