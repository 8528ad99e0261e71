package provider

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "plain", in: "pool main: no free IPv4 address", want: "pool main: no free IPv4 address"},
		{name: "C1 control character", in: "pool main\u009bx", want: `pool main\u009bx`},
		{name: "newline and tab", in: "a\nb\tc", want: `a\u000ab\u0009c`},
		{name: "invalid UTF-8", in: "a\xffb", want: `a\xffb`},
		{name: "printable non-ASCII stays", in: "pool café ✓", want: "pool café ✓"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sanitize(tt.in); got != tt.want {
				t.Errorf("sanitize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	long := sanitize(strings.Repeat("é", maxMessage))
	if len(long) > maxMessage || !utf8.ValidString(long) || !strings.HasSuffix(long, " [...]") {
		t.Errorf("a long message is %d bytes, valid UTF-8 %v, ends %q", len(long), utf8.ValidString(long), long[len(long)-10:])
	}
}
