#!/bin/sh
# tests/soak/run.sh — the soak test (issue 10): `segnode serve` under several storescu senders
# with random aborts, a kill -9 and restart of the node, and an Orthanc PACS that goes away and
# comes back, for --seconds N (default 600); then checks that every acknowledged instance is on
# disk with the sent bytes and every processed series has exactly one SEG in the PACS, and
# prints the figures. Everything is in tests/soak/soak.py (`run.sh --help` lists the options).
# usage: tests/soak/run.sh [--seconds N] [--build DIR (default ./build)] [--port-base P] ...
# CTest runs a short version (label soak). Run the long one niced on a shared machine:
#   nice -n 10 tests/soak/run.sh --seconds 600
exec /usr/bin/python3 "$(dirname "$0")/soak.py" "$@"
