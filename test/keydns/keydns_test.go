// Package keydns_test checks the built-in key DNS server ([keydns],
// keys/dnsserver) against real DNS software: kdig queries, a Knot
// secondary that follows it by NOTIFY and AXFR with TSIG, and unbound
// resolving keys through NS delegations to it, with the signatures
// verified by dkimpy and OpenDKIM; and the daemon running it (rotation
// for a delegated customer with no DNS change outside authmilter).
package keydns_test
