// Command etcd is a thin wrapper around etcd's own main, built from the module
// proxy so tests need no prebuilt download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
