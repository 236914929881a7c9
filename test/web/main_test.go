package web_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/authmilter/authmilter/internal/testbin"
)

// binary is the authmilter binary built by TestMain.
var binary string

// TestMain clears the screenshots of the last run, so that the folder
// holds this run's only, and builds the binary.
func TestMain(m *testing.M) {
	if err := os.RemoveAll(screenshotRoot); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testbin.Main(m, &binary)
}
