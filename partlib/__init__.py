"""partlib: the library behind the PART recipes (Progressive Alignment Representation Training)."""

__version__ = "0.1.0"
