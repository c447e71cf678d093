#!/bin/sh
# Runs every fuzz target of the module for FUZZTIME (default 20s) each, one after the
# other, and prints one line per target: package, target, execs and elapsed time (from
# the last "fuzz: elapsed: ..., execs: N" line of go test's output). A failing target
# stops the run with go test's output (go test saves the crasher under the package's
# testdata/fuzz/, where plain go test then runs it as a regression seed).
set -eu
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# One go test -list for the whole module: a package that does not build fails the run
# instead of silently contributing no targets. The output is each package's matching
# names followed by "ok <pkg> <time>".
if ! $GO test -list '^Fuzz' ./... >"$log" 2>&1; then
	cat "$log"
	exit 1
fi
targets=$(awk '/^Fuzz/ { names = names " " $1; next }
	/^ok / { n = split(names, a, " "); for (i = 1; i <= n; i++) print $2, a[i]; names = "" }' "$log")
if [ -z "$targets" ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

n=0
while read -r pkg f; do
	n=$((n + 1))
	if ! $GO test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
		cat "$log"
		echo "fuzz: $pkg $f FAILED" >&2
		exit 1
	fi
	# e.g. "fuzz: elapsed: 20s, execs: 123456 (6172/sec), new interesting: 3 (total: 40)"
	last=$(grep '^fuzz: elapsed:' "$log" | tail -1)
	elapsed=$(echo "$last" | sed -n 's/^fuzz: elapsed: \([^,]*\),.*/\1/p')
	execs=$(echo "$last" | sed -n 's/.*execs: \([0-9]*\).*/\1/p')
	printf '%-36s %-24s execs %10s  time %s\n' "$pkg" "$f" "${execs:-?}" "${elapsed:-?}"
done <<EOT
$targets
EOT
echo "fuzz: $n targets, FUZZTIME=$FUZZTIME each"
