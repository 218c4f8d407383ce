"""Cairn's tests, by folder; each folder is a pytest marker (tests/conftest.py): unit/ (no
sockets), reliability/ (in-process attacks, each a scorecard line), interop/ (the JS oracles),
integration/ (sockets on 127.0.0.1 and processes). Inside unit/ and integration/, one folder per
package tested: core/, edge/, gateway/, sim/ (and integration/demo/ for the whole system)."""
