package awsfake

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
)

func listenerNode(l *listener) *node {
	var certs []*node
	for _, c := range l.certs {
		certs = append(certs, el("", leaf("CertificateArn", c)))
	}
	n := el("", leaf("ListenerArn", l.arn), leaf("LoadBalancerArn", l.lb), leaf("Port", strconv.Itoa(l.port)),
		leaf("Protocol", l.protocol),
		list("DefaultActions", "member", []*node{el("", leaf("Type", "forward"), leaf("TargetGroupArn", l.tg))}))
	if len(certs) > 0 {
		n.children = append(n.children, list("Certificates", "member", certs))
	}
	if l.policy != "" {
		n.children = append(n.children, leaf("SslPolicy", l.policy))
	}
	return n
}

// readListener parses the fields CreateListener and ModifyListener share.
func (s *Server) readListener(p url.Values, l *listener) *Error {
	if v := p.Get("Port"); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			return errorf("ValidationError", "Port '%s' is not valid", v)
		}
		l.port = port
	}
	if v := p.Get("Protocol"); v != "" {
		if !slices.Contains([]string{"TCP", "UDP", "TCP_UDP", "TLS"}, v) {
			return errorf("UnsupportedProtocol", "Protocol '%s' is not supported by network load balancers", v)
		}
		l.protocol = v
	}
	if p.Get("DefaultActions.member.1.Type") != "" {
		if p.Get("DefaultActions.member.1.Type") != "forward" {
			return errorf("InvalidLoadBalancerAction", "network load balancers only forward")
		}
		tg, ok := s.tgs[p.Get("DefaultActions.member.1.TargetGroupArn")]
		if !ok {
			return errorf("TargetGroupNotFound", "Target group '%s' not found", p.Get("DefaultActions.member.1.TargetGroupArn"))
		}
		tlsOverTCP := l.protocol == "TLS" && tg.protocol == "TCP"
		if tg.protocol != l.protocol && !tlsOverTCP {
			return errorf("IncompatibleProtocols", "The listener protocol '%s' is not compatible with target group protocol '%s'", l.protocol, tg.protocol)
		}
		for _, other := range s.listeners {
			// NLB: a target group serves one load balancer.
			if other.tg == tg.arn && other.lb != l.lb {
				return errorf("TargetGroupAssociationLimit", "The target group '%s' is already associated with another load balancer", tg.arn)
			}
		}
		l.tg = tg.arn
	}
	var certs []string
	for _, pre := range structs(p, "Certificates.member") {
		certs = append(certs, p.Get(pre+"CertificateArn"))
	}
	if certs != nil {
		l.certs = certs
	}
	if v := p.Get("SslPolicy"); v != "" {
		l.policy = v
	}
	if l.protocol == "TLS" && len(l.certs) == 0 {
		return errorf("ValidationError", "A certificate must be specified for TLS listeners")
	}
	return nil
}

func (s *Server) createListener(p url.Values) (*node, *Error) {
	lbARN := p.Get("LoadBalancerArn")
	if _, ok := s.lbs[lbARN]; !ok {
		return nil, errorf("LoadBalancerNotFound", "Load balancer '%s' not found", lbARN)
	}
	l := &listener{lb: lbARN}
	if err := s.readListener(p, l); err != nil {
		return nil, err
	}
	if _, err := requestTags(p); err != nil {
		return nil, err
	}
	for _, other := range s.listeners {
		if other.lb == lbARN && other.port == l.port {
			if other.protocol == l.protocol && other.tg == l.tg && slices.Equal(other.certs, l.certs) && other.policy == l.policy {
				return el("", list("Listeners", "member", []*node{listenerNode(other)})), nil
			}
			return nil, errorf("DuplicateListener", "A listener already exists on port %d", l.port)
		}
	}
	l.arn = s.arn("listener/net", s.lbs[lbARN].name)
	s.listeners[l.arn] = l
	return el("", list("Listeners", "member", []*node{listenerNode(l)})), nil
}

func (s *Server) modifyListener(p url.Values) (*node, *Error) {
	l, ok := s.listeners[p.Get("ListenerArn")]
	if !ok {
		return nil, errorf("ListenerNotFound", "Listener '%s' not found", p.Get("ListenerArn"))
	}
	changed := *l
	if err := s.readListener(p, &changed); err != nil {
		return nil, err
	}
	for _, other := range s.listeners {
		if other.arn != l.arn && other.lb == l.lb && other.port == changed.port {
			return nil, errorf("DuplicateListener", "A listener already exists on port %d", changed.port)
		}
	}
	*l = changed
	return el("", list("Listeners", "member", []*node{listenerNode(l)})), nil
}

func (s *Server) deleteListener(p url.Values) (*node, *Error) {
	if _, ok := s.listeners[p.Get("ListenerArn")]; !ok {
		return nil, errorf("ListenerNotFound", "Listener '%s' not found", p.Get("ListenerArn"))
	}
	delete(s.listeners, p.Get("ListenerArn"))
	return nil, nil
}

func (s *Server) describeListeners(p url.Values) (*node, *Error) {
	lbARN := p.Get("LoadBalancerArn")
	if _, ok := s.lbs[lbARN]; lbARN != "" && !ok {
		return nil, errorf("LoadBalancerNotFound", "Load balancer '%s' not found", lbARN)
	}
	arns := members(p, "ListenerArns", false)
	var ids []string
	for _, id := range sortedKeys(s.listeners) {
		if (lbARN == "" || s.listeners[id].lb == lbARN) && (len(arns) == 0 || slices.Contains(arns, id)) {
			ids = append(ids, id)
		}
	}
	if len(ids) < len(arns) {
		return nil, errorf("ListenerNotFound", "One or more listeners not found")
	}
	pageIDs, next := page(ids, p.Get("Marker"), s.PageSize)
	var items []*node
	for _, id := range pageIDs {
		items = append(items, listenerNode(s.listeners[id]))
	}
	out := el("", list("Listeners", "member", items))
	if next != "" {
		out.children = append(out.children, leaf("NextMarker", next))
	}
	return out, nil
}

func (s *Server) tgNode(tg *targetGroup) *node {
	var lbs []*node
	seen := map[string]bool{}
	for _, id := range sortedKeys(s.listeners) {
		if l := s.listeners[id]; l.tg == tg.arn && !seen[l.lb] {
			seen[l.lb] = true
			lbs = append(lbs, leaf("", l.lb))
		}
	}
	hc := tg.hc
	n := el("", leaf("TargetGroupArn", tg.arn), leaf("TargetGroupName", tg.name), leaf("Protocol", tg.protocol),
		leaf("Port", strconv.Itoa(tg.port)), leaf("VpcId", tg.vpc), leaf("TargetType", tg.targetType),
		leaf("IpAddressType", tg.ipType), leaf("HealthCheckEnabled", "true"),
		leaf("HealthCheckProtocol", hc.protocol), leaf("HealthCheckPort", hc.port),
		leaf("HealthCheckIntervalSeconds", hc.interval), leaf("HealthCheckTimeoutSeconds", hc.timeout),
		leaf("HealthyThresholdCount", hc.healthy), leaf("UnhealthyThresholdCount", hc.unhealthy),
		list("LoadBalancerArns", "member", lbs))
	if hc.path != "" {
		n.children = append(n.children, leaf("HealthCheckPath", hc.path))
	}
	return n
}

// readHealthCheck applies the health-check fields of p to hc, with NLB's limits.
func readHealthCheck(p url.Values, hc *healthCheck) *Error {
	set := func(field *string, key string, lo, hi int) *Error {
		v := p.Get(key)
		if v == "" {
			return nil
		}
		if n, err := strconv.Atoi(v); err != nil || n < lo || n > hi {
			return errorf("ValidationError", "%s '%s' is not between %d and %d", key, v, lo, hi)
		}
		*field = v
		return nil
	}
	if v := p.Get("HealthCheckProtocol"); v != "" {
		if !slices.Contains([]string{"TCP", "HTTP", "HTTPS"}, v) {
			return errorf("ValidationError", "Health check protocol '%s' is not supported", v)
		}
		hc.protocol = v
	}
	if v := p.Get("HealthCheckPort"); v != "" {
		if n, err := strconv.Atoi(v); v != "traffic-port" && (err != nil || n < 1 || n > 65535) {
			return errorf("ValidationError", "Health check port '%s' is not valid", v)
		}
		hc.port = v
	}
	hc.path = p.Get("HealthCheckPath")
	if hc.protocol == "TCP" && hc.path != "" {
		return errorf("InvalidConfigurationRequest", "A path cannot be set for TCP health checks")
	}
	for _, f := range []struct {
		field  *string
		key    string
		lo, hi int
	}{
		{&hc.interval, "HealthCheckIntervalSeconds", 5, 300},
		{&hc.timeout, "HealthCheckTimeoutSeconds", 2, 120},
		{&hc.healthy, "HealthyThresholdCount", 2, 10},
		{&hc.unhealthy, "UnhealthyThresholdCount", 2, 10},
	} {
		if err := set(f.field, f.key, f.lo, f.hi); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) createTargetGroup(p url.Values) (*node, *Error) {
	name := p.Get("Name")
	if !validName(name) {
		return nil, errorf("ValidationError", "Target group name '%s' is not valid", name)
	}
	port, err := strconv.Atoi(p.Get("Port"))
	if err != nil || port < 1 || port > 65535 {
		return nil, errorf("ValidationError", "Port '%s' is not valid", p.Get("Port"))
	}
	protocol := p.Get("Protocol")
	if !slices.Contains([]string{"TCP", "UDP", "TCP_UDP", "TLS"}, protocol) {
		return nil, errorf("ValidationError", "Protocol '%s' is not valid for a network load balancer target group", protocol)
	}
	if p.Get("VpcId") != s.vpcID {
		return nil, errorf("ValidationError", "The VPC ID '%s' is not found", p.Get("VpcId"))
	}
	want := &targetGroup{name: name, protocol: protocol, port: port, vpc: p.Get("VpcId"),
		targetType: cmpOr(p.Get("TargetType"), "instance"), ipType: cmpOr(p.Get("IpAddressType"), "ipv4"),
		hc: healthCheck{protocol: "TCP", port: "traffic-port", interval: "30", timeout: "10", healthy: "5", unhealthy: "2"},
		attrs: map[string]string{"deregistration_delay.timeout_seconds": "300", "deregistration_delay.connection_termination.enabled": "false",
			"preserve_client_ip.enabled": "true", "proxy_protocol_v2.enabled": "false", "stickiness.enabled": "false",
			"stickiness.type": "source_ip", "load_balancing.cross_zone.enabled": "use_load_balancer_configuration",
			"target_health_state.unhealthy.connection_termination.enabled":                   "true",
			"target_health_state.unhealthy.draining_interval_seconds":                        "0",
			"target_group_health.dns_failover.minimum_healthy_targets.count":                 "off",
			"target_group_health.dns_failover.minimum_healthy_targets.percentage":            "off",
			"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count":      "1",
			"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": "off"},
		targets: map[string]*target{}}
	if err := readHealthCheck(p, &want.hc); err != nil {
		return nil, err
	}
	tags, terr := requestTags(p)
	if terr != nil {
		return nil, terr
	}
	for _, tg := range s.tgs {
		if tg.name != name {
			continue
		}
		if tg.protocol == want.protocol && tg.port == want.port && tg.vpc == want.vpc && tg.targetType == want.targetType && tg.hc == want.hc {
			return el("", list("TargetGroups", "member", []*node{s.tgNode(tg)})), nil
		}
		return nil, errorf("DuplicateTargetGroupName", "A target group with the same name '%s' exists, but with different settings", name)
	}
	want.arn = s.arn("targetgroup", name)
	want.tags = tags
	s.tgs[want.arn] = want
	return el("", list("TargetGroups", "member", []*node{s.tgNode(want)})), nil
}

func (s *Server) targetGroup(p url.Values) (*targetGroup, *Error) {
	tg, ok := s.tgs[p.Get("TargetGroupArn")]
	if !ok {
		return nil, errorf("TargetGroupNotFound", "Target group '%s' not found", p.Get("TargetGroupArn"))
	}
	return tg, nil
}

func (s *Server) modifyTargetGroup(p url.Values) (*node, *Error) {
	tg, err := s.targetGroup(p)
	if err != nil {
		return nil, err
	}
	hc := tg.hc
	if err := readHealthCheck(p, &hc); err != nil {
		return nil, err
	}
	tg.hc = hc
	return el("", list("TargetGroups", "member", []*node{s.tgNode(tg)})), nil
}

func (s *Server) deleteTargetGroup(p url.Values) (*node, *Error) {
	arn := p.Get("TargetGroupArn")
	for _, l := range s.listeners {
		if l.tg == arn {
			return nil, errorf("ResourceInUse", "Target group '%s' is currently in use by a listener or a rule", arn)
		}
	}
	delete(s.tgs, arn) // a missing one is no error (none is declared for it)
	return nil, nil
}

func (s *Server) describeTargetGroups(p url.Values) (*node, *Error) {
	lbARN, names, arns := p.Get("LoadBalancerArn"), members(p, "Names", false), members(p, "TargetGroupArns", false)
	if _, ok := s.lbs[lbARN]; lbARN != "" && !ok {
		return nil, errorf("LoadBalancerNotFound", "Load balancer '%s' not found", lbARN)
	}
	var ids []string
	for _, id := range sortedKeys(s.tgs) {
		tg := s.tgs[id]
		if (len(names) == 0 || slices.Contains(names, tg.name)) && (len(arns) == 0 || slices.Contains(arns, id)) &&
			(lbARN == "" || s.attachedTo(id, lbARN)) {
			ids = append(ids, id)
		}
	}
	if len(ids) < len(names)+len(arns) {
		return nil, errorf("TargetGroupNotFound", "One or more target groups not found")
	}
	size := s.PageSize
	if ps, err := strconv.Atoi(p.Get("PageSize")); err == nil && ps < size {
		size = ps
	}
	pageIDs, next := page(ids, p.Get("Marker"), size)
	var items []*node
	for _, id := range pageIDs {
		items = append(items, s.tgNode(s.tgs[id]))
	}
	out := el("", list("TargetGroups", "member", items))
	if next != "" {
		out.children = append(out.children, leaf("NextMarker", next))
	}
	return out, nil
}

func (s *Server) attachedTo(tgARN, lbARN string) bool {
	for _, l := range s.listeners {
		if l.tg == tgARN && l.lb == lbARN {
			return true
		}
	}
	return false
}

func (s *Server) describeTargetGroupAttributes(p url.Values) (*node, *Error) {
	tg, err := s.targetGroup(p)
	if err != nil {
		return nil, err
	}
	return el("", attributeList(tg.attrs)), nil
}

func (s *Server) modifyTargetGroupAttributes(p url.Values) (*node, *Error) {
	tg, err := s.targetGroup(p)
	if err != nil {
		return nil, err
	}
	attrs, aerr := readAttributes(p, tg.attrs)
	if aerr != nil {
		return nil, aerr
	}
	maps.Copy(tg.attrs, attrs)
	return el("", attributeList(tg.attrs)), nil
}

func readTargets(p url.Values, tg *targetGroup) []*target {
	var out []*target
	for _, pre := range structs(p, "Targets.member") {
		port, err := strconv.Atoi(p.Get(pre + "Port"))
		if err != nil {
			port = tg.port
		}
		out = append(out, &target{id: p.Get(pre + "Id"), port: port})
	}
	return out
}

func targetKey(t *target) string { return t.id + ":" + strconv.Itoa(t.port) }

func (s *Server) registerTargets(p url.Values) (*node, *Error) {
	tg, err := s.targetGroup(p)
	if err != nil {
		return nil, err
	}
	targets := readTargets(p, tg)
	if len(targets) == 0 {
		return nil, errorf("ValidationError", "Targets must not be empty")
	}
	for _, t := range targets {
		in, ok := s.instances[t.id]
		if !ok || in.State != "running" {
			return nil, errorf("InvalidTarget", "The following targets are not in a running state and cannot be registered: '%s'", t.id)
		}
	}
	for _, t := range targets {
		if _, ok := tg.targets[targetKey(t)]; !ok {
			tg.targets[targetKey(t)] = t
		}
	}
	return nil, nil
}

func (s *Server) deregisterTargets(p url.Values) (*node, *Error) {
	tg, err := s.targetGroup(p)
	if err != nil {
		return nil, err
	}
	for _, t := range readTargets(p, tg) {
		if _, ok := tg.targets[targetKey(t)]; !ok {
			return nil, errorf("InvalidTarget", "The target '%s' is not registered", t.id)
		}
		delete(tg.targets, targetKey(t))
	}
	return nil, nil
}

// describeTargetHealth reports a new target as initial the first time it
// is described and healthy afterwards, as AWS does once checks pass.
func (s *Server) describeTargetHealth(p url.Values) (*node, *Error) {
	tg, err := s.targetGroup(p)
	if err != nil {
		return nil, err
	}
	var items []*node
	for _, k := range sortedKeys(tg.targets) {
		t := tg.targets[k]
		t.describes++
		state := "healthy"
		switch {
		case s.instances[t.id] == nil || s.instances[t.id].State != "running":
			state = "unused"
		case len(s.listenersOf(tg.arn)) == 0:
			state = "unused"
		case t.describes == 1:
			state = "initial"
		}
		items = append(items, el("", el("Target", leaf("Id", t.id), leaf("Port", strconv.Itoa(t.port))),
			el("TargetHealth", leaf("State", state))))
	}
	return el("", list("TargetHealthDescriptions", "member", items)), nil
}

func (s *Server) listenersOf(tgARN string) []string {
	var out []string
	for id, l := range s.listeners {
		if l.tg == tgARN {
			out = append(out, id)
		}
	}
	return out
}
