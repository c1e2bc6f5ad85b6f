"""What people run: the CLI, the report, the demo and its model, port helpers."""
