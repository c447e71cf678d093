// Package arm64 holds the scenario suite's run against an arm64 guest (lab up --arch
// arm64): one arm64 VM for the package, booted under TCG on an amd64 host (KVM on an
// arm64 host), provisioned with lab-interop built for arm64, running the same
// scenarios as package suite runs against the host's own architecture. It is a
// package of its own so that `go test ./...` runs it alongside the x86 suite instead
// of after it.
package arm64
