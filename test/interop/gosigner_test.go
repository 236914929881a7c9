package interop_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// signingTests are the tests of this package in which authmilter signs
// (DKIM, ARC seals): with the Go signer too, they prove that both signers'
// signatures verify with dkimpy and OpenDKIM.
const signingTests = "^(TestOurSignaturesVerifyWithPeers|TestARCInterop|TestARCLiveChainThroughMilter)$"

// TestSignaturesWithGoSigner runs the signing tests once more, built with
// -tags nolibcrypto (crypto/rsa), when this test binary signs with libcrypto:
// `go test ./...` (make test) then checks both signers against the peers.
// A binary built with CGO_ENABLED=0 or -tags nolibcrypto already signs with
// crypto/rsa, and the test has nothing more to do.
// AUTHMILTER_TEST_SIGNERS=default turns the second run off.
func TestSignaturesWithGoSigner(t *testing.T) {
	impl := keys.SignerImplementation()
	if !strings.HasPrefix(impl, "openssl") {
		t.Logf("this binary's signer is %s: the other tests of the package checked it", impl)
		return
	}
	if os.Getenv("AUTHMILTER_TEST_SIGNERS") == "default" {
		t.Logf("AUTHMILTER_TEST_SIGNERS=default: only %s was checked", impl)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-tags", "nolibcrypto", "-run", signingTests, ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("signing tests with the Go signer (go test -tags nolibcrypto -run '%s' ./test/interop): %v\n%s", signingTests, err, out)
	}
	t.Logf("with the Go signer: %s", strings.TrimSpace(string(out)))
}
