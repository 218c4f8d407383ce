"""Integration tests of the firmware simulator (firmware-sim/cairn_sim) with a real broker."""
