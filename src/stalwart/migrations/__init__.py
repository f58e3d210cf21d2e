"""Alembic migrations, shipped inside the package so an installed CLI finds them."""
