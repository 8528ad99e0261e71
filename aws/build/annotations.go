package build

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/heraldlb/herald/provider/service"
)

// The annotations of cloud-provider-aws and aws-load-balancer-controller,
// spelled as users already write them.
const (
	prefix = "service.beta.kubernetes.io/aws-load-balancer-"

	AnnotationType                  = prefix + "type"
	AnnotationInternal              = prefix + "internal"
	AnnotationScheme                = prefix + "scheme"
	AnnotationTargetType            = prefix + "nlb-target-type"
	AnnotationSubnets               = prefix + "subnets"
	AnnotationEIPAllocations        = prefix + "eip-allocations"
	AnnotationPrivateIPv4Addresses  = prefix + "private-ipv4-addresses"
	AnnotationCrossZone             = prefix + "cross-zone-load-balancing-enabled"
	AnnotationAdditionalTags        = prefix + "additional-resource-tags"
	AnnotationHealthCheckProtocol   = prefix + "healthcheck-protocol"
	AnnotationHealthCheckPort       = prefix + "healthcheck-port"
	AnnotationHealthCheckPath       = prefix + "healthcheck-path"
	AnnotationHealthCheckInterval   = prefix + "healthcheck-interval"
	AnnotationHealthCheckTimeout    = prefix + "healthcheck-timeout"
	AnnotationHealthyThreshold      = prefix + "healthcheck-healthy-threshold"
	AnnotationUnhealthyThreshold    = prefix + "healthcheck-unhealthy-threshold"
	AnnotationProxyProtocol         = prefix + "proxy-protocol"
	AnnotationTargetGroupAttributes = prefix + "target-group-attributes"
	AnnotationAttributes            = prefix + "attributes"
	AnnotationSSLCert               = prefix + "ssl-cert"
	AnnotationSSLPorts              = prefix + "ssl-ports"
	AnnotationSSLNegotiationPolicy  = prefix + "ssl-negotiation-policy"
	AnnotationSecurityGroups        = prefix + "security-groups"
	AnnotationTargetNodeLabels      = prefix + "target-node-labels"
	AnnotationIPAddressType         = prefix + "ip-address-type"
	AnnotationName                  = prefix + "name"
)

// Known lists every aws-load-balancer-* annotation herald reads; others
// are reported by UnknownAnnotations.
var known = []string{
	AnnotationType, AnnotationInternal, AnnotationScheme, AnnotationTargetType, AnnotationSubnets,
	AnnotationEIPAllocations, AnnotationPrivateIPv4Addresses, AnnotationCrossZone, AnnotationAdditionalTags,
	AnnotationHealthCheckProtocol, AnnotationHealthCheckPort, AnnotationHealthCheckPath,
	AnnotationHealthCheckInterval, AnnotationHealthCheckTimeout, AnnotationHealthyThreshold,
	AnnotationUnhealthyThreshold, AnnotationProxyProtocol, AnnotationTargetGroupAttributes,
	AnnotationAttributes, AnnotationSSLCert, AnnotationSSLPorts, AnnotationSSLNegotiationPolicy,
	AnnotationSecurityGroups, AnnotationTargetNodeLabels, AnnotationIPAddressType, AnnotationName,
}

// UnknownAnnotations returns, sorted, the aws-load-balancer-* annotations
// herald does not read: most often a typo, or an aws-lbc feature herald
// lacks, so users are told instead of silently getting the default.
func UnknownAnnotations(annotations map[string]string) []string {
	var out []string
	for k := range annotations {
		if strings.HasPrefix(k, prefix) && !slices.Contains(known, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func invalid(key, value, format string, args ...any) error {
	return &service.AnnotationError{Annotation: key, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// lookup returns the trimmed value and whether the annotation is set.
func lookup(a map[string]string, key string) (string, bool) {
	v, ok := a[key]
	return strings.TrimSpace(v), ok
}

// list splits a comma-separated annotation, rejecting empty items.
func list(a map[string]string, key string) ([]string, error) {
	v, ok := lookup(a, key)
	if !ok {
		return nil, nil
	}
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, invalid(key, v, "empty item in comma-separated list")
		}
		out = append(out, item)
	}
	return out, nil
}

// keyValues parses "k1=v1,k2=v2" into a map; duplicate keys are an error.
func keyValues(a map[string]string, key string) (map[string]string, error) {
	items, err := list(a, key)
	if err != nil || items == nil {
		return nil, err
	}
	out := map[string]string{}
	raw := a[key]
	for _, item := range items {
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, invalid(key, raw, "%q is not key=value", item)
		}
		if _, dup := out[k]; dup {
			return nil, invalid(key, raw, "key %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func boolean(a map[string]string, key string) (value, set bool, err error) {
	v, ok := lookup(a, key)
	if !ok {
		return false, false, nil
	}
	b, perr := strconv.ParseBool(v)
	if perr != nil {
		return false, false, invalid(key, v, "not true or false")
	}
	return b, true, nil
}

// integer parses a whole number within [lo, hi]; def when unset.
func integer(a map[string]string, key string, lo, hi, def int32) (int32, error) {
	v, ok := lookup(a, key)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || int32(n) < lo || int32(n) > hi {
		return 0, invalid(key, v, "not a whole number from %d to %d", lo, hi)
	}
	return int32(n), nil
}

func oneOf(a map[string]string, key, def string, allowed ...string) (string, error) {
	v, ok := lookup(a, key)
	if !ok {
		return def, nil
	}
	for _, want := range allowed {
		if strings.EqualFold(v, want) {
			return want, nil
		}
	}
	return "", invalid(key, v, "must be one of %s", strings.Join(allowed, ", "))
}

// ipv4List parses a list of IPv4 addresses.
func ipv4List(a map[string]string, key string) ([]string, error) {
	items, err := list(a, key)
	if err != nil {
		return nil, err
	}
	for _, item := range items {
		ip, perr := netip.ParseAddr(item)
		if perr != nil || !ip.Is4() {
			return nil, invalid(key, a[key], "%q is not an IPv4 address", item)
		}
	}
	return items, nil
}
