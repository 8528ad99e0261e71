package build

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxNameLength is AWS's limit for load balancer and target group names.
const maxNameLength = 32

// resourceName is "k8s-<namespace:8>-<name:8>-<hash:10>": at most 32
// characters of [a-z0-9-], readable in the console, and unique because the
// hash covers everything that identifies the resource (cluster, Service,
// and every field AWS cannot change in place). The same inputs always give
// the same name, which is what makes creation idempotent across crashes.
func resourceName(namespace, name string, identity ...string) string {
	h := sha256.New()
	for _, part := range identity {
		// A separator that cannot occur in the parts keeps ("ab","c")
		// and ("a","bc") apart.
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	sum := hex.EncodeToString(h.Sum(nil))[:10]
	out := "k8s-" + namePart(namespace) + "-" + namePart(name) + "-" + sum
	if len(out) > maxNameLength {
		out = out[:maxNameLength] // cannot happen with 8-character parts; kept as a guard
	}
	return out
}

// namePart keeps the first 8 characters AWS accepts, without a trailing
// hyphen.
func namePart(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if b.Len() == 8 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// ValidLoadBalancerName reports why name is not an acceptable NLB name, or
// "" if it is: 1-32 characters of letters, digits and hyphens, no hyphen at
// either end, and not starting with "internal-" (AWS reserves it).
func ValidLoadBalancerName(name string) string {
	switch {
	case name == "":
		return "must not be empty"
	case len(name) > maxNameLength:
		return "longer than 32 characters"
	case strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-"):
		return "must not begin or end with a hyphen"
	case strings.HasPrefix(strings.ToLower(name), "internal-"):
		return `must not begin with "internal-"`
	}
	if strings.IndexFunc(name, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-'
	}) >= 0 {
		return "may contain only letters, digits and hyphens"
	}
	return ""
}
