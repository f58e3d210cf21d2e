"""The ``app`` command line: modules here parse and call; they hold no logic."""
