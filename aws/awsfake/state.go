package awsfake

import (
	"fmt"
	"maps"
	"slices"
	"sort"
)

type state struct {
	vpcID     string
	ids       int
	subnets   map[string]*subnet
	groups    map[string]*securityGroup
	instances map[string]*Instance
	lbs       map[string]*loadBalancer
	listeners map[string]*listener
	tgs       map[string]*targetGroup
}

type subnet struct {
	id, zone, cidr string
	tags           map[string]string
}

// Instance is an EC2 instance the fake knows.
type Instance struct {
	ID, Zone, PrivateIP, PrivateDNS, PublicIP, Type string
	// State is running, stopped, terminated, ...
	State  string
	Groups []string
}

type loadBalancer struct {
	arn, name, dns, scheme, ipType, lbType string
	subnets                                []subnetMapping
	groups                                 []string
	tags, attrs                            map[string]string
	describes                              int
}

type subnetMapping struct{ subnet, allocation, privateIP string }

type listener struct {
	arn, lb, protocol, tg, policy string
	port                          int
	certs                         []string
}

type targetGroup struct {
	arn, name, protocol, targetType, ipType, vpc string
	port                                         int
	hc                                           healthCheck
	tags, attrs                                  map[string]string
	targets                                      map[string]*target
}

type healthCheck struct {
	protocol, port, path                  string
	interval, timeout, healthy, unhealthy string
}

type target struct {
	id        string
	port      int
	describes int
}

func newState() state {
	st := state{
		vpcID:     "vpc-0fake00000000000",
		subnets:   map[string]*subnet{},
		groups:    map[string]*securityGroup{},
		instances: map[string]*Instance{},
		lbs:       map[string]*loadBalancer{},
		listeners: map[string]*listener{},
		tgs:       map[string]*targetGroup{},
	}
	for i, zone := range []string{"a", "b", "c"} {
		id := "subnet-0fake" + zone
		st.subnets[id] = &subnet{id: id, zone: "eu-west-1" + zone, cidr: fmt.Sprintf("10.0.%d.0/24", i),
			tags: map[string]string{"Name": "public-" + zone, "kubernetes.io/role/elb": "1", "kubernetes.io/role/internal-elb": "1"}}
	}
	return st
}

func (st *state) newID(prefix string) string {
	st.ids++
	return fmt.Sprintf("%s%017x", prefix, st.ids)
}

// AddInstance makes an instance known (running unless State says otherwise).
func (s *Server) AddInstance(in Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in.State == "" {
		in.State = "running"
	}
	if in.Type == "" {
		in.Type = "m7i.large"
	}
	s.instances[in.ID] = &in
}

// SetInstanceState changes an instance's state (stopped, terminated, ...);
// "gone" removes it, as AWS does some time after termination.
func (s *Server) SetInstanceState(id, st string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == "gone" {
		delete(s.instances, id)
		return
	}
	if in, ok := s.instances[id]; ok {
		in.State = st
	}
}

// AddSecurityGroup creates a group outside herald (e.g. the nodes') and
// returns its ID.
func (s *Server) AddSecurityGroup(name string, tags map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("sg-")
	s.groups[id] = &securityGroup{id: id, name: name, description: name, vpc: s.vpcID, tags: maps.Clone(tags)}
	return id
}

// VPCID is the fake's one VPC.
func (s *Server) VPCID() string { return s.vpcID }

// Resource is something in the fake, for "nothing left" assertions.
type Resource struct {
	Kind, ID string
	Tags     map[string]string
}

// Resources lists load balancers, listeners, target groups, security
// groups (with their tags) and security-group rules (Kind "rule", ID
// "<group> <rule>", Tags {"description": …}).
func (s *Server) Resources() []Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Resource
	for _, lb := range s.lbs {
		out = append(out, Resource{Kind: "loadbalancer", ID: lb.arn, Tags: maps.Clone(lb.tags)})
	}
	for _, l := range s.listeners {
		out = append(out, Resource{Kind: "listener", ID: l.arn})
	}
	for _, tg := range s.tgs {
		out = append(out, Resource{Kind: "targetgroup", ID: tg.arn, Tags: maps.Clone(tg.tags)})
	}
	for _, g := range s.groups {
		out = append(out, Resource{Kind: "securitygroup", ID: g.id, Tags: maps.Clone(g.tags)})
		for _, r := range g.ingress {
			out = append(out, Resource{Kind: "rule", ID: g.id + " " + r.String(), Tags: map[string]string{"description": r.description}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind+out[i].ID < out[j].Kind+out[j].ID })
	return out
}

// Targets returns the instance IDs registered in the target group named name.
func (s *Server) Targets(tgName string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tg := range s.tgs {
		if tg.name == tgName {
			var ids []string
			for _, t := range tg.targets {
				ids = append(ids, t.id)
			}
			slices.Sort(ids)
			return ids
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.Sort(keys)
	return keys
}
