"""What the interpreted build needs of the ``cython`` module when Cython is
not installed: running as plain Python, nothing is compiled."""

compiled = False
