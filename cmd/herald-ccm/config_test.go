package main

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCloudConfig(t *testing.T) {
	tests := []struct {
		name      string
		config    string
		wantErr   string // substring naming the field at fault
		wantPools int
	}{
		{name: "minimal", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [198.51.100.0/28]\n", wantPools: 1},
		{name: "ranges and v6", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [\"198.51.100.1-198.51.100.9\", \"2001:db8::/120\"]\n  - name: b\n    addresses: [203.0.113.0/24]\n    autoAssign: false\n", wantPools: 2},
		{name: "empty file", config: "  \n", wantErr: "--cloud-config is required"},
		{name: "not yaml", config: "backend: [", wantErr: "not YAML"},
		{name: "unknown top-level field", config: "backend: bare-metal\nbackedn: x\n", wantErr: `unknown field "backedn"`},
		{name: "unknown nested field", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    adresses: []\n", wantErr: `unknown field "bareMetal.pools[0].adresses"`},
		{name: "wrong type", config: "backend: bare-metal\nbareMetal:\n  pools: 3\n", wantErr: "pools"},
		{name: "no backend", config: "bareMetal: {}\n", wantErr: "backend: Required value"},
		{name: "unknown backend", config: "backend: gce\n", wantErr: `backend: Unsupported value: "gce"`},
		{name: "aws without section", config: "backend: aws\n", wantErr: "aws: Required value"},
		{name: "aws without cluster", config: "backend: aws\naws: {region: eu-west-1}\n", wantErr: "aws.clusterName: Required value"},
		{name: "aws bad region", config: "backend: aws\naws: {clusterName: prod, region: Ireland}\n", wantErr: `aws.region: Invalid value: "Ireland"`},
		{name: "aws bad vpc", config: "backend: aws\naws: {clusterName: prod, vpcID: net-1}\n", wantErr: `aws.vpcID: Invalid value: "net-1"`},
		{name: "aws bad node group", config: "backend: aws\naws: {clusterName: prod, nodeSecurityGroups: [sg-1, nodes]}\n", wantErr: `aws.nodeSecurityGroups[1]: Invalid value: "nodes"`},
		{name: "aws bad endpoint", config: "backend: aws\naws: {clusterName: prod, endpoints: {elbv2: 'localhost:1'}}\n", wantErr: "aws.endpoints.elbv2: Invalid value"},
		{name: "aws bad rate", config: "backend: aws\naws: {clusterName: prod, rateLimits: {ec2: {qps: 0, burst: 1}}}\n", wantErr: "aws.rateLimits.ec2: Invalid value"},
		{name: "aws bad node port range", config: "backend: aws\naws: {clusterName: prod, nodePortRange: 32767-30000}\n", wantErr: "aws.nodePortRange: Invalid value"},
		{name: "aws bad duration", config: "backend: aws\naws: {clusterName: prod, cacheTTL: soon}\n", wantErr: "not a duration"},
		{name: "aws reserved tag", config: "backend: aws\naws: {clusterName: prod, tags: {'aws:x': v}}\n", wantErr: "aws.tags[aws:x]: Invalid value"},
		{name: "aws unknown field", config: "backend: aws\naws: {clusterName: prod, vpc: vpc-1}\n", wantErr: `unknown field "aws.vpc"`},
		{name: "aws section with bare-metal", config: "backend: bare-metal\naws: {clusterName: prod}\n", wantErr: "aws: Forbidden"},
		{name: "pools from objects only", config: "backend: bare-metal\n", wantPools: 0},
		{name: "empty pool list", config: "backend: bare-metal\nbareMetal:\n  pools: []\n", wantPools: 0},
		{name: "pool without name", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - addresses: [198.51.100.0/28]\n", wantErr: "bareMetal.pools[0].name: Required value"},
		{name: "duplicate pool", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [198.51.100.0/28]\n  - name: a\n    addresses: [203.0.113.0/28]\n", wantErr: `bareMetal.pools[1].name: Duplicate value: "a"`},
		{name: "pool without addresses", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n", wantErr: "bareMetal.pools[0].addresses: Required value"},
		{name: "bad cidr", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [198.51.100.0/33]\n", wantErr: "bareMetal.pools[0].addresses[0]: Invalid value"},
		{name: "reversed range", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [198.51.100.0/28, \"198.51.100.20-198.51.100.19\"]\n", wantErr: "bareMetal.pools[0].addresses[1]: Invalid value"},
		{name: "negative priority", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [198.51.100.0/28]\n    priority: -1\n", wantErr: "bareMetal.pools[0].priority: Invalid value: -1"},
		{name: "overlap", config: "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [198.51.100.0/28]\n  - name: b\n    addresses: [198.51.100.8/29]\n", wantErr: "overlaps pool a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseCloudConfig(strings.NewReader(tt.config))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("error = %v", err)
			}
			if cfg.backend != backendBareMetal || len(cfg.pools) != tt.wantPools {
				t.Fatalf("config = %+v, want bare-metal with %d pools", cfg, tt.wantPools)
			}
		})
	}
}

func TestParseCloudConfigAWS(t *testing.T) {
	cfg, err := parseCloudConfig(strings.NewReader(`
backend: aws
aws:
  clusterName: prod
  region: eu-west-1
  vpcID: vpc-0123
  nodeSecurityGroups: [sg-0abc]
  tags: {team: net}
  endpoints: {elbv2: "http://127.0.0.1:4566", ec2: "http://127.0.0.1:4566"}
  rateLimits: {elbv2: {qps: 5, burst: 10}}
  cacheTTL: 5m
  gcInterval: 1m
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.backend != backendAWS || cfg.aws.ClusterName != "prod" || cfg.aws.CacheTTL.Minutes() != 5 || cfg.aws.RateLimits.ELBv2.QPS != 5 {
		t.Fatalf("config = %+v", cfg.aws)
	}
	apiCfg := cfg.aws.APIConfig("eu-west-1")
	if apiCfg.ELBv2Rate.Burst != 10 || apiCfg.EC2Rate.QPS == 0 || apiCfg.EC2Endpoint != "http://127.0.0.1:4566" {
		t.Fatalf("api config = %+v", apiCfg)
	}
}

func TestParseCloudConfigWithoutFile(t *testing.T) {
	if _, err := parseCloudConfig(nil); !errors.Is(err, errNoCloudConfig) {
		t.Fatalf("error = %v, want errNoCloudConfig", err)
	}
}

func TestCheckCloudFlags(t *testing.T) {
	if err := checkCloudFlags("aws", "x"); err == nil || !strings.Contains(err.Error(), "--cloud-provider") {
		t.Errorf("foreign provider: %v", err)
	}
	if err := checkCloudFlags("herald", ""); !errors.Is(err, errNoCloudConfig) {
		t.Errorf("no config: %v", err)
	}
	if err := checkCloudFlags("herald", "/nonexistent/cloud.yaml"); err == nil || !strings.Contains(err.Error(), "--cloud-config") {
		t.Errorf("missing file: %v", err)
	}
}
