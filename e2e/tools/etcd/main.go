// Command etcd is the etcd server at the version Kubernetes pins. etcd's own
// module has replace directives, so `go install` cannot build it directly.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
