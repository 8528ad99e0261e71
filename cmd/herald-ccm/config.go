package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	awsbackend "github.com/heraldlb/herald/aws"
	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/bare-metal/ipam"
)

// Backend names accepted in the cloud config's "backend" field.
const (
	backendBareMetal = "bare-metal"
	backendAWS       = "aws"
)

// errNoCloudConfig is returned when --cloud-config is missing: herald cannot
// guess which backend or which addresses to use.
var errNoCloudConfig = errors.New("--cloud-config is required: it selects the backend (bare-metal or aws)")

// cloudConfig is the file passed with --cloud-config.
type cloudConfig struct {
	// Backend is "bare-metal" or "aws".
	Backend   string             `json:"backend"`
	BareMetal *baremetal.Config  `json:"bareMetal,omitempty"`
	AWS       *awsbackend.Config `json:"aws,omitempty"`
}

// loadedConfig is a validated cloud config, ready to wire.
type loadedConfig struct {
	backend string
	pools   []ipam.Pool
	aws     *awsbackend.Config
}

// parseCloudConfig reads and validates the cloud config. Errors name the
// field at fault, e.g. `bareMetal.pools[0].addresses[1]: Invalid value: ...`.
func parseCloudConfig(r io.Reader) (*loadedConfig, error) {
	if r == nil {
		return nil, errNoCloudConfig
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading cloud config: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("cloud config is empty: %w", errNoCloudConfig)
	}
	jsonData, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("cloud config is not YAML: %w", err)
	}
	var cfg cloudConfig
	// The strict decoder names unknown fields by their full path
	// (bareMetal.pols), which a plain json.Decoder does not.
	strictErrs, err := sigsjson.UnmarshalStrict(jsonData, &cfg, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	if len(strictErrs) > 0 {
		return nil, fmt.Errorf("cloud config: %w", errors.Join(strictErrs...))
	}
	var errs field.ErrorList
	loaded := &loadedConfig{backend: cfg.Backend}
	if cfg.AWS != nil && cfg.Backend != backendAWS {
		errs = append(errs, field.Forbidden(field.NewPath("aws"), "only read with backend: aws"))
	}

	switch cfg.Backend {
	case backendBareMetal:
		if cfg.BareMetal == nil {
			break // every pool comes from IPAddressPool objects
		}
		pools, poolErrs := cfg.BareMetal.AddressPools(field.NewPath("bareMetal"))
		errs = append(errs, poolErrs...)
		loaded.pools = pools
	case backendAWS:
		if cfg.AWS == nil {
			errs = append(errs, field.Required(field.NewPath("aws"), "the aws backend needs at least aws.clusterName"))
			break
		}
		errs = append(errs, cfg.AWS.Validate(field.NewPath("aws"))...)
		loaded.aws = cfg.AWS
	case "":
		errs = append(errs, field.Required(field.NewPath("backend"), "bare-metal or aws"))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("backend"), cfg.Backend, []string{backendBareMetal, backendAWS}))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid cloud config: %w", errs.ToAggregate())
	}
	return loaded, nil
}
