package loadmsg

import (
	"bytes"
	"testing"
)

func TestGenerate(t *testing.T) {
	for _, size := range []int{100, 4096, 1 << 20} {
		m := Generate(size, "x", "example.com", "example.org")
		if len(m) < size || (size > 400 && len(m) != size) {
			t.Errorf("size %d: got %d bytes", size, len(m))
		}
		if !bytes.HasSuffix(m, []byte("\r\n")) || bytes.Contains(bytes.ReplaceAll(m, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("size %d: line ends are not all CRLF", size)
		}
		if !bytes.Equal(m, Generate(size, "x", "example.com", "example.org")) {
			t.Errorf("size %d: not deterministic", size)
		}
	}
}
