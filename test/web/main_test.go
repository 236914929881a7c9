package web_test

import (
	"testing"

	"github.com/authmilter/authmilter/internal/testbin"
)

// binary is the authmilter binary built by TestMain.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }
