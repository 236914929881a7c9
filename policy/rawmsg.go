package policy

import (
	"bytes"
	"errors"
	"fmt"
)

// SplitMessage splits a raw RFC 5322 message into header fields, kept byte
// for byte as an MTA would pass them (value after the colon, folding
// included), and the body. Bare LF line ends, as in files on disk, become
// CRLF first, as they would on the way through SMTP. It is used by the
// offline sign and verify commands, and by tests.
func SplitMessage(raw []byte) ([]HeaderField, []byte, error) {
	raw = normalizeCRLF(raw)
	var fields []HeaderField
	rest := raw
	for len(rest) > 0 {
		if bytes.HasPrefix(rest, []byte("\r\n")) {
			return fields, rest[2:], nil
		}
		// A field runs to a CRLF not followed by whitespace.
		end := 0
		for {
			i := bytes.Index(rest[end:], []byte("\r\n"))
			if i < 0 {
				end = len(rest)
				break
			}
			end += i + 2
			if end >= len(rest) || (rest[end] != ' ' && rest[end] != '\t') {
				break
			}
		}
		line := rest[:end]
		rest = rest[end:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, nil, fmt.Errorf("header line %d is not a field: %q", len(fields)+1, truncate(line, 60))
		}
		name := string(line[:colon])
		if !validFieldName(name) {
			return nil, nil, fmt.Errorf("header field name %q is invalid", truncate([]byte(name), 60))
		}
		value := string(bytes.TrimSuffix(line[colon+1:], []byte("\r\n")))
		fields = append(fields, HeaderField{Name: name, Value: value})
	}
	if len(fields) == 0 {
		return nil, nil, errors.New("empty message")
	}
	// A message that is all header and no separator line has an empty body.
	return fields, nil, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// normalizeCRLF turns bare LF into CRLF.
func normalizeCRLF(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+bytes.Count(b, []byte("\n")))
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
