package main

import (
	"context"
	"fmt"
	"maps"
	"time"

	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
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

// controllerInitializers are upstream's controllers with herald's Service
// controllers in place of upstream's service-lb-controller: under that
// name for Services without a class, so --controllers flags written for it
// keep working, and as herald-class-controller for herald's class. Each
// gets its own client name, so its requests and RBAC are attributable.
// Upstream's map is cloned, never changed.
func controllerInitializers(opts *heraldOptions) map[string]app.ControllerInitFuncConstructor {
	initializers := maps.Clone(app.DefaultInitFuncConstructors)
	initializers[provider.ClasslessControllerName] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "herald-service-controller"},
		Constructor: serviceController(provider.Classless, opts),
	}
	initializers[provider.ClassControllerName] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "herald-class-controller"},
		Constructor: serviceController(provider.Classed, opts),
	}
	return initializers
}

func serviceController(scope provider.Scope, opts *heraldOptions) app.InitFuncConstructor {
	return func(initContext app.ControllerInitContext, cfg *cloudcontrollerconfig.CompletedConfig, cloud cloudprovider.Interface) app.InitFunc {
		return func(ctx context.Context, _ controllermanagerapp.ControllerContext) (controller.Interface, bool, error) {
			if scope == provider.Classless && opts.classOnly {
				klog.InfoS("Not serving Services without a class: --load-balancer-class-only leaves them alone")
				return nil, false, nil
			}
			p, ok := cloud.(*provider.Provider)
			if !ok {
				return nil, false, fmt.Errorf("herald's Service controllers need the herald provider, got %T", cloud)
			}
			client, err := cfg.ClientBuilder.Client(initContext.ClientName)
			if err != nil {
				return nil, false, err
			}
			informers := cfg.SharedInformers.Core().V1()
			c, err := provider.NewServiceController(p, client, scope, informers.Services(), informers.Nodes(), informers.Namespaces())
			if err != nil {
				return nil, false, err
			}
			go c.Run(ctx, int(cfg.ComponentConfig.ServiceController.ConcurrentServiceSyncs))
			return nil, true, nil
		}
	}
}
