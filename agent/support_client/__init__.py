"""The support client (``helpline support CODE``): one attended session without enrollment (issue 18 part 4)."""
