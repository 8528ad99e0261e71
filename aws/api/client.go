package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/smithy-go/middleware"
)

// Families of AWS APIs, each with its own budget (AWS throttles them apart).
const (
	FamilyELBv2 = "elbv2"
	FamilyEC2   = "ec2"
)

// Config says how to reach AWS.
type Config struct {
	Region string
	// ELBv2Endpoint and EC2Endpoint override the regional endpoints
	// (VPC endpoints, or a test double); empty means AWS's.
	ELBv2Endpoint, EC2Endpoint string
	ELBv2Rate, EC2Rate         Rate
	// MaxAttempts per call, the first included; MaxBackoff caps the
	// jittered exponential wait between attempts.
	MaxAttempts int
	MaxBackoff  time.Duration
	// HTTPClient is used instead of the SDK's default when set.
	HTTPClient *http.Client
	// Credentials replace the SDK's default chain (environment, IRSA or
	// EKS Pod Identity, instance profile) when set.
	Credentials aws.CredentialsProvider
}

// Clients are the narrow AWS interfaces herald uses.
type Clients struct {
	ELB ELB
	EC2 EC2
	// Budgets are exposed for tests and metrics.
	ELBBudget, EC2Budget *Budget
}

// New builds the clients. Credentials come from the SDK's default chain
// unless cfg.Credentials is set.
func New(ctx context.Context, cfg Config) (*Clients, error) {
	if cfg.Region == "" {
		return nil, errors.New("no AWS region")
	}
	options := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region)}
	if cfg.Credentials != nil {
		options = append(options, awsconfig.WithCredentialsProvider(cfg.Credentials))
	}
	if cfg.HTTPClient != nil {
		options = append(options, awsconfig.WithHTTPClient(cfg.HTTPClient))
	}
	base, err := awsconfig.LoadDefaultConfig(ctx, options...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	elbBudget, err := NewBudget(FamilyELBv2, cfg.ELBv2Rate)
	if err != nil {
		return nil, err
	}
	ec2Budget, err := NewBudget(FamilyEC2, cfg.EC2Rate)
	if err != nil {
		return nil, err
	}
	elbClient := elbv2.NewFromConfig(base, func(o *elbv2.Options) {
		o.Retryer = retryer(cfg)
		o.APIOptions = append(o.APIOptions, instrument(FamilyELBv2, elbBudget))
		if cfg.ELBv2Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.ELBv2Endpoint)
		}
	})
	ec2Client := ec2.NewFromConfig(base, func(o *ec2.Options) {
		o.Retryer = retryer(cfg)
		o.APIOptions = append(o.APIOptions, instrument(FamilyEC2, ec2Budget))
		if cfg.EC2Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.EC2Endpoint)
		}
	})
	return &Clients{ELB: &elbAPI{c: elbClient}, EC2: &ec2API{c: ec2Client}, ELBBudget: elbBudget, EC2Budget: ec2Budget}, nil
}

// retryer retries throttling, 5xx and transient network errors with
// jittered exponential backoff. The SDK's own retry quota is off: the
// shared Budget already paces every attempt, and a quota that runs dry in
// a throttling storm would turn a slow convergence into failures.
func retryer(cfg Config) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		if cfg.MaxAttempts > 0 {
			o.MaxAttempts = cfg.MaxAttempts
		}
		if cfg.MaxBackoff > 0 {
			o.MaxBackoff = cfg.MaxBackoff
		}
		o.RateLimiter = ratelimit.None
	})
}

// instrument adds the budget (per attempt, after the retry middleware, so
// retries pay too) and the call metrics (per call).
func instrument(family string, budget *Budget) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		perAttempt := middleware.FinalizeMiddlewareFunc("HeraldBudget", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			if err := budget.Wait(ctx); err != nil {
				return middleware.FinalizeOutput{}, middleware.Metadata{}, err
			}
			out, md, err := next.HandleFinalize(ctx, in)
			switch {
			case err == nil:
				budget.Succeeded()
			case isThrottle(err):
				budget.Throttled()
			}
			return out, md, err
		})
		if err := stack.Finalize.Insert(perAttempt, "Retry", middleware.After); err != nil {
			return err
		}
		perCall := middleware.InitializeMiddlewareFunc("HeraldMetrics", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			outcome := "success"
			if err != nil {
				outcome = cmpOr(ErrorCode(err), "error")
			}
			callsTotal.WithLabelValues(family, awsmiddleware.GetOperationName(ctx), outcome).Inc()
			return out, md, err
		})
		return stack.Initialize.Add(perCall, middleware.Before)
	}
}

func isThrottle(err error) bool {
	switch ErrorCode(err) {
	case "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled":
		return true
	}
	return false
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
