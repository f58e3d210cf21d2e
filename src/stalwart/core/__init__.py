"""Core services: config, database, audit, logging. Nothing here imports the UI."""
