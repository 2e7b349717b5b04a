"""Scripts the agent runs for extensions: the jumpscript runner and helpers for
emitting level messages."""
