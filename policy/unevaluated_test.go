package policy

import "testing"

func TestAuthservIDOfTruncated(t *testing.T) {
	tests := []struct {
		value     string
		truncated bool
		id        string
		sure      bool
	}{
		{"mx.example; dkim=pass", false, "mx.example", true},
		{"mx.example; dkim=pa", true, "mx.example", true},
		{"mx.exam", true, "mx.exam", false},           // the id itself was cut
		{"(a long comment", true, "", false},          // cut inside a comment
		{"(c) mx.example ", true, "mx.example", true}, // a separator follows
		{"mx.example(c)", true, "mx.example", false},  // more id may follow the comment
		{"mx.example", false, "mx.example", true},     // a whole value
	}
	for _, tt := range tests {
		id, sure := authservIDOf(tt.value, tt.truncated)
		if id != tt.id || sure != tt.sure {
			t.Errorf("authservIDOf(%q, %v) = %q, %v; want %q, %v", tt.value, tt.truncated, id, sure, tt.id, tt.sure)
		}
	}
}
