package election

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Selectors parses label selectors.
func Selectors(in []metav1.LabelSelector) ([]labels.Selector, error) {
	out := make([]labels.Selector, 0, len(in))
	for i := range in {
		s, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			return nil, fmt.Errorf("selector %d: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// AnySelects reports whether any selector matches set; none matches
// nothing.
func AnySelects(sels []labels.Selector, set map[string]string) bool {
	for _, s := range sels {
		if s.Matches(labels.Set(set)) {
			return true
		}
	}
	return false
}

// SelectsNode reports whether an advertisement with these node selectors
// lets a node with these labels advertise: no selector selects every node.
func SelectsNode(sels []labels.Selector, nodeLabels map[string]string) bool {
	return len(sels) == 0 || AnySelects(sels, nodeLabels)
}
