package main

import (
	"fmt"
	"os"
	"sync"
)

// demoT lets the demo build the same lab the tests build (labkit and
// netlab report failures the way tests do): a failure panics with fatal,
// which run recovers from after running the cleanups, last first.
type demoT struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

type fatal string

func newDemoT() *demoT { return &demoT{} }

func (d *demoT) Helper() {}

func (d *demoT) Cleanup(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cleanups = append(d.cleanups, f)
}

func (d *demoT) Fatal(args ...any) {
	d.fail()
	panic(fatal(fmt.Sprint(args...)))
}

func (d *demoT) Fatalf(format string, args ...any) {
	d.fail()
	panic(fatal(fmt.Sprintf(format, args...)))
}

func (d *demoT) Errorf(format string, args ...any) {
	d.fail()
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}

// Logf is quiet unless something failed: the demo prints what a user
// sees, and the lab's logs (process log tails) matter only then.
func (d *demoT) Logf(format string, args ...any) {
	if d.Failed() {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}

func (d *demoT) Failed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
}

func (d *demoT) fail() {
	d.mu.Lock()
	d.failed = true
	d.mu.Unlock()
}

// cleanup runs the cleanups, last first.
func (d *demoT) cleanup() {
	d.mu.Lock()
	cleanups := d.cleanups
	d.cleanups = nil
	d.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
}
