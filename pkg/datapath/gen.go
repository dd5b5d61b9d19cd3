package datapath

// The BPF objects are generated from bpf/*.c with Debian's clang and committed
// (CI regenerates them and fails on any diff). Regenerate with
//
//	go generate ./pkg/datapath/
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type trace_event -go-package datapath lxc ../../bpf/lxc.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type trace_event -go-package datapath uplink ../../bpf/uplink.c
