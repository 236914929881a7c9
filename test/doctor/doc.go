// Package doctor holds the black-box tests of `authmilter doctor`: the
// real binary against a real DNS server (internal/testdns) serving zones
// that model multi-provider sending setups (testdata/zones), compared with
// golden outputs (testdata/golden; `go test ./test/doctor -update`
// rewrites them), and doctor's verdicts compared with what the daemon's
// inbound verification concludes for mail from each sending host.
package doctor
