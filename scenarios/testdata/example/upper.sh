#!/bin/sh
# upper: copies stdin to stdout in capitals; "upper --exit N" exits with N.
if [ "$1" = --exit ]; then exit "$2"; fi
tr a-z A-Z
