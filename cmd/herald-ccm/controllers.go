package main

import (
	"context"
	"fmt"
	"time"

	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	cliflag "k8s.io/component-base/cli/flag"
	controllermanagerapp "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider"
)

// heraldOptions are herald's flags beyond the standard CCM ones.
type heraldOptions struct {
	// classOnly leaves Services without a loadBalancerClass to another
	// implementation and handles only herald.dev/bare-metal.
	classOnly bool
	// awsGCDelete lets the AWS backend delete orphaned load balancers
	// instead of only reporting them; awsGCInterval overrides how often.
	awsGCDelete   bool
	awsGCInterval time.Duration
}

func (o *heraldOptions) flags() cliflag.NamedFlagSets {
	var sets cliflag.NamedFlagSets
	fs := sets.FlagSet("herald")
	fs.BoolVar(&o.classOnly, "load-balancer-class-only", false,
		"Handle only Services with spec.loadBalancerClass "+
			"herald.dev/bare-metal; without it, Services with no class are handled too. "+
			"Services of any other class are never touched.")
	fs.BoolVar(&o.awsGCDelete, "aws-gc-delete", false,
		"With backend aws: delete load balancers, target groups and security groups herald created for Services "+
			"that no longer exist. Without it they are only reported (log, metric herald_aws_orphaned_load_balancers).")
	fs.DurationVar(&o.awsGCInterval, "aws-gc-interval", 0,
		"With backend aws: how often to look for orphaned resources; 0 uses the cloud config's aws.gcInterval (default 10m).")
	return sets
}

// controllerInitializers are the upstream controllers plus herald's class
// controller. Each gets its own client name, so its requests and RBAC are
// attributable.
func controllerInitializers(opts *heraldOptions) map[string]app.ControllerInitFuncConstructor {
	initializers := app.DefaultInitFuncConstructors
	if c, ok := initializers[names.ServiceLBController]; ok {
		c.InitContext.ClientName = "herald-service-controller"
		upstream := c.Constructor
		c.Constructor = func(initContext app.ControllerInitContext, cfg *cloudcontrollerconfig.CompletedConfig, cloud cloudprovider.Interface) app.InitFunc {
			if opts.classOnly {
				return func(context.Context, controllermanagerapp.ControllerContext) (controller.Interface, bool, error) {
					klog.InfoS("Not starting the upstream service controller: --load-balancer-class-only leaves Services without a class alone")
					return nil, false, nil
				}
			}
			return upstream(initContext, cfg, cloud)
		}
		initializers[names.ServiceLBController] = c
	}
	initializers[provider.ClassControllerName] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "herald-class-controller"},
		Constructor: startClassController,
	}
	return initializers
}

func startClassController(initContext app.ControllerInitContext, cfg *cloudcontrollerconfig.CompletedConfig, cloud cloudprovider.Interface) app.InitFunc {
	return func(ctx context.Context, _ controllermanagerapp.ControllerContext) (controller.Interface, bool, error) {
		p, ok := cloud.(*provider.Provider)
		if !ok {
			return nil, false, fmt.Errorf("%s needs the herald provider, got %T", provider.ClassControllerName, cloud)
		}
		client, err := cfg.ClientBuilder.Client(initContext.ClientName)
		if err != nil {
			return nil, false, err
		}
		informers := cfg.SharedInformers.Core().V1()
		c, err := provider.NewClassController(p, client, informers.Services(), informers.Nodes())
		if err != nil {
			return nil, false, err
		}
		go c.Run(ctx, int(cfg.ComponentConfig.ServiceController.ConcurrentServiceSyncs))
		return nil, true, nil
	}
}
