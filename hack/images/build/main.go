// Command build writes the cni-genie image (and the real-node tests' pause
// and busybox images) as docker-save tarballs: `make image`. See package
// image.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cni-genie/cni-genie/pkg/image"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

func main() {
	out := flag.String("out", "_output/image", "output directory")
	busybox := flag.String("busybox", "_output/bin/busybox", "static busybox for the test image (empty: no test image)")
	flag.Parse()
	root, err := testenv.FindModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := os.Stat(*busybox); err != nil {
		*busybox = ""
	}
	t, err := image.Build(root, *out, *busybox)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(t.Genie)
	if t.Test != "" {
		fmt.Println(t.Test)
	}
}
