package provider

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxMessage bounds what herald writes into a condition or event message
// (the condition's own limit is 32768 bytes): an error quoting a huge
// annotation must not make the write fail.
const maxMessage = 4096

// sanitize makes a message safe to write: control characters (which an
// annotation value may carry into an error) and bytes that are not UTF-8
// are escaped as \uXXXX and \xXX, so the text stays readable and the
// apiserver never refuses the write over them.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
		if b.Len() > maxMessage {
			return truncate(b.String())
		}
	}
	return b.String()
}

// truncate cuts s to maxMessage bytes on a rune boundary, marking the cut.
func truncate(s string) string {
	const mark = " [...]"
	cut := maxMessage - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
