"""Unit tests of the firmware simulator (firmware-sim/cairn_sim)."""
