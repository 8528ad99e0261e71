// Package v1alpha1 holds herald's bare-metal API types in group herald.dev,
// version v1alpha1: IPAddressPool, L2Advertisement, BGPPeer and
// BGPAdvertisement. The nouns follow MetalLB's so its users recognise them.
//
// The CRD manifests under charts/herald/crds and zz_generated.deepcopy.go
// are generated from the markers in this package by ../generate.sh; edit the
// Go types, never the generated files.
//
// +kubebuilder:object:generate=true
// +groupName=herald.dev
package v1alpha1
