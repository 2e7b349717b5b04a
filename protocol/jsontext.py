"""Compact JSON text, as the wire carries it.

One encoder, built once and shared by everything that writes to the bus:
``json.dumps`` with options builds a new encoder on every call (about 1 µs).
"""

import json

#: ``compact(value)``: JSON text without spaces.
compact = json.JSONEncoder(separators=(",", ":")).encode
