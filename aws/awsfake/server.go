// Package awsfake is an in-process AWS of ELBv2 and EC2 for tests: it
// speaks the Query protocols over HTTP, so the real aws-sdk-go-v2 clients
// drive it, and it keeps AWS's semantics where herald depends on them
// (idempotent creates vs Duplicate* errors, 32-character names, tag limits,
// InvalidTarget, target health going initial -> healthy, /net/ ARNs,
// DependencyViolation and ResourceInUse on deletes).
//
// Tests inject faults (throttling, 503, a hook after call k) and read the
// log of calls, which the model test checks against AWS's published API
// models.
package awsfake

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// API versions that tell the two protocols apart on one endpoint.
const (
	VersionELBv2 = "2015-12-01"
	VersionEC2   = "2016-11-15"
)

// Call is one request the fake answered.
type Call struct {
	// Service is "elbv2" or "ec2".
	Service string
	Action  string
	Params  url.Values
	// ErrorCode is the AWS error returned, "" on success.
	ErrorCode string
	// Mutating is true for every action that is not Describe*.
	Mutating bool
	// Time is when the fake received the call.
	Time time.Time
}

// Error is an AWS error response.
type Error struct {
	Code    string
	Message string
	// Status is the HTTP status; 400 when zero.
	Status int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Throttled is the error each family returns when over its rate.
func Throttled(service string) *Error {
	if service == "ec2" {
		return &Error{Code: "RequestLimitExceeded", Message: "Request limit exceeded.", Status: 503}
	}
	return &Error{Code: "Throttling", Message: "Rate exceeded", Status: 400}
}

// Unavailable is a 503 ServiceUnavailable.
func Unavailable() *Error {
	return &Error{Code: "ServiceUnavailable", Message: "Service is unavailable", Status: 503}
}

// Fault decides, before a call is handled, whether it fails instead;
// n counts calls from 1.
type Fault func(c Call, n int) *Error

// Server is the fake AWS.
type Server struct {
	// Region and Account appear in ARNs and DNS names.
	Region, Account string
	// PageSize bounds Describe* pages, so paging is exercised.
	PageSize int

	mu        sync.Mutex
	calls     []Call
	fault     Fault
	afterCall func(c Call, n int)
	seq       int
	state
	http *httptest.Server
}

// New returns a fake with a VPC, one subnet per zone tagged for public and
// internal load balancers, and a node security group.
func New() *Server {
	s := &Server{Region: "eu-west-1", Account: "111122223333", PageSize: 400}
	s.state = newState()
	return s
}

// Start serves the fake on a loopback port until Close.
func (s *Server) Start() string {
	s.http = httptest.NewServer(s)
	return s.http.URL
}

// URL is the endpoint of a started fake.
func (s *Server) URL() string { return s.http.URL }

// Close stops serving.
func (s *Server) Close() {
	if s.http != nil {
		s.http.Close()
	}
}

// SetFault installs f (nil removes it).
func (s *Server) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// SetAfterCall installs a hook that runs after call n changed the state and
// before its response is written: the place a crash "between two calls"
// happens. It runs without the fake's lock held.
func (s *Server) SetAfterCall(f func(c Call, n int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.afterCall = f
}

// Calls returns a copy of the log.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// ResetCalls empties the log.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// Counts returns successful and failed calls by "service:Action".
func (s *Server) Counts() map[string]int {
	out := map[string]int{}
	for _, c := range s.Calls() {
		out[c.Service+":"+c.Action]++
	}
	return out
}

// MutatingCalls counts calls that change state (or tried to).
func (s *Server) MutatingCalls() int {
	n := 0
	for _, c := range s.Calls() {
		if c.Mutating {
			n++
		}
	}
	return n
}

// ServeHTTP answers one Query-protocol request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	params := r.PostForm
	action, version := params.Get("Action"), params.Get("Version")
	var service string
	switch version {
	case VersionELBv2:
		service = "elbv2"
	case VersionEC2:
		service = "ec2"
	default:
		http.Error(w, "unknown API version "+version, http.StatusBadRequest)
		return
	}
	call := Call{Service: service, Action: action, Params: params, Mutating: !strings.HasPrefix(action, "Describe"), Time: time.Now()}

	s.mu.Lock()
	s.seq++
	n := s.seq
	var body *node
	apiErr := (*Error)(nil)
	if s.fault != nil {
		apiErr = s.fault(call, n)
	}
	if apiErr == nil {
		body, apiErr = s.handle(service, action, params)
	}
	if apiErr != nil {
		call.ErrorCode = apiErr.Code
	}
	s.calls = append(s.calls, call)
	after := s.afterCall
	s.mu.Unlock()

	if after != nil {
		after(call, n)
	}
	if apiErr != nil {
		writeError(w, service, apiErr)
		return
	}
	writeResult(w, service, action, body)
}

func (s *Server) handle(service, action string, p url.Values) (*node, *Error) {
	var handlers map[string]func(*Server, url.Values) (*node, *Error)
	if service == "elbv2" {
		handlers = elbv2Handlers
	} else {
		handlers = ec2Handlers
	}
	h, ok := handlers[action]
	if !ok {
		return nil, &Error{Code: "InvalidAction", Message: "the fake does not implement " + action}
	}
	return h(s, p)
}

// node is a tiny XML tree; the responses are small and varied, and a tree
// keeps each handler's output next to its logic.
type node struct {
	name     string
	text     string
	children []*node
}

func el(name string, children ...*node) *node { return &node{name: name, children: children} }

func leaf(name, text string) *node { return &node{name: name, text: text} }

// list is an ELBv2 (<member>) or EC2 (<item>) list.
func list(name, item string, items []*node) *node {
	n := el(name)
	for _, it := range items {
		it.name = item
		n.children = append(n.children, it)
	}
	return n
}

func (n *node) write(b *strings.Builder) {
	b.WriteString("<" + n.name + ">")
	if n.text != "" {
		_ = xml.EscapeText(stringWriter{b}, []byte(n.text))
	}
	for _, c := range n.children {
		if c != nil {
			c.write(b)
		}
	}
	b.WriteString("</" + n.name + ">")
}

type stringWriter struct{ b *strings.Builder }

func (w stringWriter) Write(p []byte) (int, error) { return w.b.Write(p) }

func writeResult(w http.ResponseWriter, service, action string, body *node) {
	var b strings.Builder
	b.WriteString(xml.Header)
	if service == "elbv2" {
		b.WriteString(`<` + action + `Response xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">`)
		if body == nil {
			body = el("")
		}
		body.name = action + "Result"
		body.write(&b)
		b.WriteString(`<ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></` + action + `Response>`)
	} else {
		b.WriteString(`<` + action + `Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>fake</requestId>`)
		if body != nil {
			for _, c := range body.children {
				c.write(&b)
			}
		}
		b.WriteString(`</` + action + `Response>`)
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write([]byte(b.String()))
}

func writeError(w http.ResponseWriter, service string, e *Error) {
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	var b strings.Builder
	b.WriteString(xml.Header)
	if service == "elbv2" {
		b.WriteString(`<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">`)
		el("Error", leaf("Type", "Sender"), leaf("Code", e.Code), leaf("Message", e.Message)).write(&b)
		b.WriteString(`<RequestId>fake</RequestId></ErrorResponse>`)
	} else {
		b.WriteString(`<Response>`)
		el("Errors", el("Error", leaf("Code", e.Code), leaf("Message", e.Message))).write(&b)
		b.WriteString(`<RequestID>fake</RequestID></Response>`)
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// members returns prefix.member.1, prefix.member.2, ... (ELBv2 lists) or,
// with ec2 set, prefix.1, prefix.2, ... in order.
func members(p url.Values, prefix string, ec2 bool) []string {
	var out []string
	for i := 1; ; i++ {
		key := prefix + ".member." + strconv.Itoa(i)
		if ec2 {
			key = prefix + "." + strconv.Itoa(i)
		}
		v, ok := p[key]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

// structs returns the indexes of prefix.member.N.* (or prefix.N.*) entries.
func structs(p url.Values, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		pre := prefix + "." + strconv.Itoa(i) + "."
		found := false
		for k := range p {
			if strings.HasPrefix(k, pre) {
				found = true
				break
			}
		}
		if !found {
			return out
		}
		out = append(out, pre)
	}
}

// tagsOf reads Tags.member.N.Key/Value (ELBv2) or Tag.N.Key/Value (EC2).
func tagsOf(p url.Values, prefix string) (map[string]string, *Error) {
	tags := map[string]string{}
	for _, pre := range structs(p, prefix) {
		k := p.Get(pre + "Key")
		if _, dup := tags[k]; dup {
			return nil, errorf("DuplicateTagKeys", "Tag key '%s' is duplicated", k)
		}
		tags[k] = p.Get(pre + "Value")
	}
	return tags, nil
}

// requestTags reads ELBv2 Tags.member.N and applies AWS's limits.
func requestTags(p url.Values) (map[string]string, *Error) {
	tags, err := tagsOf(p, "Tags.member")
	if err != nil {
		return nil, err
	}
	if err := checkTags(tags); err != nil {
		return nil, err
	}
	return tags, nil
}

// checkTags applies AWS's tag limits.
func checkTags(tags map[string]string) *Error {
	if len(tags) > 50 {
		return errorf("TooManyTags", "You have reached the limit on the number of tags for this resource (50)")
	}
	for k, v := range tags {
		if k == "" || len(k) > 128 || len(v) > 256 || strings.HasPrefix(strings.ToLower(k), "aws:") {
			return errorf("ValidationError", "Tag '%s' is invalid", k)
		}
	}
	return nil
}

func tagList(name, item string, tags map[string]string, keyName, valueName string) *node {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var items []*node
	for _, k := range keys {
		items = append(items, el("", leaf(keyName, k), leaf(valueName, tags[k])))
	}
	return list(name, item, items)
}

// page cuts a sorted list of IDs at marker, returning the page and the
// next marker ("" at the end).
func page(ids []string, marker string, size int) ([]string, string) {
	start := 0
	if marker != "" {
		start, _ = strconv.Atoi(marker)
	}
	if start > len(ids) {
		start = len(ids)
	}
	end := min(start+size, len(ids))
	next := ""
	if end < len(ids) {
		next = strconv.Itoa(end)
	}
	return ids[start:end], next
}

// Actions lists the actions the fake implements, by service.
func Actions() map[string][]string {
	return map[string][]string{"elbv2": sortedKeys(elbv2Handlers), "ec2": sortedKeys(ec2Handlers)}
}
