// Package soak holds the long soak test of the daemon (issue 8, item 12),
// built only with the build tag "soak" so that `go test ./...` leaves it
// out. Run it with `make soak`, which is
//
//	go test -tags soak -count=1 -timeout 30m -v ./test/soak
//
// TestSoak builds the real authmilter binary, starts `authmilter run` with
// keys for three domains (RSA and Ed25519, some of them never published)
// and DNS answered by internal/testdns dropping 20% of all queries, and
// sends 10,000 outbound messages over 8 concurrent milter connections
// (internal/miltertest) while SIGHUP arrives every second and, midway, a
// new key is added, published and activated. It checks that:
//
//   - no message is lost: each one gets a final reply, the one the policy
//     asks for (accept), over a connection that did not break;
//   - no message is signed with a key whose record was not published when
//     the message was signed, and every signature verifies against the
//     published record;
//   - every message has its per-message log line (queue ID, macro i, unique
//     per message), whose signatures are the ones the message carries, and
//     every message left unsigned is logged with its reason;
//   - the new key is used once activated, and the daemon never flaps back
//     to the old one or deactivates a published key because of a dropped
//     query.
//
// SOAK_SEED=n picks another drop pattern than testdns's default seed;
// SOAK_LOG=file keeps the daemon's log.
package soak
