"""The wire: key names, message shapes, validation and the output parser.

Everything that crosses the bus is defined here once and imported everywhere
else. Nothing in this package does I/O.
"""
