"""Fuzzing Cairn's wire decoders: harnesses, seed corpora, a pure-Python engine.

fuzz/README.md says how to run it and read its output.
"""
