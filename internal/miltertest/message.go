package miltertest

import (
	"bytes"
	"strings"

	"github.com/emersion/go-milter"
)

// Field is one header field of a message, as the MTA holds it.
type Field struct {
	// Name is the field name as sent to the milter: the bytes before the
	// colon, without the white space that may stand between name and colon.
	Name string
	// Raw is the complete field as it appears in the message, every line
	// ending in CRLF (in Raw mode: exactly as in the input).
	Raw []byte

	own bool // the MTA's own Received field
}

// Value returns the field value the way Postfix's milter8.c sends it in
// SMFIC_HEADER: everything after the colon, each line break inside a
// folded value turned into a single LF, the final line break removed, and,
// unless leadingSpace (SMFIP_HDR_LEADSPC was negotiated), one space (a
// space, never a tab) directly after the colon removed.
func (f Field) Value(leadingSpace bool) string {
	i := bytes.IndexByte(f.Raw, ':')
	v := f.Raw[i+1:]
	v = trimLineEnd(v)
	s := strings.ReplaceAll(string(v), "\r\n", "\n")
	if !leadingSpace && strings.HasPrefix(s, " ") {
		s = s[1:]
	}
	return s
}

// Message is a raw message split the way the MTA splits it before it talks
// to a milter.
type Message struct {
	// Fields are the header fields in order.
	Fields []Field
	// Separator reports whether a blank line ended the header section.
	Separator bool
	// Body is the body as the milter receives it (see SplitMessage).
	Body []byte
}

// SplitMessage splits raw into header fields and body as Postfix does.
//
// The header section ends at the first empty line (which belongs to
// neither part), at the first line that is neither a header field nor a
// continuation line (that line starts the body, as with Postfix's
// is_header() test), or at the end of the input (a header-only message).
// A header field name is one or more printable ASCII characters other than
// the colon, optionally followed by spaces or tabs, then a colon.
//
// Unless raw mode is requested, line endings are normalised the way an MTA
// stores and forwards a message received over SMTP: every line, in the
// header and in the body, ends in CRLF (a bare LF becomes CRLF, a body
// without a final line break gets one, a CR not followed by LF is kept as
// it is). In raw mode header fields and body keep their bytes exactly.
func SplitMessage(raw []byte, rawMode bool) Message {
	var m Message
	rest := raw
	for len(rest) > 0 {
		line, next := cutLine(rest)
		content := trimLineEnd(line)
		if len(content) == 0 && len(line) > 0 {
			m.Separator = true
			rest = next
			break
		}
		if (content[0] == ' ' || content[0] == '\t') && len(m.Fields) > 0 {
			f := &m.Fields[len(m.Fields)-1]
			f.Raw = append(f.Raw, normalizeLine(line, rawMode)...)
			rest = next
			continue
		}
		name, ok := headerName(content)
		if !ok {
			break
		}
		m.Fields = append(m.Fields, Field{Name: name, Raw: normalizeLine(line, rawMode)})
		rest = next
	}
	if rawMode {
		m.Body = append([]byte(nil), rest...)
	} else {
		m.Body = normalizeBody(rest)
	}
	return m
}

// headerName reports whether line starts a header field, and its name.
func headerName(line []byte) (string, bool) {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 127 && line[i] != ':' {
		i++
	}
	if i == 0 {
		return "", false
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if j == len(line) || line[j] != ':' {
		return "", false
	}
	return string(line[:i]), true
}

// cutLine returns the first line of b including its LF, and the rest.
func cutLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1], b[i+1:]
	}
	return b, nil
}

// trimLineEnd removes a final LF or CRLF.
func trimLineEnd(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// normalizeLine returns line ending in CRLF (or unchanged in raw mode).
func normalizeLine(line []byte, rawMode bool) []byte {
	if rawMode {
		return append([]byte(nil), line...)
	}
	out := append([]byte(nil), trimLineEnd(line)...)
	return append(out, '\r', '\n')
}

// normalizeBody turns body into CRLF-terminated lines, as Postfix stores
// and sends it.
func normalizeBody(body []byte) []byte {
	out := make([]byte, 0, len(body)+2)
	for len(body) > 0 {
		line, rest := cutLine(body)
		out = append(out, trimLineEnd(line)...)
		out = append(out, '\r', '\n')
		body = rest
	}
	return out
}

// ownReceivedName is the name of the MTA's own (invisible) header field.
const ownReceivedName = "Received"

// Apply applies milter modifications to msg the way Postfix's cleanup
// server does (src/cleanup/cleanup_milter.c), and returns the header fields
// of the message as Postfix would deliver it and the body. received is the
// value of the MTA's own Received field, which Postfix puts first and
// hides from milters; empty means the field is modelled (it still counts
// for header indexes, as in Postfix) but left out of the result.
// leadingSpace tells whether SMFIP_HDR_LEADSPC was negotiated: without it
// Postfix puts one space between the colon and a value from the milter.
//
// The rules, from Postfix:
//   - SMFIR_ADDHEADER appends the field at the end of the header.
//   - SMFIR_INSHEADER with index i puts the field at position i counting
//     from 0 over ALL header fields including Postfix's own Received:
//     index 0 lands above Postfix's Received field, index 1 directly below
//     it (the top of what the milter saw), index n below the (n-1)th field
//     the milter saw; an index past the end appends.
//   - SMFIR_CHGHEADER with index n (0 is taken as 1) changes the nth field
//     of that name (case-insensitive), not counting the first header field
//     (Postfix's own Received field, unless a milter inserted a field above
//     it: Postfix then skips that one instead); an empty value deletes the
//     field; changing a field that does not exist appends it; deleting one
//     that does not exist does nothing.
//   - SMFIR_REPLBODY chunks are concatenated and replace the body (line
//     endings normalised to CRLF unless rawMode).
//   - A value's LF line breaks become CRLF on output; a milter that sends
//     CRLF gets CR CR LF, as with Postfix.
func Apply(msg Message, mods []milter.ModifyAction, received string, leadingSpace, rawMode bool) (fields []Field, body []byte) {
	space := " "
	if leadingSpace {
		space = ""
	}
	all := make([]Field, 0, len(msg.Fields)+len(mods)+1)
	all = append(all, Field{Name: ownReceivedName, Raw: []byte(formatField(ownReceivedName, " ", received)), own: true})
	all = append(all, msg.Fields...)

	body = msg.Body
	var newBody []byte
	replaced := false
	for _, m := range mods {
		switch m.Code {
		case milter.ActAddHeader:
			all = append(all, newField(m.HeaderName, space, m.HeaderValue))
		case milter.ActInsertHeader:
			i := int(m.HeaderIndex)
			if i > len(all) {
				i = len(all)
			}
			all = append(all, Field{})
			copy(all[i+1:], all[i:])
			all[i] = newField(m.HeaderName, space, m.HeaderValue)
		case milter.ActChangeHeader:
			n := int(m.HeaderIndex)
			if n == 0 {
				n = 1
			}
			pos := -1
			for j := 1; j < len(all); j++ { // Postfix skips the first header
				if strings.EqualFold(all[j].Name, m.HeaderName) {
					if n--; n == 0 {
						pos = j
						break
					}
				}
			}
			switch {
			case m.HeaderValue == "" && pos >= 0:
				all = append(all[:pos], all[pos+1:]...)
			case m.HeaderValue == "":
				// Nothing to delete.
			case pos >= 0:
				all[pos] = newField(m.HeaderName, space, m.HeaderValue)
			default:
				all = append(all, newField(m.HeaderName, space, m.HeaderValue))
			}
		case milter.ActReplBody:
			replaced = true
			newBody = append(newBody, m.Body...)
		}
	}
	if replaced {
		if rawMode {
			body = newBody
		} else {
			body = normalizeBody(newBody)
		}
	}
	for _, f := range all {
		if f.own && received == "" {
			continue
		}
		fields = append(fields, f)
	}
	return fields, body
}

// newField builds a header field from a milter's name and value.
func newField(name, space, value string) Field {
	return Field{Name: name, Raw: []byte(formatField(name, space, value))}
}

// formatField joins name and value as Postfix does ("%s:%s%s") and writes
// each LF of the value as CRLF.
func formatField(name, space, value string) string {
	return name + ":" + space + strings.ReplaceAll(value, "\n", "\r\n") + "\r\n"
}

// Assemble joins header fields and body into a message. A blank line is
// written between them when the input had one or when there is a body.
func Assemble(fields []Field, separator bool, body []byte) []byte {
	var b bytes.Buffer
	for _, f := range fields {
		b.Write(f.Raw)
	}
	if separator || len(body) > 0 {
		b.WriteString("\r\n")
	}
	b.Write(body)
	return b.Bytes()
}
