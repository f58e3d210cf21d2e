"""Services: use cases that combine repositories, run in a UI, a worker or the CLI."""
