package ipam

import (
	"errors"
	"testing"
)

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"192.0.2.0/24", "2001:db8::-2001:db8::1", "0.0.0.0/0", "::/0", "1.2.3.4-1.2.3.3", "x-y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRange) {
				t.Fatalf("ParseRange(%q): error %v does not wrap ErrInvalidRange", s, err)
			}
			return
		}
		if err := r.validate(); err != nil {
			t.Fatalf("ParseRange(%q) = %v, which is invalid: %v", s, r, err)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) || r.size() == 0 {
			t.Fatalf("ParseRange(%q) = %v does not contain its ends", s, r)
		}
		str := r.String()
		r2, err := ParseRange(str)
		if err != nil || r2 != r {
			t.Fatalf("ParseRange(%q) = %v; its String %q parses to %v, %v", s, r, str, r2, err)
		}
		if r2.String() != str {
			t.Fatalf("String not stable: %q then %q", str, r2.String())
		}
	})
}
