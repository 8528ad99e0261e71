package aws

import (
	"cmp"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/build"
)

// Config is the "aws" section of herald-ccm's cloud config.
type Config struct {
	// ClusterName is written into every ownership tag; herald only ever
	// changes resources carrying it. Required.
	ClusterName string `json:"clusterName"`
	// Region and VPCID default to the instance's own, read over IMDSv2.
	Region string `json:"region,omitempty"`
	VPCID  string `json:"vpcID,omitempty"`
	// NodeSecurityGroups get the NodePort rules; empty means the groups
	// tagged kubernetes.io/cluster/<clusterName>.
	NodeSecurityGroups []string `json:"nodeSecurityGroups,omitempty"`
	// Tags are added to every resource herald creates.
	Tags map[string]string `json:"tags,omitempty"`
	// NodePortRange is kube-apiserver's --service-node-port-range
	// ("30000-32767" when empty): the nodes admit the load balancers on it.
	NodePortRange string `json:"nodePortRange,omitempty"`
	// Endpoints override AWS's (VPC endpoints, or test doubles).
	Endpoints Endpoints `json:"endpoints,omitempty"`
	// RateLimits are the shared budgets per API family.
	RateLimits RateLimits `json:"rateLimits,omitempty"`
	// CacheTTL bounds how long a change made to herald's resources behind
	// its back goes unnoticed (default 10m).
	CacheTTL Duration `json:"cacheTTL,omitempty"`
	// GCInterval is how often orphaned resources are looked for (default 10m).
	GCInterval Duration `json:"gcInterval,omitempty"`
	// Retry bounds the retries of one call (throttling, 5xx, network).
	Retry Retry `json:"retry,omitempty"`
}

// Retry bounds retries: attempts per call (default 10) and the longest
// wait between two (default 20s, jittered exponential below it).
type Retry struct {
	MaxAttempts int      `json:"maxAttempts,omitempty"`
	MaxBackoff  Duration `json:"maxBackoff,omitempty"`
}

// Endpoints override AWS's endpoints.
type Endpoints struct {
	ELBv2    string `json:"elbv2,omitempty"`
	EC2      string `json:"ec2,omitempty"`
	Metadata string `json:"metadata,omitempty"`
}

// RateLimits are the request budgets per API family.
type RateLimits struct {
	ELBv2 *api.Rate `json:"elbv2,omitempty"`
	EC2   *api.Rate `json:"ec2,omitempty"`
}

// Duration is a time.Duration written as "90s" or "10m".
type Duration struct{ time.Duration }

// UnmarshalJSON reads a quoted Go duration.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration like 90s or 10m", s)
	}
	d.Duration = v
	return nil
}

// Defaults of the AWS backend. ELBv2's and EC2's documented per-account
// limits are around 10-20 requests per second per family, shared with
// every other client of the account; herald stays well under them.
var (
	DefaultELBv2Rate  = api.Rate{QPS: 8, Burst: 16}
	DefaultEC2Rate    = api.Rate{QPS: 10, Burst: 20}
	DefaultCacheTTL   = 10 * time.Minute
	DefaultGCInterval = 10 * time.Minute
)

var (
	regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	tagValue      = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

// Validate checks the section; errors name the field under path.
func (c *Config) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case c.ClusterName == "":
		errs = append(errs, field.Required(path.Child("clusterName"), "names the cluster in the ownership tags"))
	case len(c.ClusterName) > 128 || !tagValue.MatchString(c.ClusterName) || strings.ContainsAny(c.ClusterName, " /"):
		errs = append(errs, field.Invalid(path.Child("clusterName"), c.ClusterName, "must be a valid tag key part: letters, digits and _.:=+-@, at most 128"))
	}
	if c.Region != "" && !regionPattern.MatchString(c.Region) {
		errs = append(errs, field.Invalid(path.Child("region"), c.Region, "not an AWS region like eu-west-1"))
	}
	if c.VPCID != "" && !strings.HasPrefix(c.VPCID, "vpc-") {
		errs = append(errs, field.Invalid(path.Child("vpcID"), c.VPCID, "not a VPC ID (vpc-…)"))
	}
	for i, g := range c.NodeSecurityGroups {
		if !strings.HasPrefix(g, "sg-") {
			errs = append(errs, field.Invalid(path.Child("nodeSecurityGroups").Index(i), g, "not a security group ID (sg-…)"))
		}
	}
	for k, v := range c.Tags {
		if len(k) == 0 || len(k) > 128 || len(v) > 256 || strings.HasPrefix(strings.ToLower(k), "aws:") || !tagValue.MatchString(k) || !tagValue.MatchString(v) {
			errs = append(errs, field.Invalid(path.Child("tags").Key(k), v, "not a valid AWS tag (key 1-128, value up to 256 characters, no aws: prefix)"))
		}
	}
	for name, endpoint := range map[string]string{"elbv2": c.Endpoints.ELBv2, "ec2": c.Endpoints.EC2, "metadata": c.Endpoints.Metadata} {
		if endpoint == "" {
			continue
		}
		if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, field.Invalid(path.Child("endpoints", name), endpoint, "not an http(s) URL"))
		}
	}
	for name, r := range map[string]*api.Rate{"elbv2": c.RateLimits.ELBv2, "ec2": c.RateLimits.EC2} {
		if r != nil && (r.QPS <= 0 || r.Burst < 1) {
			errs = append(errs, field.Invalid(path.Child("rateLimits", name), *r, "qps must be positive and burst at least 1"))
		}
	}
	if _, err := c.portRange(); err != nil {
		errs = append(errs, field.Invalid(path.Child("nodePortRange"), c.NodePortRange, err.Error()))
	}
	if c.CacheTTL.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("cacheTTL"), c.CacheTTL.String(), "must not be negative"))
	}
	if c.Retry.MaxAttempts < 0 {
		errs = append(errs, field.Invalid(path.Child("retry", "maxAttempts"), c.Retry.MaxAttempts, "must not be negative"))
	}
	if c.Retry.MaxBackoff.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("retry", "maxBackoff"), c.Retry.MaxBackoff.String(), "must not be negative"))
	}
	if c.GCInterval.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("gcInterval"), c.GCInterval.String(), "must not be negative"))
	}
	return errs
}

// APIConfig turns the section into the api package's configuration.
func (c *Config) APIConfig(region string) api.Config {
	cfg := api.Config{Region: region, ELBv2Endpoint: c.Endpoints.ELBv2, EC2Endpoint: c.Endpoints.EC2,
		ELBv2Rate: DefaultELBv2Rate, EC2Rate: DefaultEC2Rate, MaxAttempts: cmp.Or(c.Retry.MaxAttempts, 10),
		MaxBackoff: c.Retry.MaxBackoff.Duration}
	if c.RateLimits.ELBv2 != nil {
		cfg.ELBv2Rate = *c.RateLimits.ELBv2
	}
	if c.RateLimits.EC2 != nil {
		cfg.EC2Rate = *c.RateLimits.EC2
	}
	return cfg
}

// portRange parses NodePortRange.
func (c *Config) portRange() (build.PortRange, error) {
	if c.NodePortRange == "" {
		return build.DefaultNodePortRange, nil
	}
	from, to, ok := strings.Cut(c.NodePortRange, "-")
	f, ferr := strconv.Atoi(strings.TrimSpace(from))
	t, terr := strconv.Atoi(strings.TrimSpace(to))
	if !ok || ferr != nil || terr != nil || f < 1 || t > 65535 || f > t {
		return build.PortRange{}, fmt.Errorf("not a port range like 30000-32767")
	}
	return build.PortRange{From: int32(f), To: int32(t)}, nil
}
