// Command herald-ccm is herald's cloud-controller-manager: the standard
// k8s.io/cloud-provider controller manager with the "herald" provider, whose
// backend (bare-metal or aws) the --cloud-config file selects.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/component-base/metrics/legacyregistry"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // build info on /metrics
	"k8s.io/component-base/version/verflag"
	"k8s.io/klog/v2"

	awsbackend "github.com/heraldlb/herald/aws"
	"github.com/heraldlb/herald/aws/api"
	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

func main() {
	os.Exit(run())
}

func run() int {
	opts := &heraldOptions{}
	cloudprovider.RegisterCloudProvider(provider.Name, func(config io.Reader) (cloudprovider.Interface, error) {
		return newProvider(config, opts)
	})

	ccmOptions, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		fmt.Fprintf(os.Stderr, "herald-ccm: %v\n", err)
		return 1
	}
	ccmOptions.KubeCloudShared.CloudProvider.Name = provider.Name
	command := app.NewCloudControllerManagerCommand(ccmOptions, initCloud, controllerInitializers(opts),
		names.CCMControllerAliases(), opts.flags(), wait.NeverStop)
	command.Use = "herald-ccm"
	// Check the cloud config before the controller manager connects
	// anywhere, so a broken file fails fast with the field it gets wrong.
	command.PreRunE = func(cmd *cobra.Command, _ []string) error {
		// --version needs no cloud config.
		verflag.PrintAndExitIfRequested()
		err := checkCloudFlags(ccmOptions.KubeCloudShared.CloudProvider.Name, ccmOptions.KubeCloudShared.CloudProvider.CloudConfigFile)
		if err != nil {
			// Plainly, for a human: the structured log line escapes quotes.
			fmt.Fprintf(cmd.ErrOrStderr(), "herald-ccm: %v\n", err)
		}
		return err
	}
	command.SilenceUsage = true
	return cli.Run(command)
}

func checkCloudFlags(name, configFile string) error {
	if name != provider.Name {
		return fmt.Errorf("--cloud-provider=%q: herald-ccm only runs the %q provider", name, provider.Name)
	}
	if configFile == "" {
		return errNoCloudConfig
	}
	f, err := os.Open(configFile)
	if err != nil {
		return fmt.Errorf("--cloud-config: %w", err)
	}
	defer f.Close()
	if _, err := parseCloudConfig(f); err != nil {
		return fmt.Errorf("--cloud-config=%s: %w", configFile, err)
	}
	return nil
}

// newProvider is the factory registered as "herald"; it runs after the
// flags are parsed.
func newProvider(config io.Reader, opts *heraldOptions) (cloudprovider.Interface, error) {
	cfg, err := parseCloudConfig(config)
	if err != nil {
		return nil, err
	}
	// herald-ccm's /metrics serves the legacy registry's Gatherer.
	reg := legacyregistry.Registerer()
	var backend provider.Backend
	if cfg.backend == backendAWS {
		backend, err = newAWSBackend(context.Background(), cfg.aws, opts)
	} else {
		backend, err = baremetal.New(cfg.pools, reg)
	}
	if err != nil {
		return nil, err
	}
	p, err := provider.New(backend, service.Selection{ClassOnly: opts.classOnly}, reg)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// newAWSBackend builds the AWS backend, asking the instance metadata
// service (IMDSv2) for the region and VPC the config leaves out.
func newAWSBackend(ctx context.Context, cfg *awsbackend.Config, opts *heraldOptions) (*awsbackend.Backend, error) {
	region, vpcID := cfg.Region, cfg.VPCID
	if region == "" || vpcID == "" {
		identity, err := api.DiscoverIdentity(ctx, cfg.Endpoints.Metadata)
		if err != nil {
			return nil, fmt.Errorf("aws.region and aws.vpcID are not set and the instance metadata service did not answer: %w", err)
		}
		region, vpcID = cmp.Or(region, identity.Region), cmp.Or(vpcID, identity.VPCID)
	}
	clients, err := api.New(ctx, cfg.APIConfig(region))
	if err != nil {
		return nil, err
	}
	return awsbackend.New(cfg, region, vpcID, clients, awsbackend.Options{GCDelete: opts.awsGCDelete, GCInterval: opts.awsGCInterval}), nil
}

// initCloud builds the provider. The flags were checked before this runs,
// so failing here means the file changed in between: exit with the reason.
func initCloud(c *cloudcontrollerconfig.CompletedConfig) cloudprovider.Interface {
	shared := c.ComponentConfig.KubeCloudShared.CloudProvider
	cloud, err := cloudprovider.InitCloudProvider(shared.Name, shared.CloudConfigFile)
	if err != nil || cloud == nil {
		klog.ErrorS(err, "Cloud provider could not be initialized", "provider", shared.Name, "config", shared.CloudConfigFile)
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	return cloud
}
