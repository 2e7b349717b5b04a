"""Compact JSON text, as the wire carries it.

One encoder, built once: ``json.dumps`` with options builds a new encoder on
every call, which showed in profiles of the agent's and controller's hot paths.
"""

import json

#: ``compact(value)``: JSON text without spaces.
compact = json.JSONEncoder(separators=(",", ":")).encode
