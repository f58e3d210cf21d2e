"""Controlled widgets and forms: what a page calls to take input that is never lost."""
