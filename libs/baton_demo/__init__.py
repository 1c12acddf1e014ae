"""Demo scaffolding."""
